"""Triton kernels of the projection and tile binning: one pass over every (image, Gaussian) pair, no host sync.

Imported only by :mod:`e4d.render.triton_backend`. The maths is :mod:`e4d.render.projection` (gsplat 1.5.3's
classic EWA projection), evaluated per pair ``p = image * N + n`` in registers:

* :func:`project_forward` writes the compositing features ``feat [P, 9]`` (mean x, y, conic a, b, c, opacity,
  r, g, b), the camera depth ``[P]``, the pair's tile box ``[P, 4]`` (x0, y0, x1, y1; tiles ``[x0, x1) x [y0, y1)``),
  which of the box's tiles the ellipse alpha >= 1/255 actually reaches (``hits [P]``, bit i = tile i of the box in
  row-major order; boxes of more than 32 tiles keep all) and the tile count ``[P]`` (0 when culled: outside the
  near/far planes, opacity < 1/255, non-positive 2D determinant or no tile reached). The axis-aligned box of a
  thin, tilted ellipse holds many tiles it misses (a quarter of the (tile, Gaussian) pairs of a fitted CesiumMan
  scene); the compositing kernels would walk them for nothing;
* :func:`emit_keys` writes one ``(image tile << 32) | depth bits`` key per (pair, reached tile) at the pair's offset, so
  a single sort orders every list by tile, then depth (positive fp32 depths sort as their bit patterns);
* :func:`project_backward` recomputes the projection and applies the chain rule from the gradients of ``feat``
  to camera-space means and covariances, then to world space (``v_means [P, 3]``, ``v_covs [P, 6]``: the
  symmetric gradient's entries xx, xy, xz, yy, yz, zz).
"""
from __future__ import annotations

import triton
import triton.language as tl

# The kernels below do not specialise on the pair count P, the Gaussian count N or the camera count C: they change
# within a fit (densification changes N, evaluation C), and Triton compiles a new variant of a kernel whenever such
# an argument turns divisible by 16 or equal to 1, in the middle of the fit (about a second each).


@triton.jit
def _camera(w2c_ptr, K_ptr, img, mask):
    """Rotation (row-major), translation and intrinsics fx, fy, cx, cy of image ``img``."""
    w = w2c_ptr + img * 16
    k = K_ptr + img * 9
    return (tl.load(w, mask=mask, other=1.0), tl.load(w + 1, mask=mask, other=0.0),
            tl.load(w + 2, mask=mask, other=0.0), tl.load(w + 4, mask=mask, other=0.0),
            tl.load(w + 5, mask=mask, other=1.0), tl.load(w + 6, mask=mask, other=0.0),
            tl.load(w + 8, mask=mask, other=0.0), tl.load(w + 9, mask=mask, other=0.0),
            tl.load(w + 10, mask=mask, other=1.0), tl.load(w + 3, mask=mask, other=0.0),
            tl.load(w + 7, mask=mask, other=0.0), tl.load(w + 11, mask=mask, other=1.0),
            tl.load(k, mask=mask, other=1.0), tl.load(k + 4, mask=mask, other=1.0),
            tl.load(k + 2, mask=mask, other=0.0), tl.load(k + 5, mask=mask, other=0.0))


@triton.jit
def _sandwich(a00, a01, a02, a10, a11, a12, a20, a21, a22, s00, s01, s02, s11, s12, s22):
    """Symmetric ``A S A^T`` (entries 00, 01, 02, 11, 12, 22) of a 3x3 ``A`` and a symmetric ``S``."""
    m00 = a00 * s00 + a01 * s01 + a02 * s02
    m01 = a00 * s01 + a01 * s11 + a02 * s12
    m02 = a00 * s02 + a01 * s12 + a02 * s22
    m10 = a10 * s00 + a11 * s01 + a12 * s02
    m11 = a10 * s01 + a11 * s11 + a12 * s12
    m12 = a10 * s02 + a11 * s12 + a12 * s22
    m20 = a20 * s00 + a21 * s01 + a22 * s02
    m21 = a20 * s01 + a21 * s11 + a22 * s12
    m22 = a20 * s02 + a21 * s12 + a22 * s22
    return (m00 * a00 + m01 * a01 + m02 * a02, m00 * a10 + m01 * a11 + m02 * a12, m00 * a20 + m01 * a21 + m02 * a22,
            m10 * a10 + m11 * a11 + m12 * a12, m10 * a20 + m11 * a21 + m12 * a22, m20 * a20 + m21 * a21 + m22 * a22)


