"""Triton kernels of the tile rasterizer: alpha compositing forward and backward, one program per 16x16 tile.

Imported only by :mod:`e4d.render.triton_backend` (importing e4d never needs triton). Whether the kernels run
compiled on a GPU or in Triton's CPU interpreter is fixed when this module is first imported
(``TRITON_INTERPRET=1`` then means the interpreter; :data:`INTERPRETED` records it).

Layout shared by both kernels (prepared in torch by the backend):

* ``feat [G, 9]`` fp32 per projected Gaussian: mean x, mean y (pixels), conic a, b, c, opacity, r, g, b;
* ``ids [M]`` int32: Gaussian rows, grouped by tile (image-major) and depth-sorted inside each tile;
* ``offsets [I * n_tiles + 1]`` int32: tile ``t`` owns ``ids[offsets[t]:offsets[t + 1]]``.

A program loads its tile's Gaussians in chunks of ``BG`` and evaluates a ``[256, BG]`` block of alphas; the
front-to-back products inside a chunk are ``exp(cumsum(log(1 - alpha)))``, so a chunk is a few vector ops
instead of ``BG`` dependent steps. Compositing stops, exclusively, at the first Gaussian that would bring the
transmittance to <= 1e-4 (gsplat's rule); the forward stores, per pixel, the colour sum, the final
transmittance and how many of the tile's Gaussians it walked (``count``). The backward walks the same Gaussians
front to back again: the colour behind Gaussian j is the stored colour sum minus the colour up to j, which
avoids dividing the transmittance back by ``1 - alpha`` Gaussian after Gaussian. Per-Gaussian gradients are
summed over the tile's pixels first, then added with one atomic per Gaussian and field.
"""
from __future__ import annotations

import triton
import triton.language as tl
from triton import knobs

TILE = 16
"""Tile side in pixels (a program owns TILE * TILE pixels)."""
FEATURES = 9
"""Columns of ``feat``: mean x, mean y, conic a, b, c, opacity, r, g, b."""
INTERPRETED = bool(knobs.runtime.interpret)
"""True when the kernels below were built for Triton's CPU interpreter."""


@triton.jit
def _chunk(feat_ptr, row, inb, fx, fy):
    """Features of a chunk of Gaussians (rows ``row``, ``inb`` in range) and, for every pixel centre ``(fx, fy)``,
    the offsets ``dx, dy`` and the Mahalanobis half-distance ``sigma`` (``[pixels, BG]``)."""
    mx = tl.load(feat_ptr + row, mask=inb, other=0.0)
    my = tl.load(feat_ptr + row + 1, mask=inb, other=0.0)
    ca = tl.load(feat_ptr + row + 2, mask=inb, other=0.0)
    cb = tl.load(feat_ptr + row + 3, mask=inb, other=0.0)
    cc = tl.load(feat_ptr + row + 4, mask=inb, other=0.0)
    op = tl.load(feat_ptr + row + 5, mask=inb, other=0.0)
    cr = tl.load(feat_ptr + row + 6, mask=inb, other=0.0)
    cg = tl.load(feat_ptr + row + 7, mask=inb, other=0.0)
    cbl = tl.load(feat_ptr + row + 8, mask=inb, other=0.0)
    dx = mx[None, :] - fx[:, None]
    dy = my[None, :] - fy[:, None]
    sigma = 0.5 * (ca[None, :] * dx * dx + cc[None, :] * dy * dy) + cb[None, :] * dx * dy
    return ca, cb, cc, op, cr, cg, cbl, dx, dy, sigma


