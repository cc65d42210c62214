"""Triton backend: a differentiable tile rasterizer that needs no compiler beyond the Triton wheel.

Pipeline of one call (B time slices x C cameras = I images):

1. projection in torch (:mod:`e4d.render.projection`, the same code as the reference renderer, so autograd
   differentiates it): camera-space means of every (image, Gaussian), the near/far/opacity cull, then EWA
   means2d, conics and box radii of the kept pairs only, and their colours (SH evaluated per image in torch);
2. tile binning and depth sort in torch: each kept pair is repeated over the 16x16 tiles its box touches, the
   pairs are sorted by ``tile * G + depth rank`` and each tile's range is found with a bincount;
3. alpha compositing per tile as Triton kernels (:mod:`e4d.render.triton_kernels`), wrapped in an autograd
   Function whose backward returns the gradients of means2d, conics, opacities and colours.

Triton ships with torch's Linux CUDA and ROCm wheels; on Windows it is the ``triton-windows`` wheel. The kernels
are compiled by Triton on first use (seconds, no CUDA toolkit). With ``TRITON_INTERPRET=1`` set before the first
render they run on CPU tensors in Triton's interpreter (slow: tests only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from .projection import RasterSettings, conic_and_box, depth_keep, project_pinhole
from .reference import sh_colors


@dataclass(frozen=True)
class TritonLaunch:
    """Launch shape of the compositing kernels (speed only; results do not depend on it). Defaults: the fastest
    of 7 shapes timed on an H200 at the fit's shape (32 images of 256^2, 50k Gaussians; bench/render.py
    --launch-sweep times them); larger chunks spill registers (chunk 32 with 4 warps: 3.5x slower backward)."""

    chunk: int = 4
    """Gaussians evaluated together per program step (power of two)."""
    warps: int = 4
    """Warps per program in the forward kernel."""
    backward_chunk: int = 8
    """Gaussians per program step in the backward kernel (power of two)."""
    backward_warps: int = 4
    """Warps per program in the backward kernel."""


DEFAULT_LAUNCH = TritonLaunch()
"""Launch shape used when ``render_triton`` gets none (benchmarks may replace it to compare shapes)."""


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


class _Composite(torch.autograd.Function):
    """Tile compositing of projected Gaussians ``feat [G, 9]``: colour sum ``[I, H, W, 3]``, transmittance
    ``[I, H, W]``."""

    @staticmethod
    def forward(ctx, feat: Tensor, ids: Tensor, offsets: Tensor, images: int, width: int, height: int,
                launch: TritonLaunch) -> Tuple[Tensor, Tensor]:
        k = _kernels()
        tiles_x, tiles_y = -(-width // k.TILE), -(-height // k.TILE)
        color = feat.new_zeros(images, height, width, 3)
        trans = feat.new_ones(images, height, width)
        count = torch.zeros(images, height, width, dtype=torch.int32, device=feat.device)
        grid = (images * tiles_x * tiles_y,)
        k.composite_forward[grid](feat, ids, offsets, color, trans, count, height, width, tiles_x,
                                  tiles_x * tiles_y, BG=launch.chunk, TS=k.TILE, num_warps=launch.warps)
        ctx.save_for_backward(feat, ids, offsets, color, trans, count)
        ctx.shape = (images, width, height, tiles_x, tiles_y)
        ctx.launch = launch
        ctx.mark_non_differentiable(count)
        return color, trans

    @staticmethod
    def backward(ctx, v_color: Tensor, v_trans: Tensor):
        k = _kernels()
        feat, ids, offsets, color, trans, count = ctx.saved_tensors
        images, width, height, tiles_x, tiles_y = ctx.shape
        grad = torch.zeros_like(feat)
        v_color = v_color.contiguous() if v_color is not None else torch.zeros_like(color)
        v_trans = v_trans.contiguous() if v_trans is not None else torch.zeros_like(trans)
        grid = (images * tiles_x * tiles_y,)
        k.composite_backward[grid](feat, ids, offsets, color, trans, count, v_color, v_trans, grad, height, width,
                                   tiles_x, tiles_x * tiles_y, BG=ctx.launch.backward_chunk, TS=k.TILE,
                                   num_warps=ctx.launch.backward_warps)
        return grad, None, None, None, None, None, None


def bin_tiles(mean2d: Tensor, radii: Tensor, on: Tensor, depth: Tensor, image: Tensor, images: int, width: int,
              height: int, tile: int) -> Tuple[Tensor, Tensor]:
    """Tile lists of G projected Gaussians: ``ids [M]`` int32 (tile-major, depth-sorted within a tile) and
    ``offsets [images * n_tiles + 1]`` int32.

    Args: ``mean2d [G, 2]``, ``radii [G, 2]`` (box half-sizes, pixels), ``on [G]`` bool, ``depth [G]``,
    ``image [G]`` (image index of each Gaussian), image count and size, tile side in pixels.
    """
    dev = mean2d.device
    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    n_tiles = tiles_x * tiles_y
    with torch.no_grad():
        lo = torch.floor((mean2d - radii) / tile)
        hi = torch.ceil((mean2d + radii) / tile)
        x0 = lo[:, 0].clamp(0, tiles_x).long()
        y0 = lo[:, 1].clamp(0, tiles_y).long()
        x1 = hi[:, 0].clamp(0, tiles_x).long()
        y1 = hi[:, 1].clamp(0, tiles_y).long()
        span_x = (x1 - x0).clamp_min(0)
        counts = span_x * (y1 - y0).clamp_min(0) * on
        total = int(counts.sum())  # one host sync: the size of the tile lists
        offsets = torch.zeros(images * n_tiles + 1, dtype=torch.int32, device=dev)
        if total == 0:
            return torch.zeros(1, dtype=torch.int32, device=dev), offsets
        g = depth.shape[0]
        entry = torch.repeat_interleave(torch.arange(g, device=dev), counts, output_size=total)
        first = torch.cumsum(counts, 0) - counts
        local = torch.arange(total, device=dev) - first[entry]
        w = span_x[entry]
        tile_id = image[entry] * n_tiles + (y0[entry] + local // w) * tiles_x + x0[entry] + local % w
        rank = torch.empty(g, dtype=torch.long, device=dev)
        rank[torch.argsort(depth)] = torch.arange(g, device=dev)
        order = torch.argsort(tile_id * g + rank[entry])
        ids = entry[order].to(torch.int32)
        offsets[1:] = torch.cumsum(torch.bincount(tile_id, minlength=images * n_tiles), 0).to(torch.int32)
    return ids, offsets


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
    k = _kernels()
    launch = launch if launch is not None else DEFAULT_LAUNCH
    dtype = means.dtype
    f32 = lambda t: t if t.dtype == torch.float32 else t.float()  # noqa: E731  (the kernels are fp32)
    means, covs, opacities, sh, w2c, K = map(f32, (means, covs, opacities, sh, w2c, K))
    B, C = w2c.shape[:2]
    N = means.shape[1]
    images = B * C
    mean_c = torch.einsum("bcij,bnj->bcni", w2c[..., :3, :3], means) + w2c[:, :, None, :3, 3]  # [B, C, N, 3]
    with torch.no_grad():
        keep = depth_keep(mean_c[..., 2], opacities[:, None], settings)  # [B, C, N]
        pair = keep.reshape(-1).nonzero().squeeze(-1)  # kept (image, Gaussian) pairs, G of them
        image = pair // N
        n = pair % N
        b = image // C
    flat_w2c, flat_K = w2c.reshape(images, 4, 4), K.reshape(images, 3, 3)
    R = flat_w2c[image, :3, :3]
    cov_c = R @ covs[b, n] @ R.transpose(-1, -2)
    mc = mean_c.reshape(-1, 3)[pair]
    op = opacities[b, n]
    mean2d, cov2d = project_pinhole(mc, cov_c, flat_K[image], width, height, settings.eps2d)
    conic, radii, on = conic_and_box(mean2d, cov2d, op, width, height)
    campos = torch.linalg.inv(flat_w2c)[:, :3, 3] if sh_degree > 0 else None
    colors = sh_colors(means[b, n], sh[b, n], sh_degree, campos[image] if campos is not None else None)
    ids, offsets = bin_tiles(mean2d.detach(), radii, on, mc[:, 2].detach(), image, images, width, height, k.TILE)
    feat = torch.cat([mean2d, conic, op[:, None], colors], 1)  # [G, 9]
    if feat.shape[0] == 0:  # nothing kept: one inert row, so the kernels get a real pointer
        feat = torch.cat([feat, feat.new_zeros(1, 9)])
    feat = feat.contiguous()
    color, trans = _Composite.apply(feat, ids, offsets, images, int(width), int(height), launch)
    color = color.reshape(B, C, height, width, 3)
    trans = trans.reshape(B, C, height, width, 1)
    rgb = color + trans * f32(backgrounds)[:, :, None, None, :]
    return rgb.to(dtype), (1.0 - trans).to(dtype)


__all__ = ["render_triton", "bin_tiles", "triton_available", "TritonLaunch"]
