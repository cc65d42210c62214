"""Attention blocks of the SyncDreamer UNet: SD-1.x spatial transformers and the depth-wise volume attention."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CrossAttention(nn.Module):
    """Multi-head attention (q/k/v without bias, out with bias) through fused ``scaled_dot_product_attention``.

    With 1024 latent tokens per view the probability tensor would be [B, 8, 1024, 1024]; SDPA never builds it.
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
        q, k, v = self.to_q(x), self.to_k(ctx), self.to_v(ctx)
        split = lambda t: t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        o = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return self.to_out(o.transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)  # exact (erf) GELU


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
        self.norm = nn.GroupNorm(32, ch, eps=1e-6, affine=True)
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


def pointwise_conv3d(conv: nn.Conv3d, x: Tensor) -> Tensor:
    """A 1x1x1 Conv3d as one batched matmul ``[O, C] @ [B, C, DHW]`` (CPU has no fast 3-D conv path)."""
    b, c = x.shape[:2]
    y = torch.matmul(conv.weight.reshape(conv.out_channels, c), x.reshape(b, c, -1))
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
    """Reads one frustum-volume level into the UNet feature map (4 heads, d_head = ctx/2, residual)."""

    chunk: int = 16
    """Items whose context/keys/values are materialised at once (GroupNorm is per item, so chunking is exact);
    bounds the memory of the 48-deep 32x32 level independently of the UNet batch."""

    def __init__(self, dim: int, context_dim: int, heads: int = 4):
        super().__init__()
        dh = context_dim // 2
        inner = heads * dh
        self.proj_in = nn.Sequential(nn.Conv2d(dim, inner, 1), nn.GroupNorm(8, inner), nn.SiLU())
        self.proj_context = nn.Sequential(nn.Conv3d(context_dim, context_dim, 1, bias=False),
                                          nn.GroupNorm(8, context_dim), nn.ReLU())
        self.depth_attn = DepthAttention(inner, context_dim, heads, dh)
        self.proj_out = nn.Sequential(nn.GroupNorm(8, inner), nn.ReLU(), nn.Conv2d(inner, inner, 3, 1, 1, bias=False),
                                      nn.GroupNorm(8, inner), nn.ReLU(), nn.Conv2d(inner, dim, 3, 1, 1, bias=False))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        with torch.profiler.record_function("sd/depth_transformer"):
            return self._forward(x, context)

    def _forward(self, x: Tensor, context: Tensor) -> Tensor:
        conv, norm, act = self.proj_context
        att = self.depth_attn
        q = att.to_q(self.proj_in(x))
        outs = []
        for s in range(0, x.shape[0], self.chunk):
            ctx = act(norm(pointwise_conv3d(conv, context[s:s + self.chunk])))
            k, v = pointwise_conv3d(att.to_k, ctx), pointwise_conv3d(att.to_v, ctx)
            del ctx
            outs.append(depth_attention(q[s:s + self.chunk], k, v, att.heads, chunk=self.chunk))
        h = att.to_out(torch.cat(outs) if len(outs) > 1 else outs[0])
        return x + self.proj_out(h)
