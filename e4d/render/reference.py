"""Pure-torch rasterizer of 3D Gaussians with bounded memory: runs on any device, the check of the fast backends.

It reproduces gsplat 1.5.3's classic 3DGS pipeline (``rasterization(..., rasterize_mode="classic")``): the
projection and culling of :mod:`e4d.render.projection`, then per pixel (centre at +0.5)
``alpha = min(0.999, o * exp(-1/2 d^T Sigma2d^-1 d))``, skipped below 1/255, front-to-back compositing sorted by
camera depth, stopping before transmittance would drop to <= 1e-4;
``rgb = sum_i c_i alpha_i T_i + T_final * background``, ``alpha = 1 - T_final``.

Memory is bounded whatever the number of Gaussians, and the work is vectorized across tiles and images:

* images are projected in groups (at most ``max_elements`` (image, Gaussian) pairs at once, at least one image);
* every projected Gaussian is listed, front to back, in the square pixel tiles its box overlaps (one sort per
  group), so a tile composites only the Gaussians that can reach it;
* tiles are composited in batches: the longest lists first, a batch of ``nt`` tiles meets its lists in chunks of
  ``K`` Gaussians with ``nt x tile pixels x K <= max_elements``, carrying the transmittance from chunk to chunk
  (the result is that of one dense pass); a batch stops once every pixel in it is finished.

A chunk keeps only its inputs for the backward (a few numbers per pixel plus the chunk's Gaussians, never a
pixels x Gaussians tensor); its backward recomputes the alphas and applies the compositing gradients in closed
form. The largest intermediate is ``max_elements`` elements (times a few live temporaries), which is what
bounds the peak. Differentiable.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..sh import SH_C0, eval_sh, sh_to_rgb
from .projection import (ALPHA_THRESHOLD, MAX_ALPHA, MIN_TRANSMITTANCE, RasterSettings, conic_and_box,
                         depth_keep, element_budget, project_pinhole)


def _chunk_alpha(pix: Tensor, mean2d: Tensor, conic: Tensor, opac: Tensor) -> Tensor:
    """``alpha [..., P, M]`` of M Gaussians (``mean2d [..., M, 2]``, ``conic [..., M, 3]``, ``opac [..., M]``) at
    P pixel centres ``pix [..., P, 2]`` (0 below 1/255 or where the quadratic form is < 0)."""
    dx = mean2d[..., None, :, 0] - pix[..., :, None, 0]
    dy = mean2d[..., None, :, 1] - pix[..., :, None, 1]
    a, b, c = (conic[..., None, :, i] for i in range(3))
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = (opac[..., None, :] * torch.exp(-sigma)).clamp(max=MAX_ALPHA)
    return torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))


def composite_chunk(alpha: Tensor, colors: Tensor, T_in: Tensor, probe_in: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Composite one depth-sorted chunk ``alpha [..., P, M]``, ``colors [..., M, D]`` behind ``T_in [..., P]``.

    ``probe_in [..., P]`` (no grad) is the transmittance *including* Gaussians that were stopped at: once it is
    <= 1e-4 the pixel is finished (gsplat stops, exclusively, at the first Gaussian that would bring the
    transmittance to <= 1e-4, and takes nothing behind it). Returns the colour added ``[..., P, D]``, the
    transmittance after the chunk ``[..., P]`` and the probe after it ``[..., P]``.
    """
    with torch.no_grad():
        probe = probe_in[..., None] * torch.cumprod(1.0 - alpha, dim=-1)
        include = probe > MIN_TRANSMITTANCE  # a prefix: the probe never increases
    alpha = alpha * include
    T = T_in[..., None] * torch.cumprod(1.0 - alpha, dim=-1)
    T_before = torch.cat([T_in[..., None], T[..., :-1]], dim=-1)
    # copies, not views: a view of the last column would keep the whole [..., P, M] block alive in the next
    # chunk's saved inputs (that was most of the peak memory)
    return (alpha * T_before) @ colors, T[..., -1].clone(), probe[..., -1].clone()


def composite(alpha: Tensor, colors: Tensor, background: Tensor) -> Tuple[Tensor, Tensor]:
    """Front-to-back compositing of depth-sorted ``alpha [P, M]`` with ``colors [M, D]``: ``[P, D]``, ``[P, 1]``."""
    ones = alpha.new_ones(alpha.shape[0])
    if alpha.shape[1] == 0:
        return background.expand(alpha.shape[0], -1), alpha.new_zeros(alpha.shape[0], 1)
    rgb, T, _ = composite_chunk(alpha, colors, ones, ones)
    return rgb + T[:, None] * background, 1.0 - T[:, None]


