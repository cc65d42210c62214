"""GEGLU (``value * gelu(gate)`` of the two halves of a projection) in one Triton kernel (CUDA, half precision).

In the UNet's feed-forward blocks PyTorch splits the projection ``[M, 2I]`` into two strided halves and runs
``gelu(gate)`` and the product as two elementwise kernels on non-contiguous tensors (its slow, non-vectorised
path): five passes over ``[M, I]``. Here one kernel reads both halves once and writes the product once (the exact
erf GELU in float32, as PyTorch computes it for half inputs). H200, SyncDreamer-T at K = 16 x 16 views, bf16:
0.6185 -> 0.5922 s per DDIM step (``bench/syncdreamer.py --product [--no-fused-geglu]``).

Imported only where Triton and a CUDA tensor are at hand (:class:`e4d.syncdreamer.attention.GEGLU`).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


# Tensors are passed as integer addresses (cast to pointers inside): under PyTorch's cudaMallocAsync backend
# (ComfyUI's default) Triton's launcher rejects fresh stream-ordered allocations made inside a CUDA-graph capture
# (see triton_norm); the addresses are multiples of 16, which Triton specialises on, so loads still vectorise.
@triton.jit
def _geglu_kernel(h_addr, y_addr, rows, inner, DTYPE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_I: tl.constexpr):
    """Program (row block, column block): ``y[r, c] = h[r, c] * gelu(h[r, inner + c])``."""
    h_ptr = h_addr.to(tl.int64).to(tl.pointer_type(DTYPE))
    y_ptr = y_addr.to(tl.int64).to(tl.pointer_type(DTYPE))
    r = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    c = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    m = (r < rows)[:, None] & (c < inner)[None, :]
    src = r[:, None] * (2 * inner) + c[None, :]
    value = tl.load(h_ptr + src, mask=m, other=0.0).to(tl.float32)
    gate = tl.load(h_ptr + src + inner, mask=m, other=0.0).to(tl.float32)
    out = value * (0.5 * gate * (1.0 + tl.math.erf(gate * 0.7071067811865476)))
    tl.store(y_ptr + r[:, None] * inner + c[None, :], out.to(DTYPE), mask=m)


BLOCK_R, BLOCK_I = 16, 128
"""Rows and columns per program (128 columns: 256-byte rows of half values per load)."""


def geglu(h: Tensor) -> Tensor:
    """``h [..., 2I]`` (CUDA, contiguous last dim) -> ``value * gelu(gate)`` ``[..., I]`` in ``h``'s dtype, where
    ``value, gate = h.chunk(2, -1)`` (exact erf GELU)."""
    if h.shape[-1] % 2:
        raise ValueError(f"GEGLU needs an even last dimension (value | gate), got {h.shape[-1]}")
    if h.dtype not in _TL_DTYPES:
        raise TypeError(f"GEGLU kernel takes float16/bfloat16/float32, got {h.dtype}")
    h = h.contiguous()
    inner = h.shape[-1] // 2
    rows = h.numel() // max(h.shape[-1], 1)
    y = torch.empty(*h.shape[:-1], inner, dtype=h.dtype, device=h.device)
    if rows == 0 or inner == 0:
        return y
    grid = (triton.cdiv(rows, BLOCK_R), triton.cdiv(inner, BLOCK_I))
    _geglu_kernel[grid](h.data_ptr(), y.data_ptr(), rows, inner, DTYPE=_TL_DTYPES[h.dtype], BLOCK_R=BLOCK_R,
                        BLOCK_I=BLOCK_I, num_warps=4)
    return y
