"""Triton backend: a differentiable tile rasterizer that needs no compiler beyond the Triton wheel.

Pipeline of one call (B time slices x C cameras = I images, N Gaussians, P = I * N pairs), one autograd Function:

1. projection kernel (:mod:`e4d.render.triton_projection`): per pair, the EWA projection of
   :mod:`e4d.render.projection` (means2d, conic, opacity-aware box, culling), its tile box and which of the box's
   tiles the ellipse reaches; colours come in from torch (SH evaluated there, so autograd covers them);
2. binning: the pairs' tile counts are summed (the one host sync: the list size), a kernel writes one
   ``(tile << 32) | depth`` key per (pair, reached tile) and one sort orders every tile's list front to back;
3. compositing per 16x16 tile (:mod:`e4d.render.triton_kernels`); the backward runs the compositing backward
   kernel, then the projection backward kernel, and sums the per-image gradients over a slice's cameras.

Triton ships with torch's Linux CUDA and ROCm wheels; on Windows it is the ``triton-windows`` wheel. The kernels
are compiled by Triton on first use (seconds, no CUDA toolkit). With ``TRITON_INTERPRET=1`` set before the first
render they run on CPU tensors in Triton's interpreter (slow: tests only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from .projection import RasterSettings
from .reference import sh_colors


@dataclass(frozen=True)
class TritonLaunch:
    """A fixed launch shape of the compositing kernels (speed only; results do not depend on it). Without one,
    a GPU render times a few shapes on its first call per image size and keeps the fastest (Triton's autotuner,
    :data:`e4d.render.triton_kernels.FORWARD_CONFIGS` / ``BACKWARD_CONFIGS``); the CPU interpreter uses the
    defaults below. bench/render.py --launch-sweep times shapes."""

    chunk: int = 8
    """Gaussians per unrolled group of the forward walk (the all-pixels-done test runs once per group)."""
    warps: int = 4
    """Warps per program in the forward kernel (1, 2, 4 or 8; the backward always runs one warp per tile)."""
    backward_chunk: int = 2
    """Gaussians per unrolled group of the backward walk."""

    def __post_init__(self) -> None:
        if self.warps not in (1, 2, 4, 8) or self.chunk < 1 or self.backward_chunk < 1:
            raise ValueError(f"TritonLaunch needs warps in (1, 2, 4, 8) and chunks >= 1, got {self}")


DEFAULT_LAUNCH: Optional[TritonLaunch] = None
"""Launch shape used when ``render_triton`` gets none: None = timed per image size on the GPU (benchmarks may
set a fixed shape to compare)."""


def triton_available() -> bool:
    """True if Triton imports (it does not say a GPU is present)."""
    try:
        import triton  # noqa: F401
    except Exception:  # a broken install is "not available", like a missing one
        return False
    return True


def _kernels():
    try:
        from . import triton_kernels
    except ImportError as e:
        raise ImportError("the triton backend needs Triton: it comes with torch's Linux CUDA/ROCm wheels; on "
                          "Windows pip install triton-windows; or use backend='reference'") from e
    return triton_kernels


def _check_device(device: torch.device) -> None:
    k = _kernels()
    if device.type == "cuda" and not k.INTERPRETED:
        return
    if device.type == "cpu" and k.INTERPRETED:
        return
    mode = "Triton's CPU interpreter (TRITON_INTERPRET=1 was set)" if k.INTERPRETED else "a GPU"
    raise ValueError(f"the triton backend's kernels were built for {mode} but the Gaussians are on {device}; "
                     "use backend='reference' there, or move the Gaussians and cameras to a CUDA/ROCm GPU")


def _projection():
    from . import triton_projection
    return triton_projection


PROJECT_BLOCK = 256
"""(image, Gaussian) pairs per program of the projection kernels."""


def bin_tiles(box: Tensor, count: Tensor, hits: Tensor, depth: Tensor, N: int, n_tiles: int,
              tiles_x: int) -> Tuple[Tensor, Tensor]:
    """Tile lists of P = I * N projected pairs: ``ids [M]`` int32 (pair indices, tile-major, depth-sorted within a
    tile) and ``offsets [I * n_tiles + 1]`` int32 (tile ``t`` owns ``ids[offsets[t]:offsets[t + 1]]``).

    Args: ``box [P, 4]`` int32 tile box (x0, y0, x1, y1), ``count [P]`` int32 tiles per pair (0: culled),
    ``hits [P]`` int32 which of the box's tiles (bit i: tile i, row-major; all when the box has > 32 tiles),
    ``depth [P]`` positive camera depths, N Gaussians per image, tiles per image and per row. One host sync (the
    list size), one sort of int64 ``(tile << 32) | depth bits`` keys.
    """
    P = count.shape[0]
    images = P // N
    first = torch.cumsum(count, 0)
    total = int(first[-1]) if P else 0  # the one host sync: the size of the lists
    if total >= 2 ** 31:
        raise ValueError(f"the triton backend handles < 2^31 (tile, Gaussian) pairs per call, got {total}; "
                         "render fewer images per call")
    offsets_index = torch.arange(images * n_tiles + 1, device=box.device, dtype=torch.int64)
    if total == 0:
        return torch.zeros(1, dtype=torch.int32, device=box.device), torch.zeros_like(offsets_index, dtype=torch.int32)
    keys = torch.empty(total, dtype=torch.int64, device=box.device)
    vals = torch.empty(total, dtype=torch.int32, device=box.device)
    first = first - count
    pk = _projection()
    block = 128
    pk.emit_keys[(_cdiv(P, block),)](box, count, hits, first, depth, keys, vals, P, N, n_tiles, tiles_x,
                                     BLOCK=block)
    keys, order = torch.sort(keys, stable=True)
    ids = vals[order]
    offsets = torch.searchsorted(keys >> 32, offsets_index).to(torch.int32)
    return ids, offsets


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class _Rasterize(torch.autograd.Function):
    """Projection, binning and compositing of B slices x C cameras: colour sum ``[3, I, H, W]`` and transmittance
    ``[I, H, W]``; gradients to means ``[B, N, 3]``, covariances ``[B, N, 3, 3]``, opacities ``[B, N]`` and colours
    (``[B, N, 3]``, shared by a slice's cameras, or ``[B * C, N, 3]`` per image)."""

    @staticmethod
    def forward(ctx, means: Tensor, covs: Tensor, opacities: Tensor, colors: Tensor, w2c: Tensor, K: Tensor,
                width: int, height: int, settings: RasterSettings,
                launch: Optional[TritonLaunch]) -> Tuple[Tensor, Tensor]:
        k, pk = _kernels(), _projection()
        B, N = opacities.shape
        images = w2c.shape[0]
        C = images // B
        P = images * N
        tiles_x, tiles_y = _cdiv(width, k.TILE), _cdiv(height, k.TILE)
        n_tiles = tiles_x * tiles_y
        dev = means.device
        feat = torch.empty(max(P, 1), k.FEATURES, dtype=torch.float32, device=dev)
        depth = torch.empty(P, dtype=torch.float32, device=dev)
        box = torch.empty(P, 4, dtype=torch.int32, device=dev)
        count = torch.empty(P, dtype=torch.int32, device=dev)
        hits = torch.empty(P, dtype=torch.int32, device=dev)
        color_div = C if colors.shape[0] == B else 1
        pk.project_forward[(_cdiv(P, PROJECT_BLOCK),)](
            means, covs, opacities, colors, w2c, K, feat, depth, box, count, hits, P, N, C, color_div, width, height,
            tiles_x, tiles_y, float(settings.near_plane), float(settings.far_plane), float(settings.eps2d),
            BLOCK=PROJECT_BLOCK, TS=k.TILE)
        ids, offsets = bin_tiles(box, count, hits, depth, N, n_tiles, tiles_x)
        color = feat.new_zeros(3, images, height, width)  # planar: every kernel access is contiguous
        trans = feat.new_ones(images, height, width)
        last = torch.zeros(images, height, width, dtype=torch.int32, device=dev)
        args = (feat, ids, offsets, color, trans, last, height, width, tiles_x, n_tiles, trans.numel())
        if launch is None:
            k.composite_forward_tuned[(images * n_tiles,)](*args, TS=k.TILE)
        else:
            k.composite_forward[(images * n_tiles,)](*args, BG=launch.chunk, TS=k.TILE, num_warps=launch.warps)
        ctx.save_for_backward(means, covs, opacities, w2c, K, feat, ids, offsets, color, trans, last, count)
        ctx.shape = (B, C, N, width, height, tiles_x, n_tiles, colors.shape[0])
        ctx.settings, ctx.launch = settings, launch
        return color, trans

    @staticmethod
    def backward(ctx, v_color: Tensor, v_trans: Tensor):
        k, pk = _kernels(), _projection()
        means, covs, opacities, w2c, K, feat, ids, offsets, color, trans, last, count = ctx.saved_tensors
        B, C, N, width, height, tiles_x, n_tiles, color_rows = ctx.shape
        images, P = B * C, B * C * N
        v_feat = torch.zeros_like(feat)
        v_color = v_color.contiguous() if v_color is not None else torch.zeros_like(color)
        v_trans = v_trans.contiguous() if v_trans is not None else torch.zeros_like(trans)
        args = (feat, ids, offsets, color, trans, last, v_color, v_trans, v_feat, height, width, tiles_x, n_tiles,
                trans.numel())
        launch = ctx.launch
        if launch is None:
            k.composite_backward_tuned[(images * n_tiles,)](*args, TS=k.TILE)
        else:
            k.composite_backward[(images * n_tiles,)](*args, BG=launch.backward_chunk, TS=k.TILE, num_warps=1)
        v_means = torch.empty(P, 3, dtype=torch.float32, device=feat.device)
        v_covs = torch.empty(P, 6, dtype=torch.float32, device=feat.device)
        pk.project_backward[(_cdiv(P, PROJECT_BLOCK),)](
            means, covs, opacities, w2c, K, count, v_feat, v_means, v_covs, P, N, C, width, height,
            float(ctx.settings.eps2d), BLOCK=PROJECT_BLOCK)
        v_means = v_means.view(B, C, N, 3).sum(1)
        s = v_covs.view(B, C, N, 6).sum(1)
        v_cov3 = torch.stack([s[..., 0], s[..., 1], s[..., 2], s[..., 1], s[..., 3], s[..., 4], s[..., 2], s[..., 4],
                              s[..., 5]], -1).view(B, N, 3, 3)
        v_feat = v_feat[:P].view(B, C, N, k.FEATURES)
        v_opac = v_feat[..., 5].sum(1)
        v_colors = v_feat[..., 6:9].sum(1) if color_rows == B else v_feat[..., 6:9].reshape(images, N, 3)
        return v_means, v_cov3, v_opac, v_colors, None, None, None, None, None, None


def render_triton(means: Tensor, covs: Tensor, opacities: Tensor, sh: Tensor, sh_degree: int,
                  w2c: Tensor, K: Tensor, width: int, height: int, backgrounds: Tensor,
                  settings: RasterSettings = RasterSettings(),
                  launch: Optional[TritonLaunch] = None) -> Tuple[Tensor, Tensor]:
    """Render B slices x C cameras with the Triton tile rasterizer: ``rgb [B, C, H, W, 3]``, ``alpha [B, C, H, W, 1]``.

    Args: ``means [B, N, 3]``, ``covs [B, N, 3, 3]``, ``opacities [B, N]``, ``sh [B, N, K, 3]``,
    ``w2c [B, C, 4, 4]``, ``K [B, C, 3, 3]``, ``backgrounds [B, C, 3]``. Differentiable with respect to the
    Gaussians (as gsplat's classic mode: the projection, colours and compositing). Computes in fp32 and returns
    the input dtype.
    """
    _check_device(means.device)
    if not settings.near_plane > 0:
        raise ValueError(f"the triton backend needs near_plane > 0 (it sorts depths as positive floats), got "
                         f"{settings.near_plane}; use a small positive near plane such as 0.01")
    launch = launch if launch is not None else DEFAULT_LAUNCH
    if launch is None and _kernels().INTERPRETED:  # timing launch shapes means nothing in the interpreter
        launch = TritonLaunch()
    dtype = means.dtype
    f32 = lambda t: (t if t.dtype == torch.float32 else t.float()).contiguous()  # noqa: E731  (fp32 kernels)
    means, covs, opacities, sh, w2c, K = map(f32, (means, covs, opacities, sh, w2c, K))
    B, C = w2c.shape[:2]
    N = means.shape[1]
    if B * C * N >= 2 ** 31:
        raise ValueError(f"the triton backend handles < 2^31 (image, Gaussian) pairs per call, got {B * C * N}; "
                         "render fewer images per call")
    if sh_degree > 0:  # view-dependent colours: one row per image
        campos = torch.linalg.inv(w2c)[..., :3, 3]  # [B, C, 3]
        colors = sh_colors(means[:, None], sh[:, None], sh_degree, campos[:, :, None]).reshape(B * C, N, 3)
    else:
        colors = sh_colors(means, sh, 0, None)  # [B, N, 3]
    color, trans = _Rasterize.apply(means, covs, opacities, colors.contiguous(), w2c.reshape(B * C, 4, 4),
                                    K.reshape(B * C, 3, 3), int(width), int(height), settings, launch)
    color = color.permute(1, 2, 3, 0).reshape(B, C, height, width, 3)
    trans = trans.reshape(B, C, height, width, 1)
    rgb = color + trans * f32(backgrounds)[:, :, None, None, :]
    return rgb.to(dtype), (1.0 - trans).to(dtype)


__all__ = ["render_triton", "bin_tiles", "triton_available", "TritonLaunch"]
