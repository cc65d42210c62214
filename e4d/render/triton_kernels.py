"""Triton kernels of the tile rasterizer: alpha compositing forward and backward, one program per 16x16 tile.

Imported only by :mod:`e4d.render.triton_backend` (importing e4d never needs triton). Whether the kernels run
compiled on a GPU or in Triton's CPU interpreter is fixed when this module is first imported
(``TRITON_INTERPRET=1`` then means the interpreter; :data:`INTERPRETED` records it).

Layout shared by both kernels (prepared by the backend):

* ``feat [G, 9]`` fp32 per projected Gaussian: mean x, mean y (pixels), conic a, b, c, opacity, r, g, b;
* ``ids [M]`` int32: Gaussian rows, grouped by tile (image-major) and depth-sorted inside each tile;
* ``offsets [I * n_tiles + 1]`` int32: tile ``t`` owns ``ids[offsets[t]:offsets[t + 1]]``;
* per-pixel images ``[I, H, W]`` (transmittance, ``last``) and colours planar ``[3, I, H, W]`` (``plane = I H W``):
  every per-pixel load and store is contiguous, so Triton keeps one register layout for the whole walk (with
  interleaved RGB it moved loop values through shared memory, with a barrier, for every Gaussian).

A program holds its tile's pixels as a ``[16, 16]`` block and walks the tile's Gaussians front to back, one at a
time, as gsplat's CUDA kernel does per thread: a Gaussian's nine features are uniform (scalar) loads and one alpha
per pixel costs one exp. The walk is unrolled ``BG`` Gaussians at a time (the loads of a group can be issued
together). Compositing stops, exclusively, at the first Gaussian that would bring the transmittance to <= 1e-4
(gsplat's rule). The forward stores per pixel the colour sum, the final transmittance and how many of the tile's
Gaussians reach it (``last``: index of its last contributor + 1).

The backward also walks front to back, up to the tile's largest ``last``: it recomputes the transmittance in
front of each Gaussian as the forward did (no division, no drift) and gets the colour behind it from the final
colour minus a running sum (only its dot product with the incoming colour gradient is needed: one running scalar
per pixel). A backward program is one warp (8 pixels per thread): a Gaussian's gradients are summed over each
thread's pixels, then over the lanes by shuffles, and added with one relaxed atomic per field. No shared memory,
no barrier: per-warp sums of a multi-warp block go through shared memory in Triton, and the default acq_rel
atomics fence and synchronise the block (the previous kernel paid both for every Gaussian and field).
"""
from __future__ import annotations