@triton.jit
def composite_forward(feat_ptr, ids_ptr, offsets_ptr, color_ptr, trans_ptr, count_ptr, height, width, tiles_x,
                      n_tiles, BG: tl.constexpr, TS: tl.constexpr):
    pid = tl.program_id(0)
    img = pid // n_tiles
    tile = pid % n_tiles
    p = tl.arange(0, TS * TS)
    px = (tile % tiles_x) * TS + p % TS
    py = (tile // tiles_x) * TS + p // TS
    inside = (px < width) & (py < height)
    fx = px.to(tl.float32) + 0.5
    fy = py.to(tl.float32) + 0.5
    start = tl.load(offsets_ptr + pid)
    end = tl.load(offsets_ptr + pid + 1)
    T = tl.full([TS * TS], 1.0, tl.float32)
    acc_r = tl.zeros([TS * TS], tl.float32)
    acc_g = tl.zeros([TS * TS], tl.float32)
    acc_b = tl.zeros([TS * TS], tl.float32)
    count = tl.zeros([TS * TS], tl.int32) + (end - start)
    done = inside == 0
    alive = tl.sum(inside.to(tl.int32), axis=0)
    j0 = start
    while (j0 < end) & (alive > 0):
        offs = j0 + tl.arange(0, BG)
        inb = offs < end
        row = tl.load(ids_ptr + offs, mask=inb, other=0).to(tl.int64) * 9
        ca, cb, cc, op, cr, cg, cbl, dx, dy, sigma = _chunk(feat_ptr, row, inb, fx, fy)
        alpha = tl.minimum(op[None, :] * tl.exp(-sigma), 0.999)
        ok = (sigma >= 0.0) & (alpha >= 1.0 / 255.0) & inb[None, :] & (done == 0)[:, None]
        alpha = tl.where(ok, alpha, 0.0)
        log_t = tl.log(1.0 - alpha)
        cum = tl.cumsum(log_t, axis=1)
        keep = T[:, None] * tl.exp(cum) > 1e-4  # a prefix of the chunk: the product never increases
        w = tl.where(keep, alpha * T[:, None] * tl.exp(cum - log_t), 0.0)
        acc_r += tl.sum(w * cr[None, :], axis=1)
        acc_g += tl.sum(w * cg[None, :], axis=1)
        acc_b += tl.sum(w * cbl[None, :], axis=1)
        n_keep = tl.sum(keep.to(tl.int32), axis=1)
        stop = (n_keep < BG) & (done == 0)
        count = tl.where(stop, j0 - start + n_keep, count)
        T = T * tl.exp(tl.sum(tl.where(keep, log_t, 0.0), axis=1))
        done = done | stop
        alive = tl.sum((done == 0).to(tl.int32), axis=0)
        j0 += BG
    pix = (img.to(tl.int64) * height + py) * width + px
    tl.store(color_ptr + pix * 3, acc_r, mask=inside)
    tl.store(color_ptr + pix * 3 + 1, acc_g, mask=inside)
    tl.store(color_ptr + pix * 3 + 2, acc_b, mask=inside)
    tl.store(trans_ptr + pix, T, mask=inside)
    tl.store(count_ptr + pix, count, mask=inside)


@triton.jit
def composite_backward(feat_ptr, ids_ptr, offsets_ptr, color_ptr, trans_ptr, count_ptr, v_color_ptr, v_trans_ptr,
                       grad_ptr, height, width, tiles_x, n_tiles, BG: tl.constexpr, TS: tl.constexpr):
    pid = tl.program_id(0)
    img = pid // n_tiles
    tile = pid % n_tiles
    p = tl.arange(0, TS * TS)
    px = (tile % tiles_x) * TS + p % TS
    py = (tile // tiles_x) * TS + p // TS
    inside = (px < width) & (py < height)
    fx = px.to(tl.float32) + 0.5
    fy = py.to(tl.float32) + 0.5
    pix = (img.to(tl.int64) * height + py) * width + px
    start = tl.load(offsets_ptr + pid)
    count = tl.load(count_ptr + pix, mask=inside, other=0)
    T_final = tl.load(trans_ptr + pix, mask=inside, other=1.0)
    tot_r = tl.load(color_ptr + pix * 3, mask=inside, other=0.0)
    tot_g = tl.load(color_ptr + pix * 3 + 1, mask=inside, other=0.0)
    tot_b = tl.load(color_ptr + pix * 3 + 2, mask=inside, other=0.0)
    v_r = tl.load(v_color_ptr + pix * 3, mask=inside, other=0.0)
    v_g = tl.load(v_color_ptr + pix * 3 + 1, mask=inside, other=0.0)
    v_b = tl.load(v_color_ptr + pix * 3 + 2, mask=inside, other=0.0)
    v_T = tl.load(v_trans_ptr + pix, mask=inside, other=0.0) * T_final
    T = tl.full([TS * TS], 1.0, tl.float32)
    run_r = tl.zeros([TS * TS], tl.float32)
    run_g = tl.zeros([TS * TS], tl.float32)
    run_b = tl.zeros([TS * TS], tl.float32)
    stop = start + tl.max(count, axis=0)
    j0 = start
    while j0 < stop:
        offs = j0 + tl.arange(0, BG)
        inb = offs < stop
        gid = tl.load(ids_ptr + offs, mask=inb, other=0).to(tl.int64)
        row = gid * 9
        ca, cb, cc, op, cr, cg, cbl, dx, dy, sigma = _chunk(feat_ptr, row, inb, fx, fy)
        vis = tl.exp(-sigma)
        raw = op[None, :] * vis
        alpha = tl.minimum(raw, 0.999)
        pos = (offs - start)[None, :]
        ok = (sigma >= 0.0) & (alpha >= 1.0 / 255.0) & inb[None, :] & (pos < count[:, None])
        alpha = tl.where(ok, alpha, 0.0)
        log_t = tl.log(1.0 - alpha)
        cum = tl.cumsum(log_t, axis=1)
        T_before = T[:, None] * tl.exp(cum - log_t)
        w = alpha * T_before
        wr = w * cr[None, :]
        wg = w * cg[None, :]
        wb = w * cbl[None, :]
        # colour behind each Gaussian = total - colour up to and including it
        behind_r = tot_r[:, None] - run_r[:, None] - tl.cumsum(wr, axis=1)
        behind_g = tot_g[:, None] - run_g[:, None] - tl.cumsum(wg, axis=1)
        behind_b = tot_b[:, None] - run_b[:, None] - tl.cumsum(wb, axis=1)
        inv = 1.0 / (1.0 - alpha)
        v_alpha = (v_r[:, None] * (cr[None, :] * T_before - behind_r * inv)
                   + v_g[:, None] * (cg[None, :] * T_before - behind_g * inv)
                   + v_b[:, None] * (cbl[None, :] * T_before - behind_b * inv)
                   - v_T[:, None] * inv)
        grow = ok & (raw <= 0.999)  # a clamped alpha passes no gradient to opacity or shape (as gsplat)
        v_alpha = tl.where(grow, v_alpha, 0.0)
        v_sigma = -v_alpha * alpha
        g_mx = tl.sum(v_sigma * (ca[None, :] * dx + cb[None, :] * dy), axis=0)
        g_my = tl.sum(v_sigma * (cb[None, :] * dx + cc[None, :] * dy), axis=0)
        g_ca = tl.sum(0.5 * v_sigma * dx * dx, axis=0)
        g_cb = tl.sum(v_sigma * dx * dy, axis=0)
        g_cc = tl.sum(0.5 * v_sigma * dy * dy, axis=0)
        g_op = tl.sum(v_alpha * vis, axis=0)
        g_r = tl.sum(v_r[:, None] * w, axis=0)
        g_g = tl.sum(v_g[:, None] * w, axis=0)
        g_b = tl.sum(v_b[:, None] * w, axis=0)
        tl.atomic_add(grad_ptr + row, g_mx, mask=inb)
        tl.atomic_add(grad_ptr + row + 1, g_my, mask=inb)
        tl.atomic_add(grad_ptr + row + 2, g_ca, mask=inb)
        tl.atomic_add(grad_ptr + row + 3, g_cb, mask=inb)
        tl.atomic_add(grad_ptr + row + 4, g_cc, mask=inb)
        tl.atomic_add(grad_ptr + row + 5, g_op, mask=inb)
        tl.atomic_add(grad_ptr + row + 6, g_r, mask=inb)
        tl.atomic_add(grad_ptr + row + 7, g_g, mask=inb)
        tl.atomic_add(grad_ptr + row + 8, g_b, mask=inb)
        T = T * tl.exp(tl.sum(log_t, axis=1))
        run_r += tl.sum(wr, axis=1)
        run_g += tl.sum(wg, axis=1)
        run_b += tl.sum(wb, axis=1)
        j0 += BG
