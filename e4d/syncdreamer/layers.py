"""Small shared layers: sinusoidal timestep embedding and GroupNorm that normalises in float32."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[B] -> [B, dim]`` laid out as [cos | sin] (latent-diffusion convention)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with float32 statistics, output in the input dtype (the official GroupNorm32).

    On CUDA the native half/bfloat16 kernel already accumulates in float32, so half inputs skip the explicit
    upcast (it would triple the memory traffic of every norm); CPU and float32 inputs take the literal path.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
            w = None if self.weight is None else self.weight.to(x.dtype)
            b = None if self.bias is None else self.bias.to(x.dtype)
            return F.group_norm(x, self.num_groups, w, b, self.eps)
        return F.group_norm(x.float(), self.num_groups, self.weight.float() if self.weight is not None else None,
                            self.bias.float() if self.bias is not None else None, self.eps).type(x.dtype)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 (OpenAI CLIP does this for fp16 weights)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).type(x.dtype)