class _TileChunk(torch.autograd.Function):
    """One depth-sorted chunk of a batch of tiles: ``pix [nt, P, 2]`` (no grad), ``T_in``/``probe_in [nt, P]``,
    ``mean2d [nt, K, 2]``, ``conic [nt, K, 3]``, ``opac [nt, K]``, ``colors [nt, K, D]`` -> colour added
    ``[nt, P, D]``, transmittance and probe after the chunk ``[nt, P]``.

    Only the inputs are kept for the backward, which recomputes the alphas and applies the compositing gradients
    in closed form (the colour behind each Gaussian is a reverse cumulative sum), instead of autograd through
    cumulative products.
    """

    @staticmethod
    def forward(ctx, pix, T_in, probe_in, mean2d, conic, opac, colors):
        part, T_out, probe = composite_chunk(_chunk_alpha(pix, mean2d, conic, opac), colors, T_in, probe_in)
        ctx.save_for_backward(pix, T_in, probe_in, mean2d, conic, opac, colors)
        return part, T_out, probe

    @staticmethod
    def backward(ctx, v_part, v_T_out, _v_probe):
        pix, T_in, probe_in, mean2d, conic, opac, colors = ctx.saved_tensors
        dx = mean2d[..., None, :, 0] - pix[..., :, None, 0]
        dy = mean2d[..., None, :, 1] - pix[..., :, None, 1]
        a, b, c = (conic[..., None, :, i] for i in range(3))
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        vis = torch.exp(-sigma)
        raw = opac[..., None, :] * vis
        alpha = raw.clamp(max=MAX_ALPHA)
        alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
        alpha = alpha * (probe_in[..., None] * torch.cumprod(1.0 - alpha, dim=-1) > MIN_TRANSMITTANCE)
        one_m = 1.0 - alpha
        prod = torch.cumprod(one_m, dim=-1)
        before = torch.cat([torch.ones_like(prod[..., :1]), prod[..., :-1]], dim=-1)  # prod of (1 - alpha) in front
        T_before = T_in[..., None] * before
        w = alpha * T_before
        s = v_part @ colors.transpose(-1, -2)  # [nt, P, K]: colour gradient . Gaussian colour
        ws = torch.cumsum(w * s, dim=-1)
        behind = ws[..., -1:] - ws  # colour of the chunk behind each Gaussian, dotted with the gradient
        T_out = T_in * prod[..., -1]
        v_alpha = s * T_before - (behind + (v_T_out * T_out)[..., None]) / one_m
        v_alpha = torch.where((alpha > 0) & (raw <= MAX_ALPHA), v_alpha, torch.zeros_like(v_alpha))
        v_T_in = (s * alpha * before).sum(-1) + v_T_out * prod[..., -1]
        v_sigma = -raw * v_alpha
        v_mean2d = torch.stack([(v_sigma * (a * dx + b * dy)).sum(-2), (v_sigma * (b * dx + c * dy)).sum(-2)], -1)
        v_conic = torch.stack([(0.5 * v_sigma * dx * dx).sum(-2), (v_sigma * dx * dy).sum(-2),
                               (0.5 * v_sigma * dy * dy).sum(-2)], -1)
        v_opac = (v_alpha * vis).sum(-2)
        v_colors = w.transpose(-1, -2) @ v_part
        return None, v_T_in, None, v_mean2d, v_conic, v_opac, v_colors


