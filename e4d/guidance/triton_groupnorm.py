"""GroupNorm (+ SiLU) forward and backward in Triton, for the SDS step's channels_last VAE encoder and UNet.

PyTorch's CUDA GroupNorm works on contiguous (NCHW) tensors only: on a channels_last network it copies its input to
NCHW and returns NCHW, so every following cuDNN convolution transposes back. These kernels read and write the
input's own layout. One program covers a spatial slice of one sample across *all* groups (a ``[slice, G, C/G]``
tile), so in channels_last every load is a whole pixel's channels, coalesced.

Forward: partial sums of each group's values (shifted by the group's first value, so the float32 variance does not
cancel) -> per-group mean / rstd (saved for the backward) -> ``act(x * w * rstd + (b - mean * w * rstd))``.
Backward (weights frozen, as in SDS): with ``u = dz * w`` (``dz`` through the SiLU, recomputed from ``x``), per-group
sums of ``u`` and ``u * x̂`` -> ``dx = rstd * (u - mean(u) - x̂ * mean(u * x̂))``.

Tensors are passed to the kernels as integer addresses: under PyTorch's ``cudaMallocAsync`` backend (ComfyUI's
default) Triton's launcher rejects stream-ordered allocations as pointer arguments (see
``e4d/syncdreamer/triton_norm.py``). Imported only where Triton and a CUDA tensor are at hand.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

TILE = 4096
"""Elements per tile (``BLOCK_S * G * BLOCK_CG``)."""
MAX_SPLIT = 256
"""Most spatial slices per sample (programs per sample)."""
TARGET_PROGRAMS = 1024
"""Programs to aim for per launch (an H200 has 132 SMs)."""

_TL = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


@triton.jit
def _ptr(addr, dtype: tl.constexpr):
    return addr.to(tl.int64).to(tl.pointer_type(dtype))


@triton.jit(do_not_specialize=["S", "CG", "chunk"])
def _fwd_partials(x_addr, part_addr, S, CG, sxn, sxc, sxs, chunk,
                  DT: tl.constexpr, G: tl.constexpr, BLOCK_CG: tl.constexpr, BLOCK_S: tl.constexpr):
    """Program (n, k): sums of (x - shift) and (x - shift)² per group over spatial slice k, -> part[n, k, :, 2]."""
    x_ptr = _ptr(x_addr, DT)
    part = _ptr(part_addr, tl.float32)
    n = tl.program_id(0)
    k = tl.program_id(1)
    split = tl.num_programs(1)
    g = tl.arange(0, G)
    c = tl.arange(0, BLOCK_CG)
    cm = c < CG
    ch = g[:, None] * CG + c[None, :]  # [G, BLOCK_CG]
    base = x_ptr + n * sxn
    shift = tl.load(base + (g * CG) * sxc).to(tl.float32)  # each group's first value
    a1 = tl.zeros((BLOCK_S, G, BLOCK_CG), dtype=tl.float32)
    a2 = tl.zeros((BLOCK_S, G, BLOCK_CG), dtype=tl.float32)
    s_end = tl.minimum((k + 1) * chunk, S)
    for s0 in range(k * chunk, s_end, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        m = (s < s_end)[:, None, None] & cm[None, None, :]
        v = tl.load(base + s[:, None, None] * sxs + ch[None, :, :] * sxc, mask=m, other=0.0).to(tl.float32)
        d = tl.where(m, v - shift[None, :, None], 0.0)
        a1 += d
        a2 += d * d
    out = part + ((n * split + k) * G + g) * 2
    tl.store(out, tl.sum(tl.sum(a1, axis=2), axis=0))
    tl.store(out + 1, tl.sum(tl.sum(a2, axis=2), axis=0))


@triton.jit
def _merge_partials(part, n, split, G: tl.constexpr, BLOCK_P: tl.constexpr):
    """Sums over the ``split`` programs of sample ``n`` of the two per-group partials ``part[n, k, g, 0:2]``."""
    g = tl.arange(0, G)
    t1 = tl.zeros((G,), dtype=tl.float32)
    t2 = tl.zeros((G,), dtype=tl.float32)
    for p0 in range(0, split, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        m = (p < split)[:, None]
        off = ((n * split + p[:, None]) * G + g[None, :]) * 2
        t1 += tl.sum(tl.load(part + off, mask=m, other=0.0), axis=0)
        t2 += tl.sum(tl.load(part + off + 1, mask=m, other=0.0), axis=0)
    return t1, t2


@triton.jit(do_not_specialize=["S", "CG", "split"])
def _fwd_stats(x_addr, part_addr, stat_addr, S, CG, sxn, sxc, split, eps,
               DT: tl.constexpr, G: tl.constexpr, BLOCK_P: tl.constexpr):
    """Program n: merge the partial sums -> stat[n, :, 0] = mean, stat[n, :, 1] = rstd."""
    x_ptr = _ptr(x_addr, DT)
    part = _ptr(part_addr, tl.float32)
    stat = _ptr(stat_addr, tl.float32)
    n = tl.program_id(0)
    g = tl.arange(0, G)
    t1, t2 = _merge_partials(part, n, split, G, BLOCK_P)
    cnt = (S * CG).to(tl.float32)
    shift = tl.load(x_ptr + n * sxn + (g * CG) * sxc).to(tl.float32)
    dm = t1 / cnt
    var = tl.maximum(t2 / cnt - dm * dm, 0.0)
    tl.store(stat + (n * G + g) * 2, shift + dm)
    tl.store(stat + (n * G + g) * 2 + 1, 1.0 / tl.sqrt(var + eps))


@triton.jit(do_not_specialize=["S", "CG", "chunk", "silu"])
def _fwd_apply(x_addr, y_addr, w_addr, b_addr, stat_addr, S, CG, sxn, sxc, sxs, syn, syc, sys, chunk,
               silu, DT: tl.constexpr, WT: tl.constexpr, G: tl.constexpr, BLOCK_CG: tl.constexpr,
               BLOCK_S: tl.constexpr):
    """Program (n, k): y = act(x * scale + shift) over spatial slice k."""
    x_ptr = _ptr(x_addr, DT)
    y_ptr = _ptr(y_addr, DT)
    stat = _ptr(stat_addr, tl.float32)
    n = tl.program_id(0)
    k = tl.program_id(1)
    g = tl.arange(0, G)
    c = tl.arange(0, BLOCK_CG)
    cm = c < CG
    ch = g[:, None] * CG + c[None, :]
    mean = tl.load(stat + (n * G + g) * 2)
    rstd = tl.load(stat + (n * G + g) * 2 + 1)
    w = tl.load(_ptr(w_addr, WT) + ch, mask=cm[None, :], other=0.0).to(tl.float32)
    b = tl.load(_ptr(b_addr, WT) + ch, mask=cm[None, :], other=0.0).to(tl.float32)
    scale = w * rstd[:, None]
    bias = b - mean[:, None] * scale
    s_end = tl.minimum((k + 1) * chunk, S)
    for s0 in range(k * chunk, s_end, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        m = (s < s_end)[:, None, None] & cm[None, None, :]
        v = tl.load(x_ptr + n * sxn + s[:, None, None] * sxs + ch[None, :, :] * sxc, mask=m, other=0.0)
        z = v.to(tl.float32) * scale[None, :, :] + bias[None, :, :]
        if silu:
            z = z * tl.sigmoid(z)
        tl.store(y_ptr + n * syn + s[:, None, None] * sys + ch[None, :, :] * syc, z.to(DT), mask=m)


@triton.jit
def _upstream(x_ptr, dy_ptr, xo, dyo, m, mean, rstd, w, b, silu):
    """(u = dL/dx̂ = w * dL/dz, x̂) of one tile, z = x̂ w + b the pre-activation."""
    xh = (tl.load(x_ptr + xo, mask=m, other=0.0).to(tl.float32) - mean[None, :, None]) * rstd[None, :, None]
    dz = tl.load(dy_ptr + dyo, mask=m, other=0.0).to(tl.float32)
    if silu:
        z = xh * w[None, :, :] + b[None, :, :]
        sg = tl.sigmoid(z)
        dz = dz * sg * (1.0 + z * (1.0 - sg))
    return tl.where(m, dz * w[None, :, :], 0.0), xh


@triton.jit(do_not_specialize=["S", "CG", "chunk", "silu"])
def _bwd_partials(x_addr, dy_addr, w_addr, b_addr, stat_addr, part_addr, S, CG, sxn, sxc, sxs, sdn, sdc, sds, chunk,
                  silu, DT: tl.constexpr, WT: tl.constexpr, G: tl.constexpr, BLOCK_CG: tl.constexpr,
                  BLOCK_S: tl.constexpr):
    """Program (n, k): sums of u and u * x̂ per group over spatial slice k, -> part[n, k, :, 2]."""
    x_ptr = _ptr(x_addr, DT)
    dy_ptr = _ptr(dy_addr, DT)
    stat = _ptr(stat_addr, tl.float32)
    part = _ptr(part_addr, tl.float32)
    n = tl.program_id(0)
    k = tl.program_id(1)
    split = tl.num_programs(1)
    g = tl.arange(0, G)
    c = tl.arange(0, BLOCK_CG)
    cm = c < CG
    ch = g[:, None] * CG + c[None, :]
    mean = tl.load(stat + (n * G + g) * 2)
    rstd = tl.load(stat + (n * G + g) * 2 + 1)
    w = tl.load(_ptr(w_addr, WT) + ch, mask=cm[None, :], other=0.0).to(tl.float32)
    b = tl.load(_ptr(b_addr, WT) + ch, mask=cm[None, :], other=0.0).to(tl.float32)
    a1 = tl.zeros((BLOCK_S, G, BLOCK_CG), dtype=tl.float32)
    a2 = tl.zeros((BLOCK_S, G, BLOCK_CG), dtype=tl.float32)
    s_end = tl.minimum((k + 1) * chunk, S)
    for s0 in range(k * chunk, s_end, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        m = (s < s_end)[:, None, None] & cm[None, None, :]
        u, xh = _upstream(x_ptr, dy_ptr, n * sxn + s[:, None, None] * sxs + ch[None, :, :] * sxc,
                          n * sdn + s[:, None, None] * sds + ch[None, :, :] * sdc, m, mean, rstd, w, b, silu)
        a1 += u
        a2 += u * xh
    out = part + ((n * split + k) * G + g) * 2
    tl.store(out, tl.sum(tl.sum(a1, axis=2), axis=0))
    tl.store(out + 1, tl.sum(tl.sum(a2, axis=2), axis=0))


@triton.jit(do_not_specialize=["S", "CG", "split"])
def _bwd_stats(part_addr, coef_addr, S, CG, split, G: tl.constexpr, BLOCK_P: tl.constexpr):
    """Program n: merge the partials -> coef[n, :, 0] = mean(u), coef[n, :, 1] = mean(u * x̂) per group."""
    part = _ptr(part_addr, tl.float32)
    coef = _ptr(coef_addr, tl.float32)
    n = tl.program_id(0)
    g = tl.arange(0, G)
    t1, t2 = _merge_partials(part, n, split, G, BLOCK_P)
    cnt = (S * CG).to(tl.float32)
    tl.store(coef + (n * G + g) * 2, t1 / cnt)
    tl.store(coef + (n * G + g) * 2 + 1, t2 / cnt)


@triton.jit(do_not_specialize=["S", "CG", "chunk", "silu"])
def _bwd_apply(x_addr, dy_addr, dx_addr, w_addr, b_addr, stat_addr, coef_addr, S, CG, sxn, sxc, sxs, sdn, sdc, sds,
               son, soc, sos, chunk, silu, DT: tl.constexpr, WT: tl.constexpr, G: tl.constexpr,
               BLOCK_CG: tl.constexpr, BLOCK_S: tl.constexpr):
    """Program (n, k): dx = rstd (u - mean(u) - x̂ mean(u x̂)) over spatial slice k."""
    x_ptr = _ptr(x_addr, DT)
    dy_ptr = _ptr(dy_addr, DT)
    dx_ptr = _ptr(dx_addr, DT)
    stat = _ptr(stat_addr, tl.float32)
    coef = _ptr(coef_addr, tl.float32)
    n = tl.program_id(0)
    k = tl.program_id(1)
    g = tl.arange(0, G)
    mu1 = tl.load(coef + (n * G + g) * 2)
    mu2 = tl.load(coef + (n * G + g) * 2 + 1)
    c = tl.arange(0, BLOCK_CG)
    cm = c < CG
    ch = g[:, None] * CG + c[None, :]
    mean = tl.load(stat + (n * G + g) * 2)
    rstd = tl.load(stat + (n * G + g) * 2 + 1)
    w = tl.load(_ptr(w_addr, WT) + ch, mask=cm[None, :], other=0.0).to(tl.float32)
    b = tl.load(_ptr(b_addr, WT) + ch, mask=cm[None, :], other=0.0).to(tl.float32)
    s_end = tl.minimum((k + 1) * chunk, S)
    for s0 in range(k * chunk, s_end, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        m = (s < s_end)[:, None, None] & cm[None, None, :]
        u, xh = _upstream(x_ptr, dy_ptr, n * sxn + s[:, None, None] * sxs + ch[None, :, :] * sxc,
                          n * sdn + s[:, None, None] * sds + ch[None, :, :] * sdc, m, mean, rstd, w, b, silu)
        dx = rstd[None, :, None] * (u - mu1[None, :, None] - xh * mu2[None, :, None])
        tl.store(dx_ptr + n * son + s[:, None, None] * sos + ch[None, :, :] * soc, dx.to(DT), mask=m)


def flat_strides(t: Tensor) -> tuple | None:
    """(stride of N, stride of C, stride of the flattened spatial index) of ``t [N, C, *S]`` when its spatial dims
    flatten to one index with one stride (contiguous and channels_last layouts); None otherwise."""
    stride = t.stride()
    expect = stride[-1] if t.ndim > 2 else 1
    for size, st in zip(reversed(t.shape[2:]), reversed(stride[2:])):
        if size != 1 and st != expect:
            return None
        expect *= size
    return stride[0], stride[1], (stride[-1] if t.ndim > 2 else 1)


def supported(x: Tensor, num_groups: int) -> bool:
    """Whether the kernels take ``x [N, C, *S]`` as it is: CUDA (or the Triton interpreter), a Triton dtype, a
    power-of-two group count, a group tile that fits :data:`TILE`, 32-bit offsets, and a flat spatial layout."""
    N, C = x.shape[:2]
    if x.dtype not in _TL or x.ndim < 3 or C % num_groups or num_groups & (num_groups - 1):
        return False
    if num_groups * triton.next_power_of_2(C // num_groups) > TILE or x.numel() >= 2 ** 31:
        return False
    return flat_strides(x) is not None


def _plan(x: Tensor, num_groups: int) -> tuple:
    N, C = x.shape[:2]
    S = x[0, 0].numel()
    block_cg = triton.next_power_of_2(C // num_groups)
    block_s = max(1, TILE // (num_groups * block_cg))
    split = max(1, min(MAX_SPLIT, triton.cdiv(S, block_s), triton.cdiv(TARGET_PROGRAMS, N)))
    chunk = triton.cdiv(triton.cdiv(S, split), block_s) * block_s  # whole tiles per program
    split = triton.cdiv(S, chunk)
    return S, C // num_groups, block_cg, block_s, chunk, split


def group_norm_forward(x: Tensor, num_groups: int, weight: Tensor, bias: Tensor, eps: float,
                       silu: bool) -> tuple[Tensor, Tensor]:
    """``(act(group_norm(x)), stats [N, G, 2] float32 (mean, rstd))`` for ``x [N, C, *S]`` (see :func:`supported`);
    the output has ``x``'s layout."""
    N = x.shape[0]
    S, CG, bcg, bs, chunk, split = _plan(x, num_groups)
    y = torch.empty_like(x)  # preserve_format: x's strides for the dense layouts accepted here
    xs, ys = flat_strides(x), flat_strides(y)
    w, b = weight.contiguous(), bias.contiguous()
    part = torch.empty(N * split * num_groups * 2, device=x.device, dtype=torch.float32)
    stats = torch.empty(N, num_groups, 2, device=x.device, dtype=torch.float32)
    dt, wt = _TL[x.dtype], _TL[w.dtype]
    _fwd_partials[(N, split)](x.data_ptr(), part.data_ptr(), S, CG, *xs, chunk, DT=dt, G=num_groups, BLOCK_CG=bcg,
                              BLOCK_S=bs, num_warps=4)
    _fwd_stats[(N,)](x.data_ptr(), part.data_ptr(), stats.data_ptr(), S, CG, xs[0], xs[1], split, float(eps),
                     DT=dt, G=num_groups, BLOCK_P=32, num_warps=1)
    _fwd_apply[(N, split)](x.data_ptr(), y.data_ptr(), w.data_ptr(), b.data_ptr(), stats.data_ptr(), S, CG, *xs, *ys,
                           chunk, int(silu), DT=dt, WT=wt, G=num_groups, BLOCK_CG=bcg, BLOCK_S=bs, num_warps=4)
    return y, stats


