"""What every exporter shares: one input check and one time slice.

Exporters take a :class:`~e4d.gaussians4d.Gaussians4D`, validate it with :func:`check_gaussians` and, when they
write 3D slices, take them from :func:`export_slice` (float64 on the CPU: the conditional covariance subtracts two
close numbers for thin, fast-moving Gaussians), optionally turned into another world's axes (e.g. a +Y-up viewer's).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import Tensor

from ..gaussians4d import Gaussians4D
from ..sh import SH_C0, rotate_sh
from ..slicing import CULL_THRESHOLD, Gaussians3D, slice_compact


def check_gaussians(g: Gaussians4D, exporter: str) -> int:
    """Validate ``g`` for ``exporter`` (its name, for messages); returns N.

    Raises:
        TypeError: not a Gaussians4D. ValueError: wrong shapes, no Gaussians, or NaN/inf values.
    """
    if not isinstance(g, Gaussians4D):
        raise TypeError(f"{exporter} needs a Gaussians4D (e4d.gaussians4d), got {type(g).__name__}; pass the fit's "
                        "result .gaussians or a model loaded with e4d.export.load_native")
    g.validate()
    if g.num == 0:
        raise ValueError(f"{exporter}: there are no Gaussians to export (N=0); check the fit's pruning settings")
    return g.num


def export_slice(g: Gaussians4D, time: float, cull_threshold: float = CULL_THRESHOLD,
                 rotation: Optional[Tensor] = None) -> Gaussians3D:
    """The slice of ``g`` at ``time`` (paper eq. 4-6) with culled Gaussians dropped: batch 1, float64, CPU.

    ``rotation``: a ``[3, 3]`` proper rotation applied to the slice's world (:func:`rotate_slice`); None keeps our
    axes (+Z up)."""
    with torch.no_grad():
        s, _ = slice_compact(g.detach().to("cpu", torch.float64), float(time), cull_threshold)
        return s if rotation is None else rotate_slice(s, rotation)


def rotate_slice(s: Gaussians3D, rot: Tensor) -> Gaussians3D:
    """``s`` in a rotated world: means ``R m``, covariances ``R C R^T`` and the view-dependent SH re-expressed
    (:func:`e4d.sh.rotate_sh`), so every Gaussian looks the same from the rotated camera; opacities unchanged."""
    r = rot.to(s.means.dtype)
    if tuple(r.shape) != (3, 3) or not torch.allclose(r @ r.T, torch.eye(3, dtype=r.dtype), atol=1e-6) \
            or float(torch.linalg.det(r)) < 0:
        raise ValueError(f"rotation must be a proper 3x3 rotation (R R^T = I, det +1), got {r.tolist()}")
    b, n, k = s.sh.shape[:3]
    sh = rotate_sh(s.sh.reshape(b * n, k, 3), s.sh_degree, r).reshape(b, n, k, 3)
    return dataclasses.replace(s, means=s.means @ r.T, covs=r @ s.covs @ r.T, sh=sh)


def dc_rgb(dc: Tensor) -> Tensor:
    """Degree-0 colour in [0, 1] of DC coefficients ``[..., 3]`` (3DGS convention ``0.5 + SH_C0 * dc``)."""
    return (0.5 + SH_C0 * dc).clamp(0.0, 1.0)
