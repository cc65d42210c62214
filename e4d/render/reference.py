"""Pure-torch rasterizer of 3D Gaussians with bounded memory: runs on any device, the check of the fast backends.

It reproduces gsplat 1.5.3's classic 3DGS pipeline (``rasterization(..., rasterize_mode="classic")``): the
projection and culling of :mod:`e4d.render.projection`, then per pixel (centre at +0.5)
``alpha = min(0.999, o * exp(-1/2 d^T Sigma2d^-1 d))``, skipped below 1/255, front-to-back compositing sorted by
camera depth, stopping before transmittance would drop to <= 1e-4;
``rgb = sum_i c_i alpha_i T_i + T_final * background``, ``alpha = 1 - T_final``.

Memory is bounded whatever the number of Gaussians: the image is cut into square pixel tiles; each tile meets
only the Gaussians whose box overlaps it, in depth-sorted chunks of ``max_elements / tile pixels``, carrying the
transmittance from chunk to chunk (the result is that of one dense pass). Under autograd every chunk is
checkpointed (recomputed in the backward), so what is kept for the backward is a few numbers per pixel per chunk
plus index lists, never a pixels x Gaussians tensor. Differentiable.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..sh import SH_C0, eval_sh, sh_to_rgb
from .projection import (ALPHA_THRESHOLD, MAX_ALPHA, MIN_TRANSMITTANCE, RasterSettings, conic_and_box,
                         depth_keep, project_pinhole, world_to_camera)


def _chunk_alpha(pix: Tensor, mean2d: Tensor, conic: Tensor, opac: Tensor) -> Tensor:
    """``alpha [P, M]`` of M Gaussians at P pixel centres (0 below 1/255 or where the quadratic form is < 0)."""
    d = mean2d[None] - pix[:, None]  # [P, M, 2]
    dx, dy = d[..., 0], d[..., 1]
    sigma = 0.5 * (conic[:, 0] * dx * dx + conic[:, 2] * dy * dy) + conic[:, 1] * dx * dy
    alpha = (opac * torch.exp(-sigma)).clamp(max=MAX_ALPHA)
    return torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))


def composite_chunk(alpha: Tensor, colors: Tensor, T_in: Tensor, probe_in: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Composite one depth-sorted chunk ``alpha [P, M]``, ``colors [M, D]`` behind transmittance ``T_in [P]``.

    ``probe_in [P]`` (no grad) is the transmittance *including* Gaussians that were stopped at: once it is
    <= 1e-4 the pixel is finished (gsplat stops, exclusively, at the first Gaussian that would bring the
    transmittance to <= 1e-4, and takes nothing behind it). Returns the colour added ``[P, D]``, the
    transmittance after the chunk ``[P]`` and the probe after it ``[P]``.
    """
    with torch.no_grad():
        probe = probe_in[:, None] * torch.cumprod(1.0 - alpha, dim=1)
        include = probe > MIN_TRANSMITTANCE  # a prefix: the probe never increases
    alpha = alpha * include
    T = T_in[:, None] * torch.cumprod(1.0 - alpha, dim=1)
    T_before = torch.cat([T_in[:, None], T[:, :-1]], dim=1)
    return (alpha * T_before) @ colors, T[:, -1], probe[:, -1]


def composite(alpha: Tensor, colors: Tensor, background: Tensor) -> Tuple[Tensor, Tensor]:
    """Front-to-back compositing of depth-sorted ``alpha [P, M]`` with ``colors [M, D]``: ``[P, D]``, ``[P, 1]``."""
    ones = alpha.new_ones(alpha.shape[0])
    if alpha.shape[1] == 0:
        return background.expand(alpha.shape[0], -1), alpha.new_zeros(alpha.shape[0], 1)
    rgb, T, _ = composite_chunk(alpha, colors, ones, ones)
    return rgb + T[:, None] * background, 1.0 - T[:, None]


