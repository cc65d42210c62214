"""Rendering 4D Gaussians: slice at B times (eq. (4)-(6)), rasterize each slice from C cameras.

``render`` slices once per time and renders all B x C images in one rasterizer call. Backends:
``"gsplat"`` (CUDA extension, fast), ``"triton"`` (Triton kernels on a CUDA or ROCm GPU, no compiler needed),
``"reference"`` (pure torch, any device, bounded memory, slow; the check of the others) and ``"auto"`` (gsplat if
its extension is already built, else Triton on a GPU, else the reference: :mod:`e4d.render.backends`).
Images are RGB composited over ``background`` (white by default, like the view matrix) plus alpha.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Union

import torch
from torch import Tensor

from ..cameras import Cameras
from ..gaussians4d import Gaussians4D
from ..slicing import CULL_THRESHOLD, Gaussians3D, TimesLike, as_times, slice_at
from .backends import BACKENDS, describe_backend, fit_time_estimate, log_backend, resolve_backend
from .projection import RasterSettings
from .reference import render_reference

BackgroundLike = Union[float, Tensor]


@dataclass
class RenderOutput:
    """Rendered images.

    Attributes:
        rgb: ``[B, C, H, W, 3]`` colour over the background (not clamped to 1, as in gsplat).
        alpha: ``[B, C, H, W, 1]`` accumulated opacity.
        meta: gsplat's intermediate dict when requested (``return_meta=True``, gsplat backend), else None.
    """

    rgb: Tensor
    alpha: Tensor
    meta: Optional[Dict] = None


def make_backgrounds(background: BackgroundLike, B: int, C: int, like: Tensor) -> Tensor:
    """Background colours ``[B, C, 3]`` from a float (grey level), ``[3]``, ``[C, 3]`` or ``[B, C, 3]``."""
    if isinstance(background, (int, float)):  # fill on the device: no host-to-device copy in fitting loops
        return torch.full((B, C, 3), float(background), dtype=like.dtype, device=like.device)
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if bg.ndim == 0:
        bg = bg.expand(3)
    try:
        return bg.expand(B, C, 3).contiguous()
    except RuntimeError as e:
        raise ValueError(f"background must be a float, [3], [C, 3] or [B, C, 3] with B={B}, C={C}; got "
                         f"shape {tuple(bg.shape)}") from e


def _check_cameras(w2c: Tensor, K: Tensor, B: int, width: int, height: int) -> None:
    if w2c.ndim != 4 or w2c.shape[0] != B or w2c.shape[2:] != (4, 4):
        raise ValueError(f"w2c must be [B, C, 4, 4] with B={B} (one row of C cameras per time), got "
                         f"{tuple(w2c.shape)}; for one camera per time use w2c[:, None]")
    if tuple(K.shape) != (B, w2c.shape[1], 3, 3):
        raise ValueError(f"K must be [B, C, 3, 3] = {[B, w2c.shape[1], 3, 3]}, got {list(K.shape)}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")


def render_sliced(g3: Gaussians3D, w2c: Tensor, K: Tensor, width: int, height: int,
                  background: BackgroundLike = 1.0, backend: str = "auto",
                  settings: RasterSettings = RasterSettings(), packed: bool = False,
                  return_meta: bool = False) -> RenderOutput:
    """Render B already-sliced 3D Gaussian sets, each from its C cameras ``w2c [B, C, 4, 4]``, ``K [B, C, 3, 3]``."""
    B = g3.batch
    _check_cameras(w2c, K, B, width, height)
    w2c = w2c.to(device=g3.means.device, dtype=g3.means.dtype)
    K = K.to(device=g3.means.device, dtype=g3.means.dtype)
    bgs = make_backgrounds(background, B, w2c.shape[1], g3.means)
    which = resolve_backend(backend, g3.means.device)
    log_backend(backend, g3.means.device)
    if which == "gsplat":
        from .gsplat_backend import render_gsplat
        rgb, alpha, meta = render_gsplat(g3.means, g3.covs, g3.opacities, g3.sh, g3.sh_degree, w2c, K, width,
                                         height, bgs, settings, packed=packed, return_meta=return_meta)
        return RenderOutput(rgb, alpha, meta)
    if which == "triton":
        from .triton_backend import render_triton
        rgb, alpha = render_triton(g3.means, g3.covs, g3.opacities, g3.sh, g3.sh_degree, w2c, K, width, height,
                                   bgs, settings)
        return RenderOutput(rgb, alpha, None)
    rgb, alpha = render_reference(g3.means, g3.covs, g3.opacities, g3.sh, g3.sh_degree, w2c, K, width, height,
                                  bgs, settings)
    return RenderOutput(rgb, alpha, None)


def render(g: Gaussians4D, times: TimesLike, w2c: Tensor, K: Tensor, width: int, height: int,
           background: BackgroundLike = 1.0, backend: str = "auto", cull_threshold: float = CULL_THRESHOLD,
           settings: RasterSettings = RasterSettings(), packed: bool = False,
           return_meta: bool = False) -> RenderOutput:
    """Render 4D Gaussians at B times, each from C cameras, in one rasterizer call; differentiable.

    Args:
        g: the 4D Gaussians.
        times: ``[B]`` normalized times.
        w2c: ``[B, C, 4, 4]`` OpenCV world-to-camera matrices (row b holds the cameras for times[b]).
        K: ``[B, C, 3, 3]`` pinhole intrinsics for a ``width x height`` image.
        background: float grey level, ``[3]``, ``[C, 3]`` or ``[B, C, 3]`` colour (default white).
        backend: "auto" | "gsplat" | "triton" | "reference" (see module docstring).
        cull_threshold: temporal-marginal culling threshold of the slicing (paper: 0.05).
        settings: near/far planes and the 2D low-pass (gsplat defaults).
        packed: gsplat's packed layout (memory/speed trade-off; ignored by the other backends). gsplat 1.5.3 renders
            wrong images in packed mode when there is a leading batch of times (B > 1, measured on an H100), so it
            is honoured only for B == 1; unpacked is the default and was faster in bench/render.py anyway.
        return_meta: keep gsplat's meta dict (e.g. to ``retain_grad`` ``means2d``; gsplat backend only, else None).
    Returns:
        :class:`RenderOutput` with ``rgb [B, C, H, W, 3]`` and ``alpha [B, C, H, W, 1]``.

    Shapes are checked here; NaN checks are left to :meth:`Gaussians4D.validate` (they would sync the GPU on
    every call of a fitting loop).
    """
    if not isinstance(g, Gaussians4D):
        raise TypeError(f"render needs a Gaussians4D, got {type(g).__name__}")
    t = as_times(times, g.means)
    _check_cameras(w2c, K, t.shape[0], width, height)
    g3 = slice_at(g, t, cull_threshold)
    return render_sliced(g3, w2c, K, width, height, background, backend, settings, packed, return_meta)


def render_pairs(g: Gaussians4D, times: TimesLike, w2c: Tensor, K: Tensor, width: int, height: int,
                 background: BackgroundLike = 1.0, backend: str = "auto", **kwargs) -> RenderOutput:
    """Render P arbitrary (time, camera) pairs (``times [P]``, ``w2c [P, 4, 4]``, ``K [P, 3, 3]``) in one call.

    Returns ``rgb [P, H, W, 3]``, ``alpha [P, H, W, 1]`` (each pair is its own slice with one camera).
    """
    if w2c.ndim != 3 or K.ndim != 3:
        raise ValueError(f"render_pairs needs w2c [P, 4, 4] and K [P, 3, 3], got {tuple(w2c.shape)} and "
                         f"{tuple(K.shape)}")
    out = render(g, times, w2c[:, None], K[:, None], width, height, background, backend, **kwargs)
    return RenderOutput(out.rgb[:, 0], out.alpha[:, 0], out.meta)


def render_cameras(g: Gaussians4D, time: float, cams: Cameras, background: BackgroundLike = 1.0,
                   backend: str = "auto", **kwargs) -> RenderOutput:
    """Render one time from V cameras: ``rgb [1, V, H, W, 3]``, ``alpha [1, V, H, W, 1]``."""
    if not isinstance(cams, Cameras):
        raise TypeError(f"render_cameras needs e4d.cameras.Cameras, got {type(cams).__name__}")
    return render(g, [float(time)], cams.w2c[None], cams.K[None], cams.width, cams.height, background,
                  backend, **kwargs)


__all__ = ["RenderOutput", "RasterSettings", "render", "render_sliced", "render_pairs", "render_cameras",
           "resolve_backend", "describe_backend", "log_backend", "fit_time_estimate", "make_backgrounds",
           "BACKENDS"]
