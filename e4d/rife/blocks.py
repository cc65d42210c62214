"""RIFE building blocks, named so that their state-dict keys equal the official checkpoints' keys.

Reference: shared/reference/rife/ARCHITECTURE.md §2 (4.x blocks, encoders) and §4 (HD v3.6 block).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def _resize(x: Tensor, factor: float) -> Tensor:
    """Bilinear resize by a scale factor; the official code passes scale_factor (not a size), no antialias."""
    if factor == 1.0:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def conv_lrelu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (bias) + LeakyReLU(0.2): keys ``.0.weight``, ``.0.bias``."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, True))


def conv_prelu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (bias) + PReLU(cout) (v3.6): keys ``.0.weight``, ``.0.bias``, ``.1.weight``."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.PReLU(cout))


class ResConv(nn.Module):
    """y = LeakyReLU0.2(conv3x3(x) * beta + x); beta [1, c, 1, 1] is learned and must be applied."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, c, 1, 1))
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """4.5+ flow block: /4 conv stem, 8 ResConvs, ConvTranspose + PixelShuffle back to the block input size.

    Returns ``(flow_delta [B,4,H,W], mask_logit [B,1,H,W], feat [B,out-5,H,W] or None)`` at the caller's size.
    """

    def __init__(self, cin: int, c: int, out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv0 = nn.Sequential(conv_lrelu(cin, c // 2, 2), conv_lrelu(c // 2, c, 2))
        self.convblock = nn.Sequential(*[ResConv(c) for _ in range(8)])
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * out_channels, 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: Tensor, flow: Optional[Tensor], scale: float) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        x = _resize(x, 1.0 / scale)
        if flow is not None:
            # flow goes LAST, resized and divided by scale (its pixel units shrink with the image)
            x = torch.cat((x, _resize(flow, 1.0 / scale) / scale), 1)
        tmp = self.lastconv(self.convblock(self.conv0(x)))
        tmp = _resize(tmp, scale)
        feat = tmp[:, 5:] if self.out_channels > 6 else None  # 4.21+: 8 feature channels for the next block
        return tmp[:, :4] * scale, tmp[:, 4:5], feat


class Encoder47(nn.Module):
    """4.7 per-frame encoder: conv 3->16 stride 2, then directly ConvTranspose 16->4 (no activation)."""

    def __init__(self, hidden: int = 16, out: int = 4) -> None:
        super().__init__()
        self.encode = nn.Sequential(nn.Conv2d(3, hidden, 3, 2, 1), nn.ConvTranspose2d(hidden, out, 4, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.encode(x)


class Head(nn.Module):
    """4.13+ per-frame encoder ("Head"): conv s2, lrelu, conv, lrelu, conv, lrelu, ConvTranspose to k channels."""

    def __init__(self, hidden: int, out: int) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, hidden, 3, 2, 1)
        self.cnn1 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn2 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(hidden, out, 4, 2, 1)
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        return self.cnn3(x)


class IFBlockHD(nn.Module):
    """HD v3.6 block (c=90): conv stem /4, 4 residual pairs, separate ConvTranspose heads for flow and mask."""

    def __init__(self, cin: int, c: int = 90) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(conv_prelu(cin, c // 2, 2), conv_prelu(c // 2, c, 2))
        for i in range(4):
            setattr(self, f"convblock{i}", nn.Sequential(conv_prelu(c, c), conv_prelu(c, c)))
        self.conv1 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.PReLU(c // 2),
                                   nn.ConvTranspose2d(c // 2, 4, 4, 2, 1))
        self.conv2 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.PReLU(c // 2),
                                   nn.ConvTranspose2d(c // 2, 1, 4, 2, 1))

    def forward(self, x: Tensor, flow: Tensor, scale: float) -> tuple[Tensor, Tensor]:
        x = torch.cat((_resize(x, 1.0 / scale), _resize(flow, 1.0 / scale) / scale), 1)
        feat = self.conv0(x)
        for i in range(4):
            feat = getattr(self, f"convblock{i}")(feat) + feat
        flow = _resize(self.conv1(feat), scale) * scale
        mask = _resize(self.conv2(feat), scale)
        return flow, mask
