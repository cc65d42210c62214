"""KL-f8 autoencoder of Stable Diffusion 1.x (``first_stage_model``), parameter names as in latent-diffusion."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dims import VAEDims
from .layers import GroupNormAct

SCALE_FACTOR = 0.18215
"""Latent scaling of SD-1.x (the UNet works on ``z * 0.18215``)."""


def _norm(c: int, act: str = "none") -> GroupNormAct:
    norm = GroupNormAct(32, c, eps=1e-6, act=act)
    norm.fused = False  # runs once per sampling (encode K frames, decode K x 16 views): PyTorch's kernels suffice
    return norm


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, "silu"), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = _norm(cout, "silu"), nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(self.norm1(x))  # norms include their SiLU
        h = self.conv2(self.norm2(h))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels (fused SDPA, so no [HW, HW] matrix is materialised)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (m(n).reshape(b, 1, c, h * w).transpose(-1, -2) for m in (self.q, self.k, self.v))
        o = F.scaled_dot_product_attention(q, k, v)  # [b, 1, hw, c]
        return x + self.proj_out(o.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad of the original LDM code


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class _Mid(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, d: VAEDims):
        super().__init__()
        self.conv_in = nn.Conv2d(d.in_channels, d.ch, 3, 1, 1)
        mults = (1,) + tuple(d.ch_mult)
        self.down = nn.ModuleList()
        for i, m in enumerate(d.ch_mult):
            lvl, cin = _Level(), d.ch * mults[i]
            for _ in range(d.num_res_blocks):
                lvl.block.append(ResnetBlock(cin, d.ch * m))
                cin = d.ch * m
                if i in d.attn_levels:
                    lvl.attn.append(AttnBlock(cin))
            if i != len(d.ch_mult) - 1:
                lvl.downsample = Downsample(cin)
            self.down.append(lvl)
        self.mid = _Mid(cin)
        self.norm_out = _norm(cin, "silu")
        self.conv_out = nn.Conv2d(cin, 2 * d.z_channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for lvl in self.down:
            for j, blk in enumerate(lvl.block):
                h = blk(h)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample(h)
        return self.conv_out(self.norm_out(self.mid(h)))


class Decoder(nn.Module):
    def __init__(self, d: VAEDims):
        super().__init__()
        cin = d.ch * d.ch_mult[-1]
        self.conv_in = nn.Conv2d(d.z_channels, cin, 3, 1, 1)
        self.mid = _Mid(cin)
        ups = []
        for i in reversed(range(len(d.ch_mult))):
            lvl, cout = _Level(), d.ch * d.ch_mult[i]
            for _ in range(d.num_res_blocks + 1):
                lvl.block.append(ResnetBlock(cin, cout))
                cin = cout
                if i in d.attn_levels:
                    lvl.attn.append(AttnBlock(cin))
            if i != 0:
                lvl.upsample = Upsample(cin)
            ups.insert(0, lvl)  # stored low-index-first, like the checkpoint's ``up.{i}``
        self.up = nn.ModuleList(ups)
        self.norm_out = _norm(cin, "silu")
        self.conv_out = nn.Conv2d(cin, d.out_ch, 3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for lvl in reversed(self.up):
            for j, blk in enumerate(lvl.block):
                h = blk(h)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
            if hasattr(lvl, "upsample"):
                h = lvl.upsample(h)
        return self.conv_out(self.norm_out(h))


class AutoencoderKL(nn.Module):
    """Encoder -> quant_conv -> diagonal Gaussian; post_quant_conv -> Decoder."""

    def __init__(self, d: VAEDims):
        super().__init__()
        self.encoder, self.decoder = Encoder(d), Decoder(d)
        self.quant_conv = nn.Conv2d(2 * d.z_channels, 2 * d.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(d.embed_dim, d.z_channels, 1)

    def moments(self, x: Tensor) -> Tensor:
        """Image ``[B, 3, H, W]`` in [-1, 1] -> ``[B, 2*z, H/8, W/8]`` = [mean ; logvar]."""
        return self.quant_conv(self.encoder(x))

    @staticmethod
    def sample(moments: Tensor, noise: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """Posterior sample ``mean + exp(0.5 * clamp(logvar, -30, 20)) * noise`` (unscaled latent)."""
        mean, logvar = moments.chunk(2, dim=1)
        if noise is None:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise

    def decode(self, z: Tensor) -> Tensor:
        """Unscaled latent ``[B, z, h, w]`` -> image ``[B, 3, 8h, 8w]`` in about [-1, 1]."""
        return self.decoder(self.post_quant_conv(z))