def _tile_pixels(tiles: Tensor, tiles_x: int, ts: int, dtype: torch.dtype) -> Tensor:
    """Pixel centres ``[nt, ts * ts, 2]`` of tiles ``tiles [nt]`` (per-image tile indices)."""
    p = torch.arange(ts * ts, device=tiles.device)
    x = (tiles % tiles_x)[:, None] * ts + p % ts
    y = (tiles // tiles_x)[:, None] * ts + p // ts
    return torch.stack([x, y], -1).to(dtype) + 0.5


def _bin(mean2d: Tensor, radii: Tensor, image: Tensor, images: int, tiles_x: int, tiles_y: int,
         ts: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Tile lists of G depth-sorted Gaussians: entries ``[E]`` (Gaussian row) grouped by global tile
    (``image * tiles + tile``), front to back within a tile; list starts and lengths per global tile."""
    n_tiles = tiles_x * tiles_y
    lo = torch.floor((mean2d - radii) / ts)
    hi = torch.ceil((mean2d + radii) / ts)
    x0, y0 = lo[:, 0].clamp(0, tiles_x).long(), lo[:, 1].clamp(0, tiles_y).long()
    span_x = (hi[:, 0].clamp(0, tiles_x).long() - x0).clamp_min(0)
    counts = span_x * (hi[:, 1].clamp(0, tiles_y).long() - y0).clamp_min(0)
    g = torch.repeat_interleave(torch.arange(mean2d.shape[0], device=mean2d.device), counts)
    local = torch.arange(g.numel(), device=g.device) - (torch.cumsum(counts, 0) - counts)[g]
    w = span_x[g]
    tile = image[g] * n_tiles + (y0[g] + local // w) * tiles_x + x0[g] + local % w
    tile, order = torch.sort(tile, stable=True)  # entries come in depth order: stable keeps it per tile
    lengths = torch.bincount(tile, minlength=images * n_tiles)
    return g[order], torch.cumsum(lengths, 0) - lengths, lengths


def _composite_tiles(entries: Tensor, starts: Tensor, lengths: Tensor, mean2d: Tensor, conic: Tensor, opac: Tensor,
                     colors: Tensor, images: int, tiles_x: int, tiles_y: int, ts: int,
                     budget: int) -> Tuple[Tensor, Tensor]:
    """Colour ``[images, tiles, P, D]`` and transmittance ``[images, tiles, P]`` of every tile (P = ts * ts)."""
    n_tiles, P, D = tiles_x * tiles_y, ts * ts, colors.shape[-1]
    rgb = colors.new_zeros(images * n_tiles, P, D)
    trans = colors.new_ones(images * n_tiles, P)
    # an inert last row (opacity 0) pads the shorter lists of a batch
    mean2d, conic = torch.cat([mean2d, mean2d.new_zeros(1, 2)]), torch.cat([conic, conic.new_zeros(1, 3)])
    opac, colors = torch.cat([opac, opac.new_zeros(1)]), torch.cat([colors, colors.new_zeros(1, D)])
    pad = mean2d.shape[0] - 1
    busy = torch.argsort(lengths, descending=True)
    busy = busy[: int((lengths > 0).sum())]
    lens = lengths[busy].tolist()
    i = 0
    while i < len(busy):
        K = max(1, min(lens[i], budget // P))
        nt = max(1, budget // (P * K))
        tiles = busy[i:i + nt]
        longest = lens[i]
        i += nt
        pix = _tile_pixels(tiles % n_tiles, tiles_x, ts, mean2d.dtype)
        T = pix.new_ones(tiles.numel(), P)
        probe = T
        acc = None
        for c0 in range(0, longest, K):
            pos = c0 + torch.arange(K, device=tiles.device)
            inside = pos[None] < lengths[tiles][:, None]
            rows = torch.where(inside, entries[(starts[tiles][:, None] + pos[None]).clamp_max(entries.numel() - 1)],
                               pad)  # [nt, K]
            part, T, probe = _TileChunk.apply(pix, T, probe, mean2d[rows], conic[rows], opac[rows], colors[rows])
            acc = part if acc is None else acc + part
            if c0 + K < longest and not bool((probe > MIN_TRANSMITTANCE).any()):  # every pixel has stopped
                break
        rgb = rgb.index_copy(0, tiles, acc)
        trans = trans.index_copy(0, tiles, T)
    return rgb.view(images, n_tiles, P, D), trans.view(images, n_tiles, P)


def _untile(x: Tensor, tiles_x: int, tiles_y: int, ts: int, width: int, height: int) -> Tensor:
    """``[I, tiles, ts * ts, ...]`` tile-major values to ``[I, H, W, ...]`` images."""
    rest = x.shape[3:]
    x = x.reshape(x.shape[0], tiles_y, tiles_x, ts, ts, *rest).transpose(2, 3)
    return x.reshape(x.shape[0], tiles_y * ts, tiles_x * ts, *rest)[:, :height, :width]


def _project(means: Tensor, covs: Tensor, opacities: Tensor, colors: Tensor, w2c: Tensor, K: Tensor, width: int,
             height: int, settings: RasterSettings) -> Tuple[Tensor, ...]:
    """The (image, Gaussian) pairs that reach an image, front to back: pixel means ``[G, 2]``, conics ``[G, 3]``,
    opacities ``[G]``, colours ``[G, D]``, box radii ``[G, 2]`` and image indices ``[G]``."""
    N = means.shape[0]
    mean_c = torch.einsum("iab,nb->ina", w2c[:, :3, :3], means) + w2c[:, None, :3, 3]  # [I, N, 3]
    with torch.no_grad():
        pair = depth_keep(mean_c[..., 2], opacities[None], settings).reshape(-1).nonzero().squeeze(-1)
        image, n = pair // N, pair % N
    R = w2c[image, :3, :3]
    cov_c = R @ covs[n] @ R.transpose(-1, -2)
    mc, op = mean_c.reshape(-1, 3)[pair], opacities[n]
    col = colors[n] if colors.ndim == 2 else colors.reshape(-1, colors.shape[-1])[pair]
    mean2d, cov2d = project_pinhole(mc, cov_c, K[image], width, height, settings.eps2d)
    conic, radii, on = conic_and_box(mean2d, cov2d, op, width, height)
    with torch.no_grad():
        sel = on.nonzero().squeeze(-1)
        sel = sel[torch.argsort(mc[sel, 2].detach(), stable=True)]  # front to back
    return mean2d[sel], conic[sel], op[sel], col[sel], radii[sel], image[sel]


def rasterize_images(means: Tensor, covs: Tensor, opacities: Tensor, colors: Tensor, w2c: Tensor, K: Tensor,
                     width: int, height: int, settings: RasterSettings = RasterSettings()) -> Tuple[Tensor, Tensor]:
    """I images of one set of world-space Gaussians: colour sum ``[I, H, W, D]`` and transmittance ``[I, H, W]``
    (no background).

    Args: ``means [N, 3]``, ``covs [N, 3, 3]``, ``opacities [N]``, ``colors [N, D]`` or ``[I, N, D]`` (already
    activated; per image for view-dependent colour), ``w2c [I, 4, 4]``, ``K [I, 3, 3]``.
    """
    I = w2c.shape[0]
    args = (means, covs, opacities, colors, w2c, K, width, height, settings)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (means, covs, opacities, colors)):
        # recomputed in the backward: keeps O(kept pairs) outputs instead of every pair's 3x3 intermediates
        mean2d, conic, op, col, radii, image = checkpoint(_project, *args, use_reentrant=False)
    else:
        mean2d, conic, op, col, radii, image = _project(*args)
    ts = min(int(settings.tile_size), max(width, height))  # a tile larger than the image only adds padding
    tiles_x, tiles_y = -(-width // ts), -(-height // ts)
    with torch.no_grad():
        entries, starts, lengths = _bin(mean2d.detach(), radii, image, I, tiles_x, tiles_y, ts)
    rgb, trans = _composite_tiles(entries, starts, lengths, mean2d, conic, op, col, I, tiles_x, tiles_y, ts,
                                  element_budget(settings, means.device))
    return _untile(rgb, tiles_x, tiles_y, ts, width, height), _untile(trans, tiles_x, tiles_y, ts, width, height)


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
    ``w2c [B, C, 4, 4]``, ``K [B, C, 3, 3]``, ``backgrounds [B, C, 3]``. A slice's C images are projected
    together, in groups of at most ``settings.max_elements`` (image, Gaussian) pairs.
    """
    B, C = w2c.shape[:2]
    N = means.shape[1]
    group = max(1, element_budget(settings, means.device) // max(N, 1))
    rgb_rows, trans_rows = [], []
    for b in range(B):
        for c0 in range(0, C, group):
            cams = slice(c0, c0 + group)
            if sh_degree > 0:
                campos = torch.linalg.inv(w2c[b, cams])[:, :3, 3]
                col = sh_colors(means[b][None], sh[b][None], sh_degree, campos[:, None])  # [c, N, 3]
            else:
                col = sh_colors(means[b], sh[b], 0, None)
            rgb, trans = rasterize_images(means[b], covs[b], opacities[b], col, w2c[b, cams], K[b, cams], width,
                                          height, settings)
            rgb_rows.append(rgb)
            trans_rows.append(trans)
    rgb = torch.cat(rgb_rows).view(B, C, height, width, -1)
    trans = torch.cat(trans_rows).view(B, C, height, width, 1)
    return rgb + trans * backgrounds[:, :, None, None, :], 1.0 - trans


__all__ = ["RasterSettings", "composite", "composite_chunk", "rasterize_images", "sh_colors", "view_colors",
           "render_reference"]