import inspect

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
    """Image index, pixel coordinates, in-image mask and pixel centres of program ``pid``'s tile, as ``[TS, TS]``
    blocks (row, column); with w warps, each warp holds a band of TS / w whole rows."""
    img = pid // n_tiles
    tile = pid % n_tiles
    px = (tile % tiles_x) * TS + tl.arange(0, TS)[None, :]
    py = (tile // tiles_x) * TS + tl.arange(0, TS)[:, None]
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
def _sigma2(dx, dy, ca, cb, cc):
    """``sigma / ln 2`` (Mahalanobis term in base 2: ``exp(-sigma) = exp2(-sigma2)``), with the per-Gaussian
    factors folded into three scalars so a pixel costs no extra multiply for the 0.5 or the change of base."""
    return (0.72134752044448170 * ca) * dx * dx + (0.72134752044448170 * cc) * dy * dy + (
        1.4426950408889634 * cb) * dx * dy


@triton.jit
def _add(ptr, value, valid):
    """``*ptr += value`` where ``valid``; relaxed (acq_rel, the default, fences and syncs the block). Walked
    Gaussians reach the tile, so a zero sum is rare: skipping zeros would only add a branch per atomic."""
    tl.atomic_add(ptr, value, mask=valid, sem="relaxed")


@triton.jit
def composite_forward(feat_ptr, ids_ptr, offsets_ptr, color_ptr, trans_ptr, last_ptr, height, width, tiles_x,
                      n_tiles, plane, BG: tl.constexpr, TS: tl.constexpr):
    pid = tl.program_id(0)
    img, px, py, inside, fx, fy = _tile_pixels(pid, n_tiles, tiles_x, height, width, TS)
    start = tl.load(offsets_ptr + pid)
    end = tl.load(offsets_ptr + pid + 1)
    T = tl.where(inside, 1.0, 1.0)
    acc_r = tl.zeros_like(T)
    acc_g = tl.zeros_like(T)
    acc_b = tl.zeros_like(T)
    last = tl.zeros([TS, TS], tl.int32)
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
            sigma2 = _sigma2(dx, dy, ca, cb, cc)
            alpha = tl.minimum(op * tl.exp2(-sigma2), 0.999)
            ok = active & (sigma2 >= 0.0) & (alpha >= 1.0 / 255.0) & valid
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
    tl.store(color_ptr + pix, acc_r, mask=inside)
    tl.store(color_ptr + plane + pix, acc_g, mask=inside)
    tl.store(color_ptr + plane + plane + pix, acc_b, mask=inside)
    tl.store(trans_ptr + pix, T, mask=inside)
    tl.store(last_ptr + pix, last, mask=inside)


@triton.jit
def composite_backward(feat_ptr, ids_ptr, offsets_ptr, color_ptr, trans_ptr, last_ptr, v_color_ptr, v_trans_ptr,
                       grad_ptr, height, width, tiles_x, n_tiles, plane, BG: tl.constexpr, TS: tl.constexpr):
    """Gradients of the nine features (added into ``grad [G, 9]``) from those of the colour sum and transmittance.

    With ``T_j`` the transmittance in front of contributor ``j``, ``w_j = alpha_j T_j``, ``s_j`` the dot product
    of its colour with the pixel's colour gradient and ``F_j = sum_{k <= j} w_k s_k``:
    ``d loss / d alpha_j = T_j s_j - (v_color . color - F_j + v_trans T_final) / (1 - alpha_j)``."""
    pid = tl.program_id(0)
    img, px, py, inside, fx, fy = _tile_pixels(pid, n_tiles, tiles_x, height, width, TS)
    pix = (img.to(tl.int64) * height + py) * width + px
    start = tl.load(offsets_ptr + pid)
    last = tl.load(last_ptr + pix, mask=inside, other=0)
    v_r = tl.load(v_color_ptr + pix, mask=inside, other=0.0)
    v_g = tl.load(v_color_ptr + plane + pix, mask=inside, other=0.0)
    v_b = tl.load(v_color_ptr + plane + plane + pix, mask=inside, other=0.0)
    behind = (v_r * tl.load(color_ptr + pix, mask=inside, other=0.0)
              + v_g * tl.load(color_ptr + plane + pix, mask=inside, other=0.0)
              + v_b * tl.load(color_ptr + plane + plane + pix, mask=inside, other=0.0)
              + tl.load(v_trans_ptr + pix, mask=inside, other=0.0) * tl.load(trans_ptr + pix, mask=inside, other=1.0))
    T = tl.where(inside, 1.0, 1.0)
    stop = start + tl.max(last)  # one past the last Gaussian any pixel of the tile takes
    j0 = start
    while j0 < stop:
        for k in tl.static_range(BG):
            j = j0 + k
            valid = j < stop
            row, mx, my, ca, cb, cc, op, cr, cg, cbl = _gaussian(feat_ptr, ids_ptr, j, valid)
            dx = mx - fx
            dy = my - fy
            sigma2 = _sigma2(dx, dy, ca, cb, cc)
            vis = tl.exp2(-sigma2)
            raw = op * vis
            alpha = tl.minimum(raw, 0.999)
            ok = (j - start < last) & (sigma2 >= 0.0) & (alpha >= 1.0 / 255.0)
            w = tl.where(ok, alpha * T, 0.0)
            s = cr * v_r + cg * v_g + cbl * v_b
            behind -= w * s  # now the colour gradient's dot product with the colour behind j, plus v_trans T_final
            v_alpha = tl.where(ok & (raw <= 0.999), T * s - behind / (1.0 - alpha), 0.0)  # clamped: no gradient
            T = tl.where(ok, T * (1.0 - alpha), T)
            v_sigma = -raw * v_alpha  # d loss / d sigma (natural units: the conic derivatives below use it)
            sx = tl.sum(v_sigma * dx)
            sy = tl.sum(v_sigma * dy)
            _add(grad_ptr + row, ca * sx + cb * sy, valid)
            _add(grad_ptr + row + 1, cb * sx + cc * sy, valid)
            _add(grad_ptr + row + 2, 0.5 * tl.sum(v_sigma * dx * dx), valid)
            _add(grad_ptr + row + 3, tl.sum(v_sigma * dx * dy), valid)
            _add(grad_ptr + row + 4, 0.5 * tl.sum(v_sigma * dy * dy), valid)
            _add(grad_ptr + row + 5, tl.sum(v_alpha * vis), valid)
            _add(grad_ptr + row + 6, tl.sum(w * v_r), valid)
            _add(grad_ptr + row + 7, tl.sum(w * v_g), valid)
            _add(grad_ptr + row + 8, tl.sum(w * v_b), valid)
        j0 += BG


FORWARD_CONFIGS = ((8, 4), (16, 4), (8, 2), (16, 8))
"""(Gaussians per unrolled group, warps) of the forward kernel that :data:`composite_forward_tuned` times (on the
H200, one-warp forwards took 1.7 x as long as four-warp ones at the fit's shape and were never chosen)."""
BACKWARD_CONFIGS = ((1, None), (2, None), (4, None), (2, 104), (2, 96))
"""(Gaussians per unrolled group, register cap or None) of the one-warp backward that
:data:`composite_backward_tuned` times. Uncapped it takes about 130 registers (15 warps per SM); the capped shapes
trade a few spills to L1 for occupancy. Caps are CUDA-only, dropped elsewhere (ROCm)."""


def _cuda_only_caps(configs, named_args, **kwargs):
    """The autotuner's early pruning: keep register caps only where the active Triton backend is CUDA."""
    if triton.runtime.driver.active.get_current_target().backend == "cuda":
        return configs
    return [c for c in configs if c.maxnreg is None]


def _autotune(configs, **kwargs):
    """``triton.autotune`` keeping its choice on disk where this Triton can (``cache_results``, Triton >= 3.3): the
    timings are then paid once per machine and image size, not at the first fit of every process. The file goes
    to Triton's own kernel cache (``TRITON_CACHE_DIR``, default ``~/.triton/cache``) beside the compiled kernels."""
    if "cache_results" in inspect.signature(triton.autotune).parameters:
        kwargs["cache_results"] = True
    return triton.autotune(configs, **kwargs)


composite_forward_tuned = _autotune(
    [triton.Config({"BG": bg}, num_warps=w) for bg, w in FORWARD_CONFIGS],
    key=["height", "width"])(composite_forward)
"""The forward with the fastest of :data:`FORWARD_CONFIGS` for the image size, timed on its first call (the GPU's
first render of that size; compiled kernels are cached on disk by Triton)."""
composite_backward_tuned = _autotune(
    [triton.Config({"BG": bg}, num_warps=1, maxnreg=cap) for bg, cap in BACKWARD_CONFIGS],
    key=["height", "width"], reset_to_zero=["grad_ptr"],
    prune_configs_by={"early_config_prune": _cuda_only_caps})(composite_backward)
"""The backward with the fastest of :data:`BACKWARD_CONFIGS` (``grad`` is zeroed between the timed runs)."""
