"""The DepthWiseAttention UNet (``model.diffusion_model``): an SD-1.x / zero123 UNet whose middle block and
output blocks 3..11 are followed by depth transformers reading the target view's frustum volume."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import DepthTransformer, SpatialTransformer
from .dims import UNetDims
from .layers import GroupNormAct, timestep_embedding

# output block index -> output_conditions index (official mapping, fixed for 4 levels x 2 res blocks)
OUTPUT_TO_CONDITION = {i: i - 3 for i in range(3, 12)}


class ResBlock(nn.Module):
    def __init__(self, cin: int, emb_dim: int, cout: int):
        super().__init__()
        # GroupNorm + SiLU as one layer; the Identity keeps the checkpoint's indices (in_layers.2, out_layers.3)
        self.in_layers = nn.Sequential(GroupNormAct(32, cin, act="silu"), nn.Identity(), nn.Conv2d(cin, cout, 3, 1, 1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, cout))
        self.out_layers = nn.Sequential(GroupNormAct(32, cout, act="silu"), nn.Identity(), nn.Dropout(0.0),
                                        nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[..., None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepSequential(nn.Sequential):
    """Runs each layer with the arguments it needs (ResBlock: emb, SpatialTransformer: context)."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class DepthWiseAttentionUNet(nn.Module):
    channels_last: bool = False
    """Feed the input in channels_last (set with the conv weights by :func:`~.speed.accelerate`): cuDNN then
    skips its NCHW <-> NHWC transposes around every fp16 convolution."""

    def __init__(self, d: UNetDims):
        super().__init__()
        if len(d.channel_mult) != 4 or d.num_res_blocks != 2:
            raise ValueError(f"SyncDreamer's UNet has 4 levels x 2 res blocks (depth transformers are wired to that "
                             f"layout), got channel_mult={d.channel_mult}, num_res_blocks={d.num_res_blocks}")
        mc, emb_dim = d.model_channels, 4 * d.model_channels
        self.model_channels = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def st(ch: int) -> SpatialTransformer:
            return SpatialTransformer(ch, d.num_heads, ch // d.num_heads, d.transformer_depth, d.context_dim)

        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(d.in_channels, mc, 3, 1, 1))])
        chans, ch = [mc], mc
        for lvl, mult in enumerate(d.channel_mult):
            for _ in range(d.num_res_blocks):
                layers = [ResBlock(ch, emb_dim, mult * mc)]
                ch = mult * mc
                if lvl in d.attention_levels:
                    layers.append(st(ch))
                self.input_blocks.append(TimestepSequential(*layers))
                chans.append(ch)
            if lvl != len(d.channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(Downsample(ch)))
                chans.append(ch)
        self.middle_block = TimestepSequential(ResBlock(ch, emb_dim, ch), st(ch), ResBlock(ch, emb_dim, ch))
        self.output_blocks = nn.ModuleList()
        for lvl, mult in reversed(list(enumerate(d.channel_mult))):
            for i in range(d.num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb_dim, mc * mult)]
                ch = mc * mult
                if lvl in d.attention_levels:
                    layers.append(st(ch))
                if lvl and i == d.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(GroupNormAct(32, ch, act="silu"), nn.Identity(),
                                 nn.Conv2d(mc, d.out_channels, 3, 1, 1))

        d0, d1, d2, d3 = d.volume_dims
        m = d.channel_mult
        self.middle_conditions = DepthTransformer(mc * m[2], d3)
        widths = [(mc * m[2], d2)] * 2 + [(mc * m[2], d1)] + [(mc * m[1], d1)] * 2 + [(mc * m[1], d0)] + \
                 [(mc * m[0], d0)] * 3
        self.output_conditions = nn.ModuleList(DepthTransformer(c, ctx) for c, ctx in widths)

    def forward(self, x: Tensor, t: Tensor, context: Tensor, volumes: Dict[int, Tensor],
                layout: Optional[Tuple[int, int]] = None) -> Tensor:
        """``x [B, 8, h, w]``, ``t [B]``, ``context [B, 1, 768]``, ``volumes {width: [M, C, D, width, width]}``.

        ``layout = (R, Z)``: the batch is R repeats of the M volume rows followed by Z blocks of M rows with an
        all-zero volume (guidance branches share their volumes instead of concatenating copies); None = (1, 0).
        """
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(self.time_embed[0].weight.dtype))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        hs = []
        h = x
        for blk in self.input_blocks:
            h = blk(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        h = self.middle_conditions(h, volumes[h.shape[-1]], layout)
        for i, blk in enumerate(self.output_blocks):
            h = blk(torch.cat([h, hs.pop()], dim=1), emb, context)
            if i in OUTPUT_TO_CONDITION:
                h = self.output_conditions[OUTPUT_TO_CONDITION[i]](h, volumes[h.shape[-1]], layout)
        return self.out(h)
