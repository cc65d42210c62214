"""GroupNorm + activation in one Triton kernel (CUDA, half precision): the UNet and volume nets' norm layers.

PyTorch's CUDA GroupNorm runs two kernels (row moments, then the affine transform) and the SiLU/ReLU after it a
third, each reading and writing the whole activation; on SyncDreamer's per-step work that is ~13 % of the GPU
time (H200 profile of 2026-12-03). Here one program per (sample, group) computes the group's mean and variance
(block-wise Welford merges in float32, the same statistics as the native kernel) and then writes
``act(x * scale + shift)`` once. Any strided layout works (contiguous NC..., channels_last), and the output has
the input's memory format, so a channels_last network stays channels_last.

Imported only where Triton and a CUDA tensor are at hand (:class:`e4d.syncdreamer.layers.GroupNormAct`).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

ACTS = {"none": 0, "silu": 1, "relu": 2}


# sizes, strides and the activation are runtime arguments: a machine's first run JIT-compiles one kernel per dtype
# and block shape (a few), not one per layer shape
@triton.jit(do_not_specialize=["S", "G", "CG", "sxn", "sxc", "sxs", "syn", "syc", "sys", "act"])
def _group_norm_act_kernel(x_ptr, y_ptr, w_ptr, b_ptr, S, G, CG, sxn, sxc, sxs, syn, syc, sys, eps, act,
                           BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    pid = tl.program_id(0)
    n = pid // G
    g = pid % G
    c = tl.arange(0, BLOCK_C)
    cmask = c < CG
    ch = g * CG + c
    xrow = x_ptr + n.to(tl.int64) * sxn + ch[:, None].to(tl.int64) * sxc
    mean = tl.zeros((), dtype=tl.float32)
    m2 = tl.zeros((), dtype=tl.float32)
    cnt = tl.zeros((), dtype=tl.float32)
    for s0 in range(0, S, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        m = cmask[:, None] & (s < S)[None, :]
        v = tl.load(xrow + s[None, :].to(tl.int64) * sxs, mask=m, other=0.0).to(tl.float32)
        nb = (CG * tl.minimum(BLOCK_S, S - s0)).to(tl.float32)
        bmean = tl.sum(v) / nb
        d = tl.where(m, v - bmean, 0.0)
        bm2 = tl.sum(d * d)
        delta = bmean - mean
        tot = cnt + nb
        mean += delta * (nb / tot)
        m2 += bm2 + delta * delta * (cnt * nb / tot)
        cnt = tot
    rstd = 1.0 / tl.sqrt(m2 / cnt + eps)
    w = tl.load(w_ptr + ch, mask=cmask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + ch, mask=cmask, other=0.0).to(tl.float32)
    scale = w * rstd
    shift = b - mean * scale
    yrow = y_ptr + n.to(tl.int64) * syn + ch[:, None].to(tl.int64) * syc
    for s0 in range(0, S, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        m = cmask[:, None] & (s < S)[None, :]
        v = tl.load(xrow + s[None, :].to(tl.int64) * sxs, mask=m, other=0.0).to(tl.float32)
        y = v * scale[:, None] + shift[:, None]
        if act == 1:
            y = y * tl.sigmoid(y)
        elif act == 2:
            y = tl.maximum(y, 0.0)
        tl.store(yrow + s[None, :].to(tl.int64) * sys, y.to(y_ptr.dtype.element_ty), mask=m)


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


def group_norm_act(x: Tensor, num_groups: int, weight: Tensor, bias: Tensor, eps: float, act: str) -> Tensor:
    """``act(group_norm(x))`` for ``x [N, C, *spatial]`` on CUDA; output in ``x``'s dtype and memory format."""
    if act not in ACTS:
        raise ValueError(f"act must be one of {tuple(ACTS)}, got {act!r}")
    N, C = x.shape[:2]
    if C % num_groups:
        raise ValueError(f"GroupNorm: {C} channels are not divisible by {num_groups} groups")
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
    block_c = 16 if CG <= 16 else 64 if CG <= 64 else max(128, triton.next_power_of_2(CG))
    block_s = max(16, 4096 // block_c)
    _group_norm_act_kernel[(N * num_groups,)](
        x, y, weight, bias, S, num_groups, CG, *xs, *ys, float(eps), ACTS[act], BLOCK_C=block_c,
        BLOCK_S=block_s, num_warps=4)
    return y
