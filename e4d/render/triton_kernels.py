"""Triton kernels of the tile rasterizer: alpha compositing forward and backward, one program per 16x16 tile.

Imported only by :mod:`e4d.render.triton_backend` (importing e4d never needs triton). Whether the kernels run
compiled on a GPU or in Triton's CPU interpreter is fixed when this module is first imported
(``TRITON_INTERPRET=1`` then means the interpreter; :data:`INTERPRETED` records it).

Layout shared by both kernels (prepared by the backend):

* ``feat [G, 9]`` fp32 per projected Gaussian: mean x, mean y (pixels), conic a, b, c, opacity, r, g, b;
* ``ids [M]`` int32: Gaussian rows, grouped by tile (image-major) and depth-sorted inside each tile;
* ``offsets [I * n_tiles + 1]`` int32: tile ``t`` owns ``ids[offsets[t]:offsets[t + 1]]``.

A program holds its 256 pixels as vectors and walks its tile's Gaussians one at a time, as gsplat's CUDA kernel
does per thread: a Gaussian's nine features are uniform (scalar) loads, and one alpha per pixel costs one exp.
The walk is unrolled ``BG`` Gaussians at a time (the loads of a group can be issued together) and stops when
every pixel of the tile is finished. Compositing stops, exclusively, at the first Gaussian that would bring the
transmittance to <= 1e-4 (gsplat's rule). The forward stores per pixel the colour sum, the final transmittance
and how many of the tile's Gaussians reach it (``last``: index of its last contributor + 1). The backward walks
back to front from the tile's largest ``last``, recovering the transmittance in front of each Gaussian by
division (``alpha <= 0.999``) and the colour behind it as a running sum; a Gaussian's gradients are summed over
each warp's pixels in registers and added with one atomic per warp and field (or summed over the tile first:
the autotuned configurations time both). Pixels are held as ``[8, 32]`` blocks so that a row is one warp.
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
def _tile_pixels(pid, n_tiles, tiles_x, height, width, TS: tl.constexpr):
    """Image index, pixel coordinates, in-image mask and pixel centres of program ``pid``'s tile, as
    ``[TS * TS / 32, 32]`` blocks: a row of 32 pixels lives in one warp, so a sum along axis 1 stays in the warp."""
    img = pid // n_tiles
    tile = pid % n_tiles
    p = tl.arange(0, TS * TS // 32)[:, None] * 32 + tl.arange(0, 32)[None, :]
    px = (tile % tiles_x) * TS + p % TS
    py = (tile // tiles_x) * TS + p // TS
    inside = (px < width) & (py < height)
    return img, px, py, inside, px.to(tl.float32) + 0.5, py.to(tl.float32) + 0.5


@triton.jit
def _gaussian(feat_ptr, ids_ptr, j, valid):
    """Row offset and the nine features of the Gaussian at list position ``j`` (row 0 where not ``valid``)."""
    row = tl.load(ids_ptr + j, mask=valid, other=0).to(tl.int64) * 9
    return (row, tl.load(feat_ptr + row), tl.load(feat_ptr + row + 1), tl.load(feat_ptr + row + 2),
            tl.load(feat_ptr + row + 3), tl.load(feat_ptr + row + 4), tl.load(feat_ptr + row + 5),
            tl.load(feat_ptr + row + 6), tl.load(feat_ptr + row + 7), tl.load(feat_ptr + row + 8))


@triton.jit
def _add9(a0, a1, a2, a3, a4, a5, a6, a7, a8, b0, b1, b2, b3, b4, b5, b6, b7, b8):
    return a0 + b0, a1 + b1, a2 + b2, a3 + b3, a4 + b4, a5 + b5, a6 + b6, a7 + b7, a8 + b8


@triton.jit
def _add_grads(grad_ptr, row, valid, g0, g1, g2, g3, g4, g5, g6, g7, g8, ROWS: tl.constexpr,
               WARP_PARTIALS: tl.constexpr):
    """Add one Gaussian's nine per-pixel gradient blocks ``[ROWS, 32]`` to ``grad[row:row + 9]``: sums along the
    warp axis, then either one atomic per warp row and field (no block-wide barrier; rows whose sum is 0 are
    skipped) or one block-wide reduction of all nine and one atomic per field."""
    s0 = tl.sum(g0, axis=1)
    s1 = tl.sum(g1, axis=1)
    s2 = tl.sum(g2, axis=1)
    s3 = tl.sum(g3, axis=1)
    s4 = tl.sum(g4, axis=1)
    s5 = tl.sum(g5, axis=1)
    s6 = tl.sum(g6, axis=1)
    s7 = tl.sum(g7, axis=1)
    s8 = tl.sum(g8, axis=1)
    if WARP_PARTIALS:
        ptr = grad_ptr + row + tl.zeros([ROWS], tl.int64)
        valid = (tl.zeros([ROWS], tl.int32) + valid.to(tl.int32)) != 0  # a vector mask (the interpreter needs it)
        tl.atomic_add(ptr, s0, mask=valid & (s0 != 0.0))
        tl.atomic_add(ptr + 1, s1, mask=valid & (s1 != 0.0))
        tl.atomic_add(ptr + 2, s2, mask=valid & (s2 != 0.0))
        tl.atomic_add(ptr + 3, s3, mask=valid & (s3 != 0.0))
        tl.atomic_add(ptr + 4, s4, mask=valid & (s4 != 0.0))
        tl.atomic_add(ptr + 5, s5, mask=valid & (s5 != 0.0))
        tl.atomic_add(ptr + 6, s6, mask=valid & (s6 != 0.0))
        tl.atomic_add(ptr + 7, s7, mask=valid & (s7 != 0.0))
        tl.atomic_add(ptr + 8, s8, mask=valid & (s8 != 0.0))
    else:
        t0, t1, t2, t3, t4, t5, t6, t7, t8 = tl.reduce((s0, s1, s2, s3, s4, s5, s6, s7, s8), 0, _add9)
        tl.atomic_add(grad_ptr + row, t0, mask=valid)
        tl.atomic_add(grad_ptr + row + 1, t1, mask=valid)
        tl.atomic_add(grad_ptr + row + 2, t2, mask=valid)
        tl.atomic_add(grad_ptr + row + 3, t3, mask=valid)
        tl.atomic_add(grad_ptr + row + 4, t4, mask=valid)
        tl.atomic_add(grad_ptr + row + 5, t5, mask=valid)
        tl.atomic_add(grad_ptr + row + 6, t6, mask=valid)
        tl.atomic_add(grad_ptr + row + 7, t7, mask=valid)
        tl.atomic_add(grad_ptr + row + 8, t8, mask=valid)


@triton.jit
def composite_forward(feat_ptr, ids_ptr, offsets_ptr, color_ptr, trans_ptr, last_ptr, height, width, tiles_x,
                      n_tiles, BG: tl.constexpr, TS: tl.constexpr):
    pid = tl.program_id(0)
    img, px, py, inside, fx, fy = _tile_pixels(pid, n_tiles, tiles_x, height, width, TS)
    start = tl.load(offsets_ptr + pid)
    end = tl.load(offsets_ptr + pid + 1)
    T = tl.full([TS * TS // 32, 32], 1.0, tl.float32)
    acc_r = tl.zeros([TS * TS // 32, 32], tl.float32)
    acc_g = tl.zeros([TS * TS // 32, 32], tl.float32)
    acc_b = tl.zeros([TS * TS // 32, 32], tl.float32)
    last = tl.zeros([TS * TS // 32, 32], tl.int32)
    active = inside
    alive = tl.sum(active.to(tl.int32))
    j0 = start
    while (j0 < end) & (alive > 0):
        for k in tl.static_range(BG):
            j = j0 + k
            valid = j < end
            row, mx, my, ca, cb, cc, op, cr, cg, cbl = _gaussian(feat_ptr, ids_ptr, j, valid)
            dx = mx - fx
            dy = my - fy
            sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
            alpha = tl.minimum(op * tl.exp(-sigma), 0.999)
            ok = active & (sigma >= 0.0) & (alpha >= 1.0 / 255.0) & valid
            next_T = T * (1.0 - alpha)
            stop = ok & (next_T <= 1e-4)
            active = active & (stop == 0)
            ok = ok & (stop == 0)
            w = tl.where(ok, alpha * T, 0.0)
            acc_r += w * cr
            acc_g += w * cg
            acc_b += w * cbl
            T = tl.where(ok, next_T, T)
            last = tl.where(ok, j - start + 1, last)
        alive = tl.sum(active.to(tl.int32))
        j0 += BG
    pix = (img.to(tl.int64) * height + py) * width + px
    tl.store(color_ptr + pix * 3, acc_r, mask=inside)
    tl.store(color_ptr + pix * 3 + 1, acc_g, mask=inside)
    tl.store(color_ptr + pix * 3 + 2, acc_b, mask=inside)
    tl.store(trans_ptr + pix, T, mask=inside)
    tl.store(last_ptr + pix, last, mask=inside)


@triton.jit
def composite_backward(feat_ptr, ids_ptr, offsets_ptr, trans_ptr, last_ptr, v_color_ptr, v_trans_ptr, grad_ptr,
                       height, width, tiles_x, n_tiles, BG: tl.constexpr, TS: tl.constexpr,
                       WARP_PARTIALS: tl.constexpr):
    pid = tl.program_id(0)
    img, px, py, inside, fx, fy = _tile_pixels(pid, n_tiles, tiles_x, height, width, TS)
    pix = (img.to(tl.int64) * height + py) * width + px
    start = tl.load(offsets_ptr + pid)
    last = tl.load(last_ptr + pix, mask=inside, other=0)
    T_final = tl.load(trans_ptr + pix, mask=inside, other=1.0)
    v_r = tl.load(v_color_ptr + pix * 3, mask=inside, other=0.0)
    v_g = tl.load(v_color_ptr + pix * 3 + 1, mask=inside, other=0.0)
    v_b = tl.load(v_color_ptr + pix * 3 + 2, mask=inside, other=0.0)
    v_Tf = tl.load(v_trans_ptr + pix, mask=inside, other=0.0) * T_final  # d loss / d log T_final
    T = T_final
    buf_r = tl.zeros([TS * TS // 32, 32], tl.float32)
    buf_g = tl.zeros([TS * TS // 32, 32], tl.float32)
    buf_b = tl.zeros([TS * TS // 32, 32], tl.float32)
    jb = start + tl.max(last)  # one past the last Gaussian any pixel of the tile takes
    while jb > start:
        for k in tl.static_range(BG):
            j = jb - 1 - k
            valid = j >= start
            row, mx, my, ca, cb, cc, op, cr, cg, cbl = _gaussian(feat_ptr, ids_ptr, j, valid)
            dx = mx - fx
            dy = my - fy
            sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
            vis = tl.exp(-sigma)
            raw = op * vis
            alpha = tl.minimum(raw, 0.999)
            ok = (j - start < last) & (sigma >= 0.0) & (alpha >= 1.0 / 255.0) & valid
            ra = 1.0 / (1.0 - alpha)
            T = tl.where(ok, T * ra, T)  # transmittance in front of this Gaussian
            w = tl.where(ok, alpha * T, 0.0)
            v_alpha = ((cr * T - buf_r * ra) * v_r + (cg * T - buf_g * ra) * v_g + (cbl * T - buf_b * ra) * v_b
                       - v_Tf * ra)
            v_alpha = tl.where(ok & (raw <= 0.999), v_alpha, 0.0)  # a clamped alpha passes no gradient (gsplat)
            v_sigma = -raw * v_alpha
            _add_grads(grad_ptr, row, valid, v_sigma * (ca * dx + cb * dy), v_sigma * (cb * dx + cc * dy),
                       0.5 * v_sigma * dx * dx, v_sigma * dx * dy, 0.5 * v_sigma * dy * dy, v_alpha * vis,
                       w * v_r, w * v_g, w * v_b, TS * TS // 32, WARP_PARTIALS)
            buf_r += w * cr
            buf_g += w * cg
            buf_b += w * cbl
        jb -= BG


FORWARD_CONFIGS = ((8, 4), (16, 4))
"""(Gaussians per unrolled group, warps) of the forward kernel that :data:`composite_forward_tuned` times."""
BACKWARD_CONFIGS = ((4, 4, True), (4, 4, False), (8, 4, True), (4, 8, True))
"""(Gaussians per unrolled group, warps, per-warp atomics) of the backward that :data:`composite_backward_tuned`
times."""

composite_forward_tuned = triton.autotune(
    [triton.Config({"BG": bg}, num_warps=w) for bg, w in FORWARD_CONFIGS], key=["height", "width"])(composite_forward)
"""The forward with the fastest of :data:`FORWARD_CONFIGS` for the image size, timed on its first call (the GPU's
first render of that size; compiled kernels are cached on disk by Triton)."""
composite_backward_tuned = triton.autotune(
    [triton.Config({"BG": bg, "WARP_PARTIALS": wp}, num_warps=w) for bg, w, wp in BACKWARD_CONFIGS],
    key=["height", "width"], reset_to_zero=["grad_ptr"])(composite_backward)
"""The backward with the fastest of :data:`BACKWARD_CONFIGS` (``grad`` is zeroed between the timed runs)."""
