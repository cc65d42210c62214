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
from .projection import RasterSettings


def gsplat_available() -> bool:
    """True if gsplat's CUDA extension can be loaded: prebuilt, cached, or compiled now by gsplat (with a CUDA
    toolkit this first build takes minutes: call it only when the user asked for gsplat, see
    :func:`gsplat_state`). A pip install of gsplat without a toolkit imports fine but has no extension.

    Only call this on a CUDA machine: on a CPU machine with nvcc it would start a build.
    """
    try:
        from gsplat.cuda._backend import _C
    except Exception:  # any import/build failure means "not usable here"
        return False
    if _C is None:
        import logging

        logging.getLogger(__name__).warning(
            "gsplat is installed but its CUDA extension is unavailable (no prebuilt wheel for this torch/CUDA and no "
            "CUDA toolkit to build it). Install a prebuilt gsplat wheel matching your torch/CUDA, or a CUDA "
            "toolkit (nvcc), or use backend='triton'.")
        return False
    return True


def _jit_build_dir() -> str:
    """Where torch's JIT puts gsplat's extension (torch's ``_get_build_directory`` rule, without creating it)."""
    import os
    import sys

    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        acc = (f"rocm{torch.version.hip.replace('.', '')}" if torch.version.hip else
               f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu")
        py = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
        root = os.path.join(get_default_build_root(), f"{py}_{acc}")
    return os.path.join(root, "gsplat_cuda")


def gsplat_state() -> str:
    """What loading gsplat's CUDA extension would do, found without loading or building it:

    * ``"missing"``: gsplat does not import;
    * ``"ready"``: the extension is prebuilt (``gsplat.csrc``) or already JIT-built in torch's extension cache,
      so it loads in a second;
    * ``"compile"``: gsplat would JIT-compile it now (a CUDA toolkit is present; this takes minutes);
    * ``"unavailable"``: neither a build nor a toolkit (gsplat would disable itself).

    Mirrors gsplat 1.5.3's ``gsplat/cuda/_backend.py``: ``from gsplat import csrc``, else a JIT build in
    ``<torch extensions dir>/gsplat_cuda`` when ``nvcc`` is found.
    """
    import importlib.util
    import os

    try:
        if importlib.util.find_spec("gsplat") is None:
            return "missing"
        if importlib.util.find_spec("gsplat.csrc") is not None:
            return "ready"
    except Exception:  # a broken gsplat install behaves like a missing one
        return "missing"
    build = _jit_build_dir()
    if any(os.path.exists(os.path.join(build, f"gsplat_cuda{ext}")) for ext in (".so", ".lib", ".pyd")):
        return "ready"
    import shutil

    from torch.utils.cpp_extension import CUDA_HOME

    has_nvcc = (CUDA_HOME is not None and os.path.isfile(os.path.join(CUDA_HOME, "bin", "nvcc"))) \
        or shutil.which("nvcc") is not None
    return "compile" if has_nvcc else "unavailable"


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
