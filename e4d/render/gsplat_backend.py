"""gsplat backend: one ``gsplat.rasterization`` call renders every (time, view) pair of a batch.

Written against gsplat 1.5.3: leading batch dimensions (means ``[B, N, 3]``, viewmats ``[B, C, 4, 4]``) render
B time slices x C cameras at once; the sliced 3D covariances go in through ``covars=`` (``quats``/``scales`` None)
and gsplat's projection backward returns their gradient, so gradients reach every 4D parameter through
:func:`e4d.slicing.slice_at`. CUDA only: gsplat is never called on CPU tensors (it would try to JIT-compile its
CUDA extension).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from ..sh import SH_C0, sh_to_rgb
from .reference import RasterSettings


def gsplat_available() -> bool:
    """True if gsplat's CUDA extension can be loaded: prebuilt, cached, or compiled now by gsplat (with a CUDA
    toolkit this first build takes minutes). A pip install of gsplat without a toolkit imports fine but has no
    extension; "auto" must then fall back to the reference renderer instead of crashing mid-fit.

    Only call this on a CUDA machine (``resolve_backend`` does): on a CPU machine with nvcc it would start a build.
    """
    try:
        from gsplat.cuda._backend import _C
    except Exception:  # any import/build failure means "not usable here"
        return False
    if _C is None:
        import logging

        logging.getLogger(__name__).warning(
            "gsplat is installed but its CUDA extension is unavailable (no prebuilt wheel for this torch/CUDA and no "
            "CUDA toolkit to build it); rendering with the slow pure-torch reference renderer instead. Install a "
            "prebuilt gsplat wheel matching your torch/CUDA, or a CUDA toolkit (nvcc).")
        return False
    return True


def render_gsplat(means: Tensor, covs: Tensor, opacities: Tensor, sh: Tensor, sh_degree: int,
                  w2c: Tensor, K: Tensor, width: int, height: int, backgrounds: Tensor,
                  settings: RasterSettings = RasterSettings(), packed: bool = True,
                  return_meta: bool = False) -> Tuple[Tensor, Tensor, Optional[Dict]]:
    """Render B slices x C cameras with gsplat: ``rgb [B, C, H, W, 3]``, ``alpha [B, C, H, W, 1]``, meta.

    Args: ``means [B, N, 3]``, ``covs [B, N, 3, 3]``, ``opacities [B, N]``, ``sh [B, N, K, 3]`` (SH coefficients;
    degree 0 is converted to colours here, which is cheaper than gsplat's SH kernel and gives the same result),
    ``w2c [B, C, 4, 4]``, ``K [B, C, 3, 3]``, ``backgrounds [B, C, 3]``.
    ``packed``: gsplat's sparse intermediate layout (less memory for many cameras; see gsplat's docs).
    ``meta`` (gsplat's dict, e.g. ``means2d`` for densification) is returned when ``return_meta``.
    """
    if means.device.type != "cuda":
        raise ValueError(f"the gsplat backend needs CUDA tensors, got {means.device}; use backend='reference' "
                         f"on CPU or move the Gaussians and cameras to the GPU with .to('cuda')")
    try:
        from gsplat import rasterization
    except ImportError as e:
        raise ImportError("the gsplat backend needs gsplat (Linux + CUDA): pip install gsplat; or use "
                          "backend='reference'") from e
    dtype = means.dtype
    packed = packed and means.shape[0] == 1  # gsplat 1.5.3 packed mode is wrong with a leading batch (B > 1)
    f32 = lambda t: t if t.dtype == torch.float32 else t.float()  # noqa: E731  (gsplat kernels are fp32)
    if sh_degree == 0:
        colors, deg = sh_to_rgb(SH_C0 * f32(sh[..., 0, :])), None  # [B, N, 3]
    else:
        colors, deg = f32(sh).contiguous(), int(sh_degree)  # [B, N, K, 3]
    rgb, alpha, meta = rasterization(
        means=f32(means).contiguous(), quats=None, scales=None, opacities=f32(opacities).contiguous(),
        colors=colors, viewmats=f32(w2c).contiguous(), Ks=f32(K).contiguous(), width=int(width),
        height=int(height), near_plane=settings.near_plane, far_plane=settings.far_plane,
        eps2d=settings.eps2d, sh_degree=deg, packed=packed, backgrounds=None,
        render_mode="RGB", rasterize_mode="classic", covars=f32(covs))
    # gsplat 1.5.3's packed path asserts backgrounds against an empty batch shape when there are leading batch
    # dims, so composite here: the kernel does exactly colour + T_final * background with T_final = 1 - alpha.
    rgb = rgb + (1.0 - alpha) * f32(backgrounds)[..., None, None, :]
    return rgb.to(dtype), alpha.to(dtype), (meta if return_meta else None)
