"""E4D_SliceToSplat: 4D Gaussians sliced at chosen times into core ComfyUI's SPLAT batch (one item per time), so
core's splat nodes (save as .ply/.ksplat/.spz, render, transform, merge, to mesh) work on each moment.

Registered only where the running ComfyUI has the core ``SPLAT`` type (``comfy_api.latest.io.Splat``; ComfyUI
0.3.75 has none, 0.30 has it). Core conventions (``comfy_api.latest._util.geometry_types.SPLAT``): world-space
positions ``[B, N, 3]``, linear per-axis scales ``[B, N, 3]``, unit quaternions w, x, y, z ``[B, N, 4]``,
opacities in [0, 1] ``[B, N, 1]``, SH coefficients ``[B, N, K, 3]`` (DC first), zero-padded to a common N with the
real lengths in ``counts``.
"""
from __future__ import annotations

from typing import Optional

import torch
from comfy_api.latest import io
from torch import Tensor

from . import _tensors as T
from .types import E4D_GAUSSIANS4D

CATEGORY = "Efficient4D/export"
UP_AXES = ("y (ComfyUI)", "z (Efficient4D)")
"""y: rotate our +Z-up world into ComfyUI's +Y-up 3D world (core viewers, Create Camera Info); z: keep our axes."""


def parse_times(text: str) -> list[float]:
    """``"0, 0.5, 1"`` -> normalized times; each must lie in [0, 1] and at least one is needed."""
    times = T.parse_floats(text, "times")
    if not times:
        raise ValueError(f"times must name at least one normalized time in [0, 1], e.g. '0, 0.5, 1', got {text!r}")
    bad = [t for t in times if not 0.0 <= t <= 1.0]
    if bad:
        raise ValueError(f"times must lie in [0, 1] (0 = first frame, 1 = last), got {bad}")
    return times


def splat_batch(g, times: list[float], y_up: bool = True):
    """Core ``Types.SPLAT`` with one item per time of ``g`` (a ``Gaussians4D``), culled Gaussians dropped."""
    from comfy_api.latest import Types
    from e4d.export.common import check_gaussians, export_slice
    from e4d.export.factor3d import covariance_to_scale_rotation

    check_gaussians(g, "SPLAT output")
    items = []
    for t in times:
        s = export_slice(g, t, rotation=T.ZUP_TO_YUP if y_up else None)  # batch 1, float64, CPU
        means, covs, sh = s.means[0], s.covs[0], s.sh[0]
        scales, quats = covariance_to_scale_rotation(covs)
        items.append((means, scales, quats, s.opacities[0].clamp(0.0, 1.0)[:, None], sh))
    n = max(it[0].shape[0] for it in items)
    counts = torch.tensor([it[0].shape[0] for it in items], dtype=torch.int64)

    def stack(i: int) -> Tensor:
        return torch.stack([torch.nn.functional.pad(it[i], (0, 0) * (it[i].ndim - 1) + (0, n - it[i].shape[0]))
                            for it in items]).float()

    uniform = bool((counts == n).all())
    return Types.SPLAT(stack(0), stack(1), stack(2), stack(3), stack(4), None if uniform else counts)


class SliceToSplat(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="E4D_SliceToSplat",
            display_name="4D Gaussians to Splat (per time)",
            category=CATEGORY,
            description="Slice the 4D Gaussians at the chosen times (paper eq. 4-6; Gaussians whose temporal weight "
                        "is negligible are dropped) into core ComfyUI's SPLAT batch, one item per time, so core "
                        "nodes save (Create 3D File from Splat), render, transform or mesh each moment.",
            inputs=[
                E4D_GAUSSIANS4D.Input("gaussians", tooltip="Fitted (or loaded) 4D Gaussians."),
                io.String.Input("times", default="0, 0.5, 1",
                                tooltip="Normalized times to slice at, comma separated (0 = first frame, 1 = last)."),
                io.Combo.Input("up_axis", options=list(UP_AXES), default=UP_AXES[0],
                               tooltip="y: turn our +Z-up world into ComfyUI's +Y-up 3D world (core viewers and "
                                       "cameras show the object upright); z: keep our axes (as the PLY export)."),
            ],
            outputs=[io.Splat.Output(display_name="splat", tooltip="One static splat per time (core SPLAT).")],
        )

    @classmethod
    def execute(cls, gaussians, times: str = "0, 0.5, 1", up_axis: Optional[str] = None) -> io.NodeOutput:
        up = UP_AXES[0] if up_axis is None else up_axis
        if up not in UP_AXES:
            raise ValueError(f"up_axis must be one of {UP_AXES}, got {up!r}")
        return io.NodeOutput(splat_batch(gaussians, parse_times(times), y_up=up == UP_AXES[0]))


NODES = [SliceToSplat] if hasattr(io, "Splat") else []
"""Empty where the running ComfyUI has no core SPLAT type (0.3.75)."""
