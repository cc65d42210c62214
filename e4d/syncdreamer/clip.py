"""CLIP ViT image tower in OpenAI's ``ViT-L-14.pt`` layout (QuickGELU), as stored in the SyncDreamer checkpoint.

The checkpoint also keeps the leftovers of the deleted text tower (token/positional embeddings, ln_final,
text_projection, logit_scale); they are registered here only so ``strict=True`` loading works and are never used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dims import CLIPDims
from .layers import LayerNorm32

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _MLP(nn.Module):
    def __init__(self, w: int):
        super().__init__()
        self.c_fc, self.c_proj = nn.Linear(w, 4 * w), nn.Linear(4 * w, w)

    def forward(self, x: Tensor) -> Tensor:
        h = self.c_fc(x)
        return self.c_proj(h * torch.sigmoid(1.702 * h))  # QuickGELU of the OpenAI weights


class _SelfAttention(nn.Module):
    """nn.MultiheadAttention's parameter layout (in_proj_weight/bias, out_proj), computed with fused SDPA."""

    def __init__(self, w: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * w, w))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * w))
        self.out_proj = nn.Linear(w, w)
        nn.init.xavier_uniform_(self.in_proj_weight)  # real weights come from the checkpoint

    def forward(self, x: Tensor) -> Tensor:  # [B, L, W]
        b, n, w = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).reshape(b, n, 3, self.heads, w // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(o.transpose(1, 2).reshape(b, n, w))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, w: int, heads: int):
        super().__init__()
        self.ln_1, self.attn = LayerNorm32(w), _SelfAttention(w, heads)
        self.ln_2, self.mlp = LayerNorm32(w), _MLP(w)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, w: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(w, heads) for _ in range(layers))


class VisionTransformer(nn.Module):
    def __init__(self, d: CLIPDims):
        super().__init__()
        grid = d.image_size // d.patch
        self.conv1 = nn.Conv2d(3, d.width, d.patch, d.patch, bias=False)
        scale = d.width ** -0.5  # OpenAI init scale; only matters for random (test) models
        self.class_embedding = nn.Parameter(scale * torch.randn(d.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, d.width))
        self.ln_pre = LayerNorm32(d.width)
        self.transformer = _Transformer(d.width, d.layers, d.heads)
        self.ln_post = LayerNorm32(d.width)
        self.proj = nn.Parameter(scale * torch.randn(d.width, d.embed_dim))

    def forward(self, x: Tensor) -> Tensor:  # [B, 3, S, S] normalised -> [B, embed]
        x = self.conv1(x.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)  # [B, grid^2, W]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        for blk in self.transformer.resblocks:
            x = blk(x)
        return self.ln_post(x[:, 0]) @ self.proj


class CLIPLeftovers(nn.Module):
    """``clip_image_encoder.model``: the visual tower plus the unused text-side tensors kept by the checkpoint."""

    def __init__(self, d: CLIPDims):
        super().__init__()
        self.visual = VisionTransformer(d)
        if d.vocab_size:
            self.positional_embedding = nn.Parameter(torch.zeros(d.context_length, d.text_width))
            self.text_projection = nn.Parameter(torch.zeros(d.text_width, d.embed_dim))
            self.logit_scale = nn.Parameter(torch.zeros(()))
            self.token_embedding = nn.Embedding(d.vocab_size, d.text_width)
            self.ln_final = nn.LayerNorm(d.text_width)


def clip_preprocess(img: Tensor, size: int = 224) -> Tensor:
    """Image ``[B, 3, H, W]`` in [-1, 1] -> CLIP input: bicubic (align_corners=True, no antialias) resize, mean/std."""
    x = F.interpolate(img, size=(size, size), mode="bicubic", align_corners=True)
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


class CLIPImageEncoder(nn.Module):
    """``clip_image_encoder``: image in [-1, 1] -> embedding ``[B, 1, embed]`` (float32)."""

    def __init__(self, d: CLIPDims):
        super().__init__()
        self.image_size = d.image_size
        self.model = CLIPLeftovers(d)

    def forward(self, img: Tensor) -> Tensor:
        return self.model.visual(clip_preprocess(img, self.image_size)).float().unsqueeze(1)