def _tile_chunk(pix: Tensor, T_in: Tensor, probe_in: Tensor, mean2d: Tensor, conic: Tensor, opac: Tensor,
                colors: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    return composite_chunk(_chunk_alpha(pix, mean2d, conic, opac), colors, T_in, probe_in)


def _composite_tile(pix: Tensor, mean2d: Tensor, conic: Tensor, opac: Tensor, colors: Tensor, chunk: int,
                    recompute: bool) -> Tuple[Tensor, Tensor]:
    """Colour ``[P, D]`` and transmittance ``[P]`` of one tile's pixels over its depth-sorted Gaussians;
    ``recompute``: checkpoint every chunk (keep nothing pixels x Gaussians for the backward)."""
    P, D = pix.shape[0], colors.shape[1]
    rgb = pix.new_zeros(P, D)
    T = pix.new_ones(P)
    probe = pix.new_ones(P)
    grad = recompute and torch.is_grad_enabled() and any(t.requires_grad for t in (mean2d, conic, opac, colors))
    for start in range(0, mean2d.shape[0], chunk):
        sl = slice(start, start + chunk)
        args = (pix, T, probe, mean2d[sl], conic[sl], opac[sl], colors[sl])
        part, T, probe = checkpoint(_tile_chunk, *args, use_reentrant=False) if grad else _tile_chunk(*args)
        rgb = rgb + part
        if not bool((probe > MIN_TRANSMITTANCE).any()):  # every pixel of the tile has stopped
            break
    return rgb, T


def rasterize_image(means: Tensor, covs: Tensor, opacities: Tensor, colors: Tensor, w2c: Tensor, K: Tensor,
                    width: int, height: int, background: Tensor,
                    settings: RasterSettings = RasterSettings()) -> Tuple[Tensor, Tensor]:
    """One image from world-space Gaussians: ``rgb [H, W, D]`` and ``alpha [H, W, 1]``.

    Args: ``means [N, 3]``, ``covs [N, 3, 3]``, ``opacities [N]``, ``colors [N, D]`` (already activated),
    ``w2c [4, 4]``, ``K [3, 3]``, ``background [D]``.
    """
    mean_c, cov_c = world_to_camera(means, covs, w2c)
    idx = depth_keep(mean_c[:, 2], opacities, settings).nonzero().squeeze(-1)
    mean_c, cov_c, opac, col = mean_c[idx], cov_c[idx], opacities[idx], colors[idx]
    mean2d, cov2d = project_pinhole(mean_c, cov_c, K, width, height, settings.eps2d)
    conic, radii, on = conic_and_box(mean2d, cov2d, opac, width, height)
    with torch.no_grad():
        sel = on.nonzero().squeeze(-1)
        sel = sel[torch.argsort(mean_c[sel, 2], stable=True)]  # front to back
        lo, hi = (mean2d[sel] - radii[sel]), (mean2d[sel] + radii[sel])  # boxes [M, 2]
    mean2d, conic, opac, col = mean2d[sel], conic[sel], opac[sel], col[sel]
    ts = int(settings.tile_size)
    chunk = max(1, int(settings.max_elements) // (ts * ts))
    # an image whose whole pixels x Gaussians block fits the bound keeps its intermediates (no recompute)
    recompute = width * height * sel.numel() > int(settings.max_elements)
    dev, dt = means.device, means.dtype
    D = col.shape[1]
    rgb_rows, T_rows = [], []
    for y0 in range(0, height, ts):
        rgb_row, T_row = [], []
        for x0 in range(0, width, ts):
            y1, x1 = min(y0 + ts, height), min(x0 + ts, width)
            ys, xs = torch.meshgrid(torch.arange(y0, y1, device=dev, dtype=dt) + 0.5,
                                    torch.arange(x0, x1, device=dev, dtype=dt) + 0.5, indexing="ij")
            pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)  # [P, 2]
            with torch.no_grad():  # Gaussians whose box overlaps the tile, still in depth order
                t_sel = ((hi[:, 0] > x0) & (lo[:, 0] < x1) & (hi[:, 1] > y0) & (lo[:, 1] < y1)).nonzero().squeeze(-1)
            tile_rgb, tile_T = _composite_tile(pix, mean2d[t_sel], conic[t_sel], opac[t_sel], col[t_sel], chunk,
                                              recompute)
            rgb_row.append(tile_rgb.reshape(y1 - y0, x1 - x0, D))
            T_row.append(tile_T.reshape(y1 - y0, x1 - x0))
        rgb_rows.append(torch.cat(rgb_row, 1))
        T_rows.append(torch.cat(T_row, 1))
    T = torch.cat(T_rows, 0)[..., None]
    return torch.cat(rgb_rows, 0) + T * background, 1.0 - T


def sh_colors(means: Tensor, sh: Tensor, sh_degree: int, campos: Optional[Tensor]) -> Tensor:
    """Activated colours ``[..., 3]`` of ``sh [..., K, 3]`` seen from camera centres ``campos`` (broadcast against
    ``means [..., 3]``; unused for degree 0), gsplat's convention ``max(SH(dir) + 0.5, 0)``."""
    if sh_degree == 0:
        return sh_to_rgb(SH_C0 * sh[..., 0, :])
    return sh_to_rgb(eval_sh(sh_degree, sh, means - campos))


def view_colors(means: Tensor, sh: Tensor, sh_degree: int, w2c: Tensor) -> Tensor:
    """Activated colours ``[N, 3]`` of ``means [N, 3]``, ``sh [N, K, 3]`` seen from camera ``w2c [4, 4]``."""
    return sh_colors(means, sh, sh_degree, torch.linalg.inv(w2c)[:3, 3] if sh_degree > 0 else None)


def render_reference(means: Tensor, covs: Tensor, opacities: Tensor, sh: Tensor, sh_degree: int,
                     w2c: Tensor, K: Tensor, width: int, height: int, backgrounds: Tensor,
                     settings: RasterSettings = RasterSettings()) -> Tuple[Tensor, Tensor]:
    """Batched reference render: ``rgb [B, C, H, W, 3]``, ``alpha [B, C, H, W, 1]``.

    Args: ``means [B, N, 3]``, ``covs [B, N, 3, 3]``, ``opacities [B, N]``, ``sh [B, N, K, 3]``,
    ``w2c [B, C, 4, 4]``, ``K [B, C, 3, 3]``, ``backgrounds [B, C, 3]``.
    """
    B, C = w2c.shape[:2]
    rgb_rows, alpha_rows = [], []
    for b in range(B):
        rgb_row, alpha_row = [], []
        for c in range(C):
            col = view_colors(means[b], sh[b], sh_degree, w2c[b, c])
            rgb, acc = rasterize_image(means[b], covs[b], opacities[b], col, w2c[b, c], K[b, c],
                                       width, height, backgrounds[b, c], settings)
            rgb_row.append(rgb)
            alpha_row.append(acc)
        rgb_rows.append(torch.stack(rgb_row))
        alpha_rows.append(torch.stack(alpha_row))
    return torch.stack(rgb_rows), torch.stack(alpha_rows)


__all__ = ["RasterSettings", "composite", "composite_chunk", "rasterize_image", "sh_colors", "view_colors",
           "render_reference"]