def group_norm_backward(dy: Tensor, x: Tensor, num_groups: int, weight: Tensor, bias: Tensor, stats: Tensor,
                        silu: bool) -> Tensor:
    """Gradient ``[N, C, *S]`` (``x``'s layout) of :func:`group_norm_forward`'s output w.r.t. ``x``, weights fixed."""
    if flat_strides(dy) is None or dy.dtype != x.dtype:
        dy = dy.to(x.dtype).contiguous(memory_format=torch.channels_last if x.ndim == 4 and x.stride(1) == 1
                                       else torch.contiguous_format)
    N = x.shape[0]
    S, CG, bcg, bs, chunk, split = _plan(x, num_groups)
    dx = torch.empty_like(x)
    xs, ds, os_ = flat_strides(x), flat_strides(dy), flat_strides(dx)
    w, b = weight.contiguous(), bias.contiguous()
    part = torch.empty(N * split * num_groups * 2, device=x.device, dtype=torch.float32)
    dt, wt = _TL[x.dtype], _TL[w.dtype]
    addr = (x.data_ptr(), dy.data_ptr())
    _bwd_partials[(N, split)](*addr, w.data_ptr(), b.data_ptr(), stats.data_ptr(), part.data_ptr(), S, CG, *xs, *ds,
                              chunk, int(silu), DT=dt, WT=wt, G=num_groups, BLOCK_CG=bcg, BLOCK_S=bs, num_warps=4)
    coef = torch.empty(N, num_groups, 2, device=x.device, dtype=torch.float32)
    _bwd_stats[(N,)](part.data_ptr(), coef.data_ptr(), S, CG, split, G=num_groups, BLOCK_P=32, num_warps=1)
    _bwd_apply[(N, split)](*addr, dx.data_ptr(), w.data_ptr(), b.data_ptr(), stats.data_ptr(), coef.data_ptr(), S, CG,
                           *xs, *ds, *os_, chunk, int(silu), DT=dt, WT=wt, G=num_groups, BLOCK_CG=bcg, BLOCK_S=bs,
                           num_warps=4)
    return dx
