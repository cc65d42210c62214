"""E4D_Fit4DGS: view matrix (+ confidence, + guidance) → native 4D Gaussians (paper §4.2, eq. 11-14)."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

import torch
from comfy_api.latest import io

from . import _common as C
from . import _devices as D
from . import _models as M
from ._widgets import field_input
from .types import E4D_CONFIDENCE, E4D_GAUSSIANS4D, E4D_GUIDANCE, E4D_VIEW_MATRIX

CATEGORY = "Efficient4D/fit"
DENSIFY_CHOICES = ("preset", "on", "off")


def parse_overrides(text: str) -> dict[str, Any]:
    """``"lr_xyz = 0.005\\nw_alpha = 1"`` → typed FitConfig field values (errors name the line and the field)."""
    from e4d.fit import FitConfig

    fields = {f.name: f for f in dataclasses.fields(FitConfig)}
    hints = typing.get_type_hints(FitConfig)
    out: dict[str, Any] = {}
    for n, raw in enumerate(str(text or "").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise ValueError(f"overrides line {n}: expected 'field = value', got {raw!r}")
        key, val = (s.strip() for s in line.split("=", 1))
        if key not in fields:
            raise ValueError(f"overrides line {n}: {key!r} is not a FitConfig field; known: {', '.join(sorted(fields))}")
        hint = hints[key]
        try:
            if val.lower() in ("none", "null"):
                out[key] = None
            elif hint is bool:
                if val.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(val)
                out[key] = val.lower() in ("true", "1", "yes")
            elif hint is int:
                out[key] = int(val)
            elif hint is str:
                out[key] = val.strip("'\"")
            else:  # float and Optional[float]
                out[key] = float(val)
        except ValueError as e:
            raise ValueError(f"overrides line {n}: cannot read {val!r} as the {hint} of {key}") from e
    return out


def _fit_bytes(view_matrix, config, guidance=None) -> int:
    """Memory the fit needs on the device, for ComfyUI to make room: the view matrix with its alpha and confidence,
    the Gaussians with gradients and Adam moments (at most ``max_points`` of about 64 floats each, four copies),
    a generous allowance for one batch of renders and their autograd buffers, and the guidance's working memory
    for its step (``working_bytes``; the SDS step's encoder activations are a few GB)."""
    images = view_matrix.images.numel() * 4
    batch = config.times_per_batch * config.views_per_batch * view_matrix.H * view_matrix.W * 4
    points = max(config.num_points, config.max_points if config.densify else 0)
    total = 3 * images + points * 64 * 4 * 4 + 64 * batch
    working = getattr(guidance, "working_bytes", None)
    if callable(working) and config.lambda_sds > 0 and getattr(guidance, "weight", 0) > 0:
        total += int(working(config.times_per_batch * int(getattr(guidance, "views_per_time", 1))))
    return total


class Fit4DGS(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from e4d.fit import PRESETS, FitConfig as F
        from e4d.render import BACKENDS

        return io.Schema(
            node_id="E4D_Fit4DGS",
            display_name="Fit 4D Gaussians (Efficient4D)",
            category=CATEGORY,
            description="Fit native 4D Gaussians to a view matrix: random init of 50k Gaussians, Adam, 500 steps, "
                        "confidence-weighted L1 + SSIM loss (paper) or the released code's MSE (official-release), "
                        "plus optional SDS guidance. Seconds on a GPU; minutes on CPU (use fewer points/steps).",
            inputs=[
                E4D_VIEW_MATRIX.Input("view_matrix", tooltip="T times x V views of the object (SyncDreamer-T, "
                                                             "interpolated, assembled or loaded)."),
                io.Combo.Input("preset", options=list(PRESETS), default=PRESETS[0],
                               tooltip="recommended: the paper's loss + an alpha (coverage) term + densification "
                                       "(best held-out quality, docs/benchmarks.md); paper: L1 (8000) + SSIM "
                                       "(2000) weighted by confidence, exactly eq. 11-14; official-release: MSE on "
                                       "colour and alpha as in fudan-zvg/4d-gaussian-splatting."),
                field_input(F, "iterations", min=1, max=100_000),
                field_input(F, "num_points", min=16, max=2_000_000, step=1000),
                field_input(F, "times_per_batch", min=1, max=256),
                field_input(F, "views_per_batch", min=1, max=256),
                field_input(F, "sh_degree", min=0, max=3),
                io.Combo.Input("densify", options=list(DENSIFY_CHOICES), default="preset",
                               tooltip="Split/prune Gaussians during the fit: 'preset' keeps the preset's choice "
                                       "(recommended: on; paper, official-release: off)."),
                field_input(F, "use_input_view"),
                field_input(F, "lambda_sds", min=0.0, max=100.0, step=0.01),
                field_input(F, "seed", min=0, max=2**31 - 1, control_after_generate=True),
                field_input(F, "backend", options=BACKENDS),
                io.String.Input("overrides", default="", multiline=True,
                                tooltip="Any other FitConfig field, one 'field = value' per line (e.g. "
                                        "'lr_xyz = 0.005'); see e4d/fit/config.py."),
                E4D_CONFIDENCE.Input("confidence", optional=True,
                                     tooltip="Per-pixel confidence maps of the same view matrix (Confidence Maps node)."),
                E4D_GUIDANCE.Input("guidance", optional=True,
                                   tooltip="Optional SDS guidance (e.g. the Zero123 guidance loader)."),
            ],
            outputs=[E4D_GAUSSIANS4D.Output(display_name="gaussians", tooltip="The fitted 4D Gaussians.")],
        )

    @classmethod
    def execute(cls, view_matrix, preset: str = "recommended", iterations: int = 500, num_points: int = 50_000,
                times_per_batch: int = 4, views_per_batch: int = 8, sh_degree: int = 0, densify: str = "preset",
                use_input_view: bool = True, lambda_sds: float = 1.0, seed: int = 0, backend: str = "auto",
                overrides: str = "", confidence=None, guidance=None) -> io.NodeOutput:
        from e4d.fit import fit, preset as make_preset

        widgets = dict(iterations=int(iterations), num_points=int(num_points), times_per_batch=int(times_per_batch),
                       views_per_batch=int(views_per_batch), sh_degree=int(sh_degree),
                       use_input_view=bool(use_input_view), lambda_sds=float(lambda_sds), seed=int(seed),
                       backend=backend)
        if isinstance(densify, bool):  # workflows saved before 'densify' became a combo
            densify = "on" if densify else "off"
        if densify != "preset":
            widgets["densify"] = densify == "on"
        config = make_preset(preset, **{**widgets, **parse_overrides(overrides)})
        M.reserve_memory(_fit_bytes(view_matrix, config, guidance))
        device = D.get_torch_device()
        # ComfyUI executes nodes under torch.inference_mode(); the fit needs autograd and normal tensors.
        with torch.inference_mode(False), torch.enable_grad():
            vm = C.normal_tensors(view_matrix.to(device))
            conf = C.normal_tensors(confidence.to(device)) if confidence is not None else None
            try:
                result = fit(vm, conf, config, guidance=guidance, callback=C.progress_callback(config.iterations))
            finally:  # drop the guidance's per-fit caches; its weights stay with ComfyUI's memory manager
                release = getattr(guidance, "release", None)
                if callable(release):
                    release()
        g = result.gaussians.to(D.intermediate_device())
        from e4d.render import describe_backend

        C.log.info("Efficient4D: fitted %d Gaussians in %.1f s, renderer %s", g.num, result.seconds,
                   describe_backend(config.backend, device))
        return io.NodeOutput(g)


NODES = [Fit4DGS]
