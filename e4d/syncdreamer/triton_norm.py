"""GroupNorm + activation in two Triton kernels (CUDA, half precision): the UNet and volume nets' norm layers.

PyTorch's CUDA GroupNorm runs two kernels (row moments, then the affine transform) and the SiLU/ReLU after it a
third, each reading and writing the whole activation, and it works on contiguous tensors only (a channels_last
input is copied). Here a first kernel computes each group's mean and variance in float32 (block-wise Welford
merges; a group's pixels are split over several programs when the batch is small, the partials merged exactly),
and a second writes ``act(x * scale + shift)`` once. Contiguous and channels_last(_3d) layouts work as they are,
and the output has the input's memory format, so a channels_last network stays channels_last.

Imported only where Triton and a CUDA tensor are at hand (:class:`e4d.syncdreamer.layers.GroupNormAct`).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

ACTS = {"none": 0, "silu": 1, "relu": 2}


# Sizes and the activation are runtime arguments (one JIT compile per dtype, layout and block shape, not per layer
# shape); strides are specialised, so Triton sees which axis is contiguous (stride 1) and vectorises along it.
@triton.jit(do_not_specialize=["S", "G", "CG", "tiles", "split"])
def _group_stats_kernel(x_ptr, part_ptr, S, G, CG, sxn, sxc, sxs, tiles, split,
                        BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """Program (group, k): Welford mean / M2 / count of the group's k-th slice of ``tiles`` spatial tiles."""
    pid = tl.program_id(0)
    k = tl.program_id(1)
    n = pid // G
    g = pid % G
    s_begin = k * tiles * BLOCK_S  # a multiple of the tile: Triton knows the loads are aligned
    s_end = tl.minimum(s_begin + tiles * BLOCK_S, S)
    mean = tl.zeros((), dtype=tl.float32)
    m2 = tl.zeros((), dtype=tl.float32)
    cnt = tl.zeros((), dtype=tl.float32)
    for c0 in range(0, CG, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < CG
        xrow = x_ptr + n * sxn + (g * CG + c)[:, None] * sxc
        nc = tl.minimum(BLOCK_C, CG - c0)
        for s0 in range(s_begin, s_end, BLOCK_S):
            s = s0 + tl.arange(0, BLOCK_S)
            m = cmask[:, None] & (s < s_end)[None, :]
            v = tl.load(xrow + s[None, :] * sxs, mask=m, other=0.0).to(tl.float32)
            nb = (nc * tl.minimum(BLOCK_S, s_end - s0)).to(tl.float32)
            bmean = tl.sum(v) / nb
            d = tl.where(m, v - bmean, 0.0)
            bm2 = tl.sum(d * d)
            delta = bmean - mean
            tot = cnt + nb
            mean += delta * (nb / tot)
            m2 += bm2 + delta * delta * (cnt * nb / tot)
            cnt = tot
    out = part_ptr + (pid * split + k) * 3
    tl.store(out, mean)
    tl.store(out + 1, m2)
    tl.store(out + 2, cnt)


@triton.jit(do_not_specialize=["S", "G", "CG", "tiles", "split", "act"])
def _group_apply_kernel(x_ptr, y_ptr, w_ptr, b_ptr, part_ptr, S, G, CG, sxn, sxc, sxs, syn, syc, sys, tiles, split,
                        eps, act, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_P: tl.constexpr):
    """Program (group, k): merge the group's partial statistics, write act(x * scale + shift) of its slice."""
    pid = tl.program_id(0)
    k = tl.program_id(1)
    n = pid // G
    g = pid % G
    p = tl.arange(0, BLOCK_P)
    pm = p < split
    parts = part_ptr + (pid * split + p) * 3
    means = tl.load(parts, mask=pm, other=0.0)
    m2s = tl.load(parts + 1, mask=pm, other=0.0)
    cnts = tl.load(parts + 2, mask=pm, other=0.0)
    cnt = tl.sum(cnts)
    mean = tl.sum(cnts * means) / cnt
    dm = means - mean
    m2 = tl.sum(m2s + cnts * dm * dm)
    rstd = 1.0 / tl.sqrt(m2 / cnt + eps)
    s_begin = k * tiles * BLOCK_S  # a multiple of the tile: Triton knows the loads are aligned
    s_end = tl.minimum(s_begin + tiles * BLOCK_S, S)
    for c0 in range(0, CG, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < CG
        ch = g * CG + c
        w = tl.load(w_ptr + ch, mask=cmask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + ch, mask=cmask, other=0.0).to(tl.float32)
        scale = w * rstd
        shift = b - mean * scale
        xrow = x_ptr + n * sxn + ch[:, None] * sxc
        yrow = y_ptr + n * syn + ch[:, None] * syc
        for s0 in range(s_begin, s_end, BLOCK_S):
            s = s0 + tl.arange(0, BLOCK_S)
            m = cmask[:, None] & (s < s_end)[None, :]
            v = tl.load(xrow + s[None, :] * sxs, mask=m, other=0.0).to(tl.float32)
            y = v * scale[:, None] + shift[:, None]
            if act == 1:
                y = y * tl.sigmoid(y)
            elif act == 2:
                y = tl.maximum(y, 0.0)
            tl.store(yrow + s[None, :] * sys, y.to(y_ptr.dtype.element_ty), mask=m)


# The same two kernels with the tensors passed as integer addresses, cast to pointers inside. Triton's launcher checks
# every pointer argument with cuPointerGetAttribute, and under PyTorch's cudaMallocAsync backend (ComfyUI's default)
# that check rejects fresh stream-ordered allocations ("Pointer argument (at 0) cannot be accessed from Triton (cpu
# tensor?)", measured on an H200 with torch 2.11 + Triton 3.6); integers are passed through unchecked.
@triton.jit(do_not_specialize=["S", "G", "CG", "tiles", "split"])
def _group_stats_addr_kernel(x_addr, part_addr, S, G, CG, sxn, sxc, sxs, tiles, split, X_DTYPE: tl.constexpr,
                             BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """:func:`_group_stats_kernel` on addresses."""
    _group_stats_kernel(x_addr.to(tl.int64).to(tl.pointer_type(X_DTYPE)),
                        part_addr.to(tl.int64).to(tl.pointer_type(tl.float32)), S, G, CG, sxn, sxc, sxs, tiles, split,
                        BLOCK_C, BLOCK_S)


@triton.jit(do_not_specialize=["S", "G", "CG", "tiles", "split", "act"])
def _group_apply_addr_kernel(x_addr, y_addr, w_addr, b_addr, part_addr, S, G, CG, sxn, sxc, sxs, syn, syc, sys, tiles,
                             split, eps, act, X_DTYPE: tl.constexpr, W_DTYPE: tl.constexpr, BLOCK_C: tl.constexpr,
                             BLOCK_S: tl.constexpr, BLOCK_P: tl.constexpr):
    """:func:`_group_apply_kernel` on addresses."""
    _group_apply_kernel(x_addr.to(tl.int64).to(tl.pointer_type(X_DTYPE)),
                        y_addr.to(tl.int64).to(tl.pointer_type(X_DTYPE)),
                        w_addr.to(tl.int64).to(tl.pointer_type(W_DTYPE)),
                        b_addr.to(tl.int64).to(tl.pointer_type(W_DTYPE)),
                        part_addr.to(tl.int64).to(tl.pointer_type(tl.float32)), S, G, CG, sxn, sxc, sxs, syn, syc, sys,
                        tiles, split, eps, act, BLOCK_C, BLOCK_S, BLOCK_P)


_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


def pass_addresses(device: torch.device) -> bool:
    """Whether launches on ``device`` pass addresses (PyTorch's ``cudaMallocAsync`` allocator backend)."""
    return device.type == "cuda" and _async_backend()


@functools.lru_cache(maxsize=None)
def _async_backend() -> bool:
    return torch.cuda.get_allocator_backend() == "cudaMallocAsync"  # fixed once CUDA is initialised


MAX_SPLIT = 64
"""Most programs one group's statistics are split over (the partials are merged in one vector)."""
TARGET_PROGRAMS = 2048
"""Programs to aim for per launch (an H200 has 132 SMs): small batches split each group's pixels."""


def _flat_strides(t: Tensor) -> tuple:
    """(stride of N, stride of C, stride of the flattened spatial index) when the spatial dims flatten to one
    index with a single stride (contiguous and channels_last layouts); None otherwise."""
    n, c, *sp = t.shape
    stride = t.stride()
    s_inner = stride[-1] if sp else 1
    expect = s_inner
    for size, st in zip(reversed(sp), reversed(stride[2:])):
        if size != 1 and st != expect:
            return None
        expect = expect * size
    return stride[0], stride[1], s_inner


def group_norm_act(x: Tensor, num_groups: int, weight: Tensor, bias: Tensor, eps: float, act: str,
                   addresses: Optional[bool] = None) -> Tensor:
    """``act(group_norm(x))`` for ``x [N, C, *spatial]`` on CUDA; output in ``x``'s dtype and memory format.

    ``addresses``: launch the kernels with integer addresses instead of tensors (see the address kernels); None =
    where PyTorch runs the ``cudaMallocAsync`` backend (:func:`pass_addresses`)."""
    if act not in ACTS:
        raise ValueError(f"act must be one of {tuple(ACTS)}, got {act!r}")
    N, C = x.shape[:2]
    if C % num_groups:
        raise ValueError(f"GroupNorm: {C} channels are not divisible by {num_groups} groups")
    if x.numel() >= 2 ** 31:
        raise ValueError(f"group_norm_act uses 32-bit offsets; {x.numel()} elements is too many (use F.group_norm)")
    xs = _flat_strides(x)
    if xs is None:
        x = x.contiguous()
        xs = _flat_strides(x)
    y = torch.empty_like(x)  # preserve_format: same strides as x for dense layouts
    ys = _flat_strides(y)
    if ys is None:
        y = torch.empty_like(x, memory_format=torch.contiguous_format)
        ys = _flat_strides(y)
    S = x[0, 0].numel()
    CG = C // num_groups
    groups = N * num_groups
    block_c, block_s = 16, 256  # one tile shape: larger groups loop over channel tiles (one JIT compile per layout)
    split = max(1, min(MAX_SPLIT, triton.cdiv(S, block_s), triton.cdiv(TARGET_PROGRAMS, groups)))
    tiles = triton.cdiv(triton.cdiv(S, split), block_s)  # whole tiles per program
    split = triton.cdiv(S, tiles * block_s)
    part = torch.empty(groups * split * 3, device=x.device, dtype=torch.float32)
    grid = (groups, split)
    if pass_addresses(x.device) if addresses is None else addresses:
        weight, bias = weight.contiguous(), bias.contiguous()
        ptr = [t.data_ptr() for t in (x, y, weight, bias, part)]
        _group_stats_addr_kernel[grid](ptr[0], ptr[4], S, num_groups, CG, *xs, tiles, split,
                                       X_DTYPE=_TL_DTYPES[x.dtype], BLOCK_C=block_c, BLOCK_S=block_s, num_warps=4)
        _group_apply_addr_kernel[grid](*ptr, S, num_groups, CG, *xs, *ys, tiles, split, float(eps), ACTS[act],
                                       X_DTYPE=_TL_DTYPES[x.dtype], W_DTYPE=_TL_DTYPES[weight.dtype],
                                       BLOCK_C=block_c, BLOCK_S=block_s, BLOCK_P=MAX_SPLIT, num_warps=4)
        return y
    _group_stats_kernel[grid](x, part, S, num_groups, CG, *xs, tiles, split, BLOCK_C=block_c, BLOCK_S=block_s,
                              num_warps=4)
    _group_apply_kernel[grid](x, y, weight, bias, part, S, num_groups, CG, *xs, *ys, tiles, split, float(eps),
                              ACTS[act], BLOCK_C=block_c, BLOCK_S=block_s, BLOCK_P=MAX_SPLIT, num_warps=4)
    return y
