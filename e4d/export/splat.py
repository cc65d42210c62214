"""Per-frame ``.splat`` files (antimatter15/splat layout), which ComfyUI's own 3D viewer (frontend >= 1.36) and
most web splat viewers open.

Each file is one time slice of the 4D Gaussians (paper eq. 4-6, :func:`e4d.slicing.slice_at`), 32 bytes per
Gaussian, little-endian, no header::

    f32 x, y, z          position (the conditional mean at t)
    f32 sx, sy, sz       linear standard deviations along the Gaussian's axes
    u8  r, g, b, a       colour (degree 0: 0.5 + C0 * dc, with the temporal basis applied at t) and
                         opacity = sigmoid(logit) x temporal marginal, each x255
    u8  qw, qx, qy, qz   rotation quaternion, (q / |q|) * 128 + 128

The conditional 3D covariance is factorised as ``R diag(s^2) R^T`` (eigen-decomposition, det R = +1). Gaussians
culled at t (marginal <= :data:`~e4d.slicing.CULL_THRESHOLD`) are left out; the rest are written largest (size x opacity) first, as the
reference viewer expects.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..atomic import atomic_path
from ..gaussians4d import Gaussians4D
from ..progress import ProgressCallback, report
from ..slicing import CULL_THRESHOLD
from .common import check_gaussians, dc_rgb, export_slice
from .factor3d import covariance_to_scale_rotation

ROW_BYTES = 32
SPLAT_DTYPE = np.dtype([("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("quat", "u1", 4)])
assert SPLAT_DTYPE.itemsize == ROW_BYTES

PathLike = Union[str, os.PathLike]


def splat_bytes(g: Gaussians4D, time: float, cull_threshold: float = CULL_THRESHOLD) -> bytes:
    """The ``.splat`` bytes of 4D Gaussians ``g`` sliced at ``time`` (see the module docstring)."""
    check_gaussians(g, "splat export")
    s = export_slice(g, time, cull_threshold)
    means, covs, opacity = s.means[0], s.covs[0], s.opacities[0]
    n = means.shape[0]
    rows = np.zeros(n, dtype=SPLAT_DTYPE)
    if n == 0:
        return rows.tobytes()
    scales, quats = covariance_to_scale_rotation(covs)
    order = torch.argsort(-(scales.prod(-1) * opacity))  # biggest visible mass first
    rows["pos"] = means[order].numpy()
    rows["scale"] = scales[order].numpy()
    rgba = torch.cat([dc_rgb(s.sh[0, :, 0, :]), opacity[:, None]], 1)[order]
    rows["rgba"] = (rgba * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    rows["quat"] = (quats[order] * 128.0 + 128.0).round().clamp(0, 255).to(torch.uint8).numpy()
    return rows.tobytes()


def save_splat(g: Gaussians4D, time: float, path: PathLike, cull_threshold: float = CULL_THRESHOLD) -> Path:
    """Write the slice at ``time`` to ``path`` atomically."""
    data = splat_bytes(g, time, cull_threshold)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def save_splat_sequence(g: Gaussians4D, times: Sequence[float], folder: PathLike, prefix: str = "frame",
                        cull_threshold: float = CULL_THRESHOLD, callback: Optional[ProgressCallback] = None) -> list[Path]:
    """One ``.splat`` per time: ``folder/{prefix}_{i:04d}.splat``; each file is written atomically.

    Args:
        g: :class:`e4d.gaussians4d.Gaussians4D`.
        times: normalized times (the clip spans [0, 1]).
        callback: progress ``(i, len(times), {"path": ...})`` after each file; raising from it stops the export.
    """
    times = [float(t) for t in times]
    if not times:
        raise ValueError("save_splat_sequence needs at least one time, e.g. torch.linspace(0, 1, 16).tolist()")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, t in enumerate(times):
        out.append(save_splat(g, t, folder / f"{prefix}_{i:04d}.splat", cull_threshold))
        report(callback, i + 1, len(times), path=str(out[-1]))
    return out


def read_splat(path_or_bytes: Union[PathLike, bytes]) -> dict[str, np.ndarray]:
    """Decode a ``.splat`` file: ``pos [N, 3]``, ``scale [N, 3]``, ``rgba [N, 4]`` (uint8), ``quat [N, 4]`` (float,
    decoded from uint8: (u - 128) / 128)."""
    data = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    if len(data) % ROW_BYTES:
        raise ValueError(f".splat size must be a multiple of {ROW_BYTES} bytes, got {len(data)}")
    rows = np.frombuffer(data, dtype=SPLAT_DTYPE)
    return {"pos": rows["pos"].copy(), "scale": rows["scale"].copy(), "rgba": rows["rgba"].copy(),
            "quat": (rows["quat"].astype(np.float64) - 128.0) / 128.0}