@triton.jit
def _inputs(means_ptr, covs_ptr, opac_ptr, w2c_ptr, K_ptr, p, P, N, C):
    """Per pair: validity, image, Gaussian row, opacity, camera, camera-space mean and covariance."""
    valid = p < P
    img = p // N
    g = (img // C) * N + p % N
    mx = tl.load(means_ptr + g * 3, mask=valid, other=0.0)
    my = tl.load(means_ptr + g * 3 + 1, mask=valid, other=0.0)
    mz = tl.load(means_ptr + g * 3 + 2, mask=valid, other=0.0)
    s00 = tl.load(covs_ptr + g * 9, mask=valid, other=0.0)
    s01 = tl.load(covs_ptr + g * 9 + 1, mask=valid, other=0.0)
    s02 = tl.load(covs_ptr + g * 9 + 2, mask=valid, other=0.0)
    s11 = tl.load(covs_ptr + g * 9 + 4, mask=valid, other=0.0)
    s12 = tl.load(covs_ptr + g * 9 + 5, mask=valid, other=0.0)
    s22 = tl.load(covs_ptr + g * 9 + 8, mask=valid, other=0.0)
    op = tl.load(opac_ptr + g, mask=valid, other=0.0)
    r00, r01, r02, r10, r11, r12, r20, r21, r22, t0, t1, t2, fx, fy, cx, cy = _camera(w2c_ptr, K_ptr, img, valid)
    x = r00 * mx + r01 * my + r02 * mz + t0
    y = r10 * mx + r11 * my + r12 * mz + t1
    z = r20 * mx + r21 * my + r22 * mz + t2
    c00, c01, c02, c11, c12, c22 = _sandwich(r00, r01, r02, r10, r11, r12, r20, r21, r22, s00, s01, s02, s11, s12, s22)
    return (valid, img, op, r00, r01, r02, r10, r11, r12, r20, r21, r22, fx, fy, cx, cy, x, y, z,
            c00, c01, c02, c11, c12, c22)


@triton.jit
def _clamped(x, z, f, c, size):
    """``x / z`` clamped to 1.3x the field of view (gsplat), and whether it was inside the clamp."""
    tan_fov = 0.5 * size / f
    lim_pos = (size - c) / f + 0.3 * tan_fov
    lim_neg = c / f + 0.3 * tan_fov
    u = x / z
    return tl.minimum(lim_pos, tl.maximum(-lim_neg, u)), (u <= lim_pos) & (u >= -lim_neg)


@triton.jit
def _jacobian_cov2d(x, y, z, fx, fy, cx, cy, width, height, c00, c01, c02, c11, c12, c22, eps2d):
    """EWA: the projection's Jacobian ``J = [[j00, 0, j02], [0, j11, j12]]`` at the clamped image-plane point and
    the 2D covariance ``J Sigma_c J^T + eps2d I`` as ``[[a, b], [b, c]]``; ``inx``/``iny``: the point was inside
    the clamp (the backward routes position gradients through the Jacobian only there)."""
    ux, inx = _clamped(x, z, fx, cx, width)
    uy, iny = _clamped(y, z, fy, cy, height)
    j00 = fx / z
    j02 = -fx * ux / z
    j11 = fy / z
    j12 = -fy * uy / z
    a = j00 * j00 * c00 + 2.0 * j00 * j02 * c02 + j02 * j02 * c22 + eps2d
    b = j00 * j11 * c01 + j00 * j12 * c02 + j02 * j11 * c12 + j02 * j12 * c22
    c = j11 * j11 * c11 + 2.0 * j11 * j12 * c12 + j12 * j12 * c22 + eps2d
    return ux, uy, inx, iny, j00, j02, j11, j12, a, b, c


@triton.jit
def _tile_reached(u, v, qa, qb, qc, thr, tx, ty, width, height, TS: tl.constexpr):
    """Whether the ellipse ``sigma <= thr`` of a Gaussian at ``(u, v)`` with conic ``(qa, qb, qc)`` holds a pixel
    centre of tile ``(tx, ty)`` (clipped to the image). ``sigma`` is convex with its minimum 0 at the mean; over
    the rectangle of centres its minimum is 0 if the mean is inside, else it lies on one of the two edges facing
    the mean (the segment from any point to the mean leaves the rectangle through one of them), where the 1D
    minimum is a clamped vertex of a parabola."""
    x_lo = (tx * TS).to(tl.float32) + 0.5
    y_lo = (ty * TS).to(tl.float32) + 0.5
    x_hi = tl.minimum(x_lo + (TS - 1), width - 0.5)
    y_hi = tl.minimum(y_lo + (TS - 1), height - 0.5)
    dx_lo = u - x_hi
    dx_hi = u - x_lo
    dy_lo = v - y_hi
    dy_hi = v - y_lo
    ex = tl.minimum(tl.maximum(0.0, dx_lo), dx_hi)  # offset of the facing edge (0: the mean is within x range)
    ey = tl.minimum(tl.maximum(0.0, dy_lo), dy_hi)
    dy = tl.minimum(tl.maximum(-qb * ex / qc, dy_lo), dy_hi)
    dx = tl.minimum(tl.maximum(-qb * ey / qa, dx_lo), dx_hi)
    s1 = 0.5 * (qa * ex * ex + qc * dy * dy) + qb * ex * dy
    s2 = 0.5 * (qa * dx * dx + qc * ey * ey) + qb * dx * ey
    return tl.minimum(s1, s2) <= thr


@triton.jit(do_not_specialize=("P", "N", "C", "color_div"))
def project_forward(means_ptr, covs_ptr, opac_ptr, colors_ptr, w2c_ptr, K_ptr, feat_ptr, depth_ptr, box_ptr,
                    count_ptr, hits_ptr, P, N, C, color_div, width, height, tiles_x, tiles_y, near, far, eps2d,
                    BLOCK: tl.constexpr, TS: tl.constexpr):
    p = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    (valid, img, op, r00, r01, r02, r10, r11, r12, r20, r21, r22, fx, fy, cx, cy, x, y, z,
     c00, c01, c02, c11, c12, c22) = _inputs(means_ptr, covs_ptr, opac_ptr, w2c_ptr, K_ptr, p, P, N, C)
    keep = valid & (z >= near) & (z <= far) & (op >= 1.0 / 255.0)
    z = tl.where(keep, z, 1.0)
    _, _, _, _, _, _, _, _, a, b, c = _jacobian_cov2d(x, y, z, fx, fy, cx, cy, width, height,
                                                      c00, c01, c02, c11, c12, c22, eps2d)
    det = a * c - b * b
    u = fx * x / z + cx
    v = fy * y / z + cy
    extend = tl.minimum(tl.sqrt(2.0 * tl.log(tl.maximum(op, 1.0 / 255.0) * 255.0)), 3.33)
    rx = tl.ceil(extend * tl.sqrt(tl.maximum(a, 0.0)))
    ry = tl.ceil(extend * tl.sqrt(tl.maximum(c, 0.0)))
    on = keep & (det > 0.0) & (u + rx > 0.0) & (u - rx < width) & (v + ry > 0.0) & (v - ry < height)
    det = tl.where(det > 0.0, det, 1.0)
    x0 = tl.minimum(tl.maximum(tl.floor((u - rx) / TS), 0.0), tiles_x * 1.0).to(tl.int32)
    y0 = tl.minimum(tl.maximum(tl.floor((v - ry) / TS), 0.0), tiles_y * 1.0).to(tl.int32)
    x1 = tl.minimum(tl.maximum(tl.ceil((u + rx) / TS), 0.0), tiles_x * 1.0).to(tl.int32)
    y1 = tl.minimum(tl.maximum(tl.ceil((v + ry) / TS), 0.0), tiles_y * 1.0).to(tl.int32)
    area = tl.where(on, tl.maximum(x1 - x0, 0) * tl.maximum(y1 - y0, 0), 0)
    # keep only the box's tiles the ellipse alpha >= 1/255 reaches (a margin keeps borderline ones): bit i of
    # ``hits`` is tile i of the box in row-major order; boxes of more than 32 tiles keep every tile
    qa = tl.where(on, c / det, 1.0)
    qb = tl.where(on, -b / det, 0.0)
    qc = tl.where(on, a / det, 1.0)
    thr = tl.log(tl.maximum(op, 1.0 / 255.0) * 255.0) * 1.001 + 1e-3
    span = tl.maximum(x1 - x0, 1)
    hits = tl.zeros_like(area)
    reached = tl.zeros_like(area)
    i = 0
    most = tl.minimum(tl.max(area, axis=0), 32)
    while i < most:
        hit = (i < area) & _tile_reached(u, v, qa, qb, qc, thr, x0 + i % span, y0 + i // span, width, height, TS)
        hits = hits | (hit.to(tl.int32) << i)
        reached += hit.to(tl.int32)
        i += 1
    count = tl.where(area > 32, area, reached)
    crow = ((img // color_div) * N + p % N) * 3
    f = feat_ptr + p * 9
    tl.store(f, tl.where(on, u, 0.0), mask=valid)
    tl.store(f + 1, tl.where(on, v, 0.0), mask=valid)
    tl.store(f + 2, tl.where(on, c / det, 0.0), mask=valid)
    tl.store(f + 3, tl.where(on, -b / det, 0.0), mask=valid)
    tl.store(f + 4, tl.where(on, a / det, 0.0), mask=valid)
    tl.store(f + 5, tl.where(on, op, 0.0), mask=valid)
    tl.store(f + 6, tl.load(colors_ptr + crow, mask=valid, other=0.0), mask=valid)
    tl.store(f + 7, tl.load(colors_ptr + crow + 1, mask=valid, other=0.0), mask=valid)
    tl.store(f + 8, tl.load(colors_ptr + crow + 2, mask=valid, other=0.0), mask=valid)
    tl.store(depth_ptr + p, z, mask=valid)
    tl.store(box_ptr + p * 4, x0, mask=valid)
    tl.store(box_ptr + p * 4 + 1, y0, mask=valid)
    tl.store(box_ptr + p * 4 + 2, x1, mask=valid)
    tl.store(box_ptr + p * 4 + 3, y1, mask=valid)
    tl.store(count_ptr + p, count, mask=valid)
    tl.store(hits_ptr + p, hits, mask=valid)


@triton.jit(do_not_specialize=("P", "N"))
def emit_keys(box_ptr, count_ptr, hits_ptr, first_ptr, depth_ptr, keys_ptr, vals_ptr, P, N, n_tiles, tiles_x,
              BLOCK: tl.constexpr):
    p = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = p < P
    count = tl.load(count_ptr + p, mask=valid, other=0)
    hits = tl.load(hits_ptr + p, mask=valid, other=0)
    x0 = tl.load(box_ptr + p * 4, mask=valid, other=0)
    y0 = tl.load(box_ptr + p * 4 + 1, mask=valid, other=0)
    span = tl.maximum(tl.load(box_ptr + p * 4 + 2, mask=valid, other=1) - x0, 1)
    area = tl.where(count > 0, span * (tl.load(box_ptr + p * 4 + 3, mask=valid, other=0) - y0), 0)
    first = tl.load(first_ptr + p, mask=valid, other=0)
    depth_bits = tl.load(depth_ptr + p, mask=valid, other=1.0).to(tl.int32, bitcast=True).to(tl.int64)
    base = (p // N) * n_tiles
    most = tl.max(area, axis=0)
    i = 0
    k = tl.zeros_like(count)  # keys written so far (count in the end: project_forward counted the same bits)
    while i < most:
        ok = (i < area) & ((area > 32) | (((hits >> tl.minimum(i, 31)) & 1) != 0))
        tile = base + (y0 + i // span) * tiles_x + x0 + i % span
        tl.store(keys_ptr + first + k, (tile << 32) | depth_bits, mask=ok)
        tl.store(vals_ptr + first + k, p.to(tl.int32), mask=ok)
        k += ok.to(tl.int32)
        i += 1


@triton.jit(do_not_specialize=("P", "N", "C"))
def project_backward(means_ptr, covs_ptr, opac_ptr, w2c_ptr, K_ptr, count_ptr, v_feat_ptr, v_means_ptr, v_covs_ptr,
                     P, N, C, width, height, eps2d, BLOCK: tl.constexpr):
    p = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    (valid, img, op, r00, r01, r02, r10, r11, r12, r20, r21, r22, fx, fy, cx, cy, x, y, z,
     c00, c01, c02, c11, c12, c22) = _inputs(means_ptr, covs_ptr, opac_ptr, w2c_ptr, K_ptr, p, P, N, C)
    on = valid & (tl.load(count_ptr + p, mask=valid, other=0) > 0)
    z = tl.where(on, z, 1.0)
    ux, uy, inx, iny, j00, j02, j11, j12, a, b, c = _jacobian_cov2d(x, y, z, fx, fy, cx, cy, width, height,
                                                                    c00, c01, c02, c11, c12, c22, eps2d)
    det = tl.where(on, a * c - b * b, 1.0)
    qa = c / det
    qb = -b / det
    qc = a / det
    f = v_feat_ptr + p * 9
    v_u = tl.load(f, mask=on, other=0.0)
    v_v = tl.load(f + 1, mask=on, other=0.0)
    v_qa = tl.load(f + 2, mask=on, other=0.0)
    v_qb = 0.5 * tl.load(f + 3, mask=on, other=0.0)  # the off-diagonal appears twice in the conic matrix
    v_qc = tl.load(f + 4, mask=on, other=0.0)
    # conic Q = inverse of the 2D covariance S: v_S = -Q v_Q Q (symmetric)
    m00 = v_qa * qa + v_qb * qb
    m01 = v_qa * qb + v_qb * qc
    m10 = v_qb * qa + v_qc * qb
    m11 = v_qb * qb + v_qc * qc
    va = -(qa * m00 + qb * m10)
    vb = -(qa * m01 + qb * m11)
    vc = -(qb * m01 + qc * m11)
    # S = J Sigma_c J^T + eps I, J = [[j00, 0, j02], [0, j11, j12]]
    vs00 = j00 * j00 * va
    vs01 = j00 * j11 * vb
    vs02 = j00 * (j02 * va + j12 * vb)
    vs11 = j11 * j11 * vc
    vs12 = j11 * (j02 * vb + j12 * vc)
    vs22 = j02 * j02 * va + 2.0 * j02 * j12 * vb + j12 * j12 * vc
    # v_J = 2 v_S J Sigma_c (rows 0, 1; columns 0, 2 and 1, 2 are the non-constant entries)
    js00 = j00 * c00 + j02 * c02
    js02 = j00 * c02 + j02 * c22
    js11 = j11 * c11 + j12 * c12
    js12 = j11 * c12 + j12 * c22
    js01 = j00 * c01 + j02 * c12
    js10 = j11 * c01 + j12 * c02
    v_j00 = 2.0 * (va * js00 + vb * js10)
    v_j02 = 2.0 * (va * js02 + vb * js12)
    v_j11 = 2.0 * (vb * js01 + vc * js11)
    v_j12 = 2.0 * (vb * js02 + vc * js12)
    # J and the pixel mean from the camera-space mean (x / z clamped: no gradient to x through J there)
    iz = 1.0 / z
    v_x = v_u * fx * iz + tl.where(inx, -fx * iz * iz * v_j02, 0.0)
    v_y = v_v * fy * iz + tl.where(iny, -fy * iz * iz * v_j12, 0.0)
    v_z = (-(v_u * fx * x + v_v * fy * y) * iz * iz - (v_j00 * fx + v_j11 * fy) * iz * iz
           + v_j02 * fx * ux * iz * iz + tl.where(inx, v_j02 * fx * ux * iz * iz, 0.0)
           + v_j12 * fy * uy * iz * iz + tl.where(iny, v_j12 * fy * uy * iz * iz, 0.0))
    # world space: mean_c = R m + t, Sigma_c = R Sigma R^T
    gm = v_means_ptr + p * 3
    tl.store(gm, r00 * v_x + r10 * v_y + r20 * v_z, mask=valid)
    tl.store(gm + 1, r01 * v_x + r11 * v_y + r21 * v_z, mask=valid)
    tl.store(gm + 2, r02 * v_x + r12 * v_y + r22 * v_z, mask=valid)
    w00, w01, w02, w11, w12, w22 = _sandwich(r00, r10, r20, r01, r11, r21, r02, r12, r22,
                                             vs00, vs01, vs02, vs11, vs12, vs22)
    gc = v_covs_ptr + p * 6
    tl.store(gc, w00, mask=valid)
    tl.store(gc + 1, w01, mask=valid)
    tl.store(gc + 2, w02, mask=valid)
    tl.store(gc + 3, w11, mask=valid)
    tl.store(gc + 4, w12, mask=valid)
    tl.store(gc + 5, w22, mask=valid)
