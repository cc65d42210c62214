"""Attention blocks of the SyncDreamer UNet: SD-1.x spatial transformers and the depth-wise volume attention."""
from __future__ import annotations

import contextlib
import logging
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import GroupNormAct, triton_available

log = logging.getLogger(__name__)


class CrossAttention(nn.Module):
    """Multi-head attention (q/k/v without bias, out with bias) through fused ``scaled_dot_product_attention``.

    With 1024 latent tokens per view the probability tensor would be [B, 8, 1024, 1024]; SDPA never builds it.
    A one-token context (the UNet's cross-attention) needs no attention at all: the output is its projected value.
    """

    def __init__(self, query_dim: int, context_dim: Optional[int], heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:  # x [B, N, C], context [B, M, Cc]
        ctx = x if context is None else context
        b, n, _ = x.shape
        if context is not None and context.shape[1] == 1:
            # one key: softmax over it is exactly 1, so every query reads the single value (SyncDreamer's context
            # is one CLIP+camera token); skips the query projection and the attention kernel, same result
            return self.to_out(self.to_v(ctx)).expand(b, n, -1)
        q, k, v = self.to_q(x), self.to_k(ctx), self.to_v(ctx)
        split = lambda t: t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        o = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return self.to_out(o.transpose(1, 2).reshape(b, n, -1))


_geglu_failed_once = False
"""True after a fused GEGLU launch failed in this process (PyTorch's ops from then on)."""


class GEGLU(nn.Module):
    """``value * gelu(gate)`` of the two halves of one projection (exact erf GELU). On CUDA half/bfloat16 tensors
    (outside autocast and ``torch.compile``) the product is one Triton kernel (:mod:`.triton_geglu`) instead of
    PyTorch's two strided elementwise kernels; elsewhere, or after a failed launch, the literal ops."""

    fused: bool = True
    """Use the Triton kernel where it applies."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.proj(x)
        if (self.fused and h.is_cuda and h.dtype in (torch.float16, torch.bfloat16) and not _geglu_failed_once
                and not torch.is_autocast_enabled("cuda") and not torch.compiler.is_compiling() and triton_available()):
            try:
                from .triton_geglu import geglu

                return geglu(h)
            except Exception as e:  # noqa: BLE001 -- a Triton/driver problem must not stop sampling: native ops
                _geglu_fallback(e)
        value, gate = h.chunk(2, dim=-1)
        return value * F.gelu(gate)  # exact (erf) GELU


def use_fused_geglu(model: nn.Module, fused: bool = True) -> None:
    """Switch every :class:`GEGLU` in ``model`` to the Triton kernel (where it applies) or PyTorch's ops."""
    for m in model.modules():
        if isinstance(m, GEGLU):
            m.fused = fused


def _geglu_fallback(err: Exception) -> None:
    global _geglu_failed_once
    log.warning("fused GEGLU kernel failed (%s: %s); using PyTorch's ops from now on", type(err).__name__,
                str(err)[:300])
    _geglu_failed_once = True


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GN -> 1x1 conv -> transformer blocks over the H*W tokens -> 1x1 conv, residual."""

    def __init__(self, ch: int, heads: int, dim_head: int, depth: int, context_dim: int):
        super().__init__()
        inner = heads * dim_head
        self.norm = GroupNormAct(32, ch, eps=1e-6)
        self.proj_in = nn.Conv2d(ch, inner, 1)
        self.transformer_blocks = nn.ModuleList(BasicTransformerBlock(inner, heads, dim_head, context_dim)
                                                for _ in range(depth))
        self.proj_out = nn.Conv2d(inner, ch, 1)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x))
        t = t.flatten(2).transpose(1, 2)  # [B, HW, inner]
        for blk in self.transformer_blocks:
            t = blk(t, context)
        t = t.transpose(1, 2).reshape(b, -1, h, w)
        return x + self.proj_out(t)


def profile_range(name: str):
    """Named range for ``bench/syncdreamer.py --profile`` (~1 us without a profiler; skipped inside torch.compile)."""
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return torch.profiler.record_function(name)


def pointwise_conv3d(conv: nn.Conv3d, x: Tensor) -> Tensor:
    """A 1x1x1 Conv3d as one batched matmul ``[O, C] @ [B, C, DHW]`` (CPU has no fast 3-D conv path); a
    channels_last_3d input is multiplied in place of its layout and gives a channels_last_3d result."""
    b, c = x.shape[:2]
    w = conv.weight.reshape(conv.out_channels, c)
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        y = torch.matmul(x.permute(0, 2, 3, 4, 1), w.t())  # channels-last input: [b, D, H, W, O], no copy
        if conv.bias is not None:
            y = y + conv.bias
        return y.permute(0, 4, 1, 2, 3)  # a channels_last_3d view
    y = torch.matmul(w, x.reshape(b, c, -1))
    if conv.bias is not None:
        y = y + conv.bias[:, None]
    return y.reshape(b, conv.out_channels, *x.shape[2:])


def depth_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, chunk: int = 16) -> Tensor:
    """Per pixel and head, softmax over the D depth samples: ``q [B,C,H,W], k/v [B,C,D,H,W] -> [B,C,H,W]``.

    Logits, softmax and the weighted sum run in float32 (the official code gets the same from autocast, whose
    ``sum``/``softmax`` are float32 ops); half inputs are upcast ``chunk`` items at a time to bound the memory.
    The probabilities are only [B, heads, D, H, W] (D <= 48), so no fused kernel is needed.
    """
    b, c, d, h, w = k.shape
    hd = c // heads
    out = []
    for s in range(0, b, chunk):
        qs = q[s:s + chunk].float().reshape(-1, heads, hd, h, w)
        ks = k[s:s + chunk].float().reshape(-1, heads, hd, d, h, w)
        sim = torch.einsum("bnchw,bncdhw->bndhw", qs, ks) * hd ** -0.5
        del ks
        attn = sim.softmax(dim=2)
        vs = v[s:s + chunk].float().reshape(-1, heads, hd, d, h, w)
        out.append(torch.einsum("bndhw,bncdhw->bnchw", attn, vs).reshape(-1, c, h, w).to(q.dtype))
    return torch.cat(out) if len(out) > 1 else out[0]


class DepthAttention(nn.Module):
    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Conv2d(query_dim, inner, 1, bias=False)
        self.to_k = nn.Conv3d(context_dim, inner, 1, bias=False)
        self.to_v = nn.Conv3d(context_dim, inner, 1, bias=False)
        self.to_out = nn.Conv2d(inner, query_dim, 1, bias=False)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:  # x [B, C, H, W], context [B, Cc, D, H, W]
        k, v = pointwise_conv3d(self.to_k, context), pointwise_conv3d(self.to_v, context)
        return self.to_out(depth_attention(self.to_q(x), k, v, self.heads))


class DepthTransformer(nn.Module):
    """Reads one frustum-volume level into the UNet feature map (4 heads, d_head = ctx/2, residual).

    Two numerically equivalent paths (a CPU test checks one against the other):

    * ``fused`` (default): the key projection is folded into the query (``q . (W_k c) = (W_k^T q) . c``) and the
      value projection applied after the weighted sum (``sum_d a_d W_v c_d = W_v sum_d a_d c_d``), so the keys and
      values (each twice the size of the context) are never built; the per-pixel softmax over depth runs in
      ``scaled_dot_product_attention`` (float32 softmax inside the kernel) with pixels as the batch, heads as
      query rows and the D depth samples as keys. Guidance branches that read the same volume share one context
      (``layout``), and a zero volume gives the constant ``W_v relu(beta)`` without any work.
    * literal (``fused = False``): the official order of operations, chunked over ``chunk`` items.
    """

    chunk: int = 16
    """Literal path: items whose context/keys/values are materialised at once (GroupNorm is per item, so
    chunking is exact); bounds the memory of the 48-deep 32x32 level independently of the UNet batch."""
    fused: bool = True
    """Use the folded SDPA path (set False, e.g. with :func:`use_literal_depth_attention`, for the official order)."""

    def __init__(self, dim: int, context_dim: int, heads: int = 4):
        super().__init__()
        dh = context_dim // 2
        inner = heads * dh
        # GroupNorm + activation as one layer; each Identity keeps the checkpoint's layer indices
        self.proj_in = nn.Sequential(nn.Conv2d(dim, inner, 1), GroupNormAct(8, inner, act="silu"), nn.Identity())
        self.proj_context = nn.Sequential(nn.Conv3d(context_dim, context_dim, 1, bias=False),
                                          GroupNormAct(8, context_dim, act="relu"), nn.Identity())
        self.depth_attn = DepthAttention(inner, context_dim, heads, dh)
        self.proj_out = nn.Sequential(GroupNormAct(8, inner, act="relu"), nn.Identity(),
                                      nn.Conv2d(inner, inner, 3, 1, 1, bias=False),
                                      GroupNormAct(8, inner, act="relu"), nn.Identity(),
                                      nn.Conv2d(inner, dim, 3, 1, 1, bias=False))

    def forward(self, x: Tensor, context: Tensor, layout: Optional[Tuple[int, int]] = None) -> Tensor:
        """``x [B, C, H, W]``; ``context [M, Cc, D, H, W]``; ``layout = (R, Z)``: the B = (R + Z) * M rows of ``x``
        are R repeats of the M context rows followed by Z blocks that read an all-zero volume (guidance branches).
        ``None`` = ``(1, 0)``."""
        R, Z = layout or (1, 0)
        M = context.shape[0]
        if x.shape[0] != (R + Z) * M:
            raise ValueError(f"depth transformer: batch {x.shape[0]} != (repeats {R} + zero blocks {Z}) x "
                             f"{M} volume rows; pass the guidance layout that matches the batch")
        with profile_range("sd/depth_transformer"):
            if self.fused:
                return self._forward_fused(x, context, R, Z)
            return x + self.proj_out(self._attend_literal(x, context, R, Z))

    def _context(self, volume: Tensor) -> Tensor:
        conv, norm, act = self.proj_context
        return act(norm(pointwise_conv3d(conv, volume)))

    def _attend_literal(self, x: Tensor, context: Tensor, R: int, Z: int) -> Tensor:
        if R != 1 or Z:
            context = torch.cat([context] * R + [torch.zeros_like(context)] * Z)
        att = self.depth_attn
        q = att.to_q(self.proj_in(x))
        outs = []
        for s in range(0, x.shape[0], self.chunk):
            ctx = self._context(context[s:s + self.chunk])
            k, v = pointwise_conv3d(att.to_k, ctx), pointwise_conv3d(att.to_v, ctx)
            del ctx
            outs.append(depth_attention(q[s:s + self.chunk], k, v, att.heads, chunk=self.chunk))
        return att.to_out(torch.cat(outs) if len(outs) > 1 else outs[0])

    def zero_volume_value(self) -> Tensor:
        """Attention output ``[inner]`` for an all-zero volume: conv(0) = 0 (no bias), GroupNorm(0) = beta, so every
        depth sample holds relu(beta); equal logits give uniform weights and the output is ``W_v relu(beta)``."""
        norm = self.proj_context[1]  # GroupNorm + ReLU
        c0 = norm.activate(norm.bias if norm.bias is not None else torch.zeros(norm.num_channels,
                                                                                device=norm.weight.device))
        wv = self.depth_attn.to_v.weight
        return wv.reshape(wv.shape[0], -1) @ c0.to(wv.dtype)

    def _forward_fused(self, x: Tensor, context: Tensor, R: int, Z: int) -> Tensor:
        att = self.depth_attn
        n = att.heads
        M, Cc, D, H, W = context.shape
        inner = att.to_q.out_channels
        hd = inner // n
        parts = []
        if R:
            q = att.to_q(self.proj_in(x[:R * M]))  # [R*M, inner, H, W]
            wk = att.to_k.weight.reshape(n, hd, Cc)
            wv = att.to_v.weight.reshape(n, hd, Cc)
            # fold W_k into the queries: [M, HW, R*n, Cc] (heads and branches become query rows of one pixel)
            qf = torch.einsum("rmnep,nec->mprnc", q.reshape(R, M, n, hd, H * W), wk.to(q.dtype))
            qf = qf.reshape(M * H * W, 1, R * n, Cc)
            # context as [pixels, 1, D, Cc]: one copy into a pixel-major layout, shared by all heads and branches
            ctx = self._context(context).permute(0, 3, 4, 2, 1).reshape(M * H * W, 1, D, Cc)
            o = F.scaled_dot_product_attention(qf, ctx, ctx, scale=hd ** -0.5)  # [MHW, 1, R*n, Cc]
            del ctx, qf
            o = torch.einsum("mprnc,nec->rmnep", o.reshape(M, H * W, R, n, Cc), wv.to(o.dtype))
            parts.append(x[:R * M] + self.proj_out(att.to_out(o.reshape(R * M, inner, H, W))))
        if Z:
            # every zero-volume row gets the same residual: proj_out of a constant map, computed once
            c = self.zero_volume_value().to(x.dtype)[None, :, None, None].expand(1, inner, H, W)
            parts.append(x[R * M:] + self.proj_out(att.to_out(c)))
        return torch.cat(parts) if len(parts) > 1 else parts[0]


def use_literal_depth_attention(model: nn.Module, literal: bool = True) -> None:
    """Switch every :class:`DepthTransformer` in ``model`` to the literal (official-order) path, or back."""
    for m in model.modules():
        if isinstance(m, DepthTransformer):
            m.fused = not literal
