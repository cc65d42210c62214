"""RIFE HD v3.6 IFNet (Efficient4D's model/flownet.pkl), our implementation.

Reference: shared/reference/rife/ARCHITECTURE.md §4. No timestep input (always the midpoint); both
directions always run and are averaged (built-in ensemble). ``block_tea`` exists only in the checkpoint.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from .blocks import IFBlockHD
from .warp import swap_flow, warp

BASE_SCALES = (4.0, 2.0, 1.0)
MIN_MULTIPLE = 16  # 4 * max(BASE_SCALES); Efficient4D pads to 32


class IFNet36(nn.Module):
    """HD v3.6: three c=90 blocks at scales [4, 2, 1] / scale, flow and mask accumulated, reverse pass averaged."""

    version = "3.6"

    def __init__(self, c: int = 90) -> None:
        super().__init__()
        self.block0 = IFBlockHD(7 + 4, c)
        self.block1 = IFBlockHD(7 + 4, c)
        self.block2 = IFBlockHD(7 + 4, c)

    def forward(self, img0: Tensor, img1: Tensor, scale: float = 1.0,
                debug: Optional[dict] = None) -> tuple[Tensor, Tensor, Tensor]:
        """Midpoint of padded frames ``[B, 3, H, W]``; returns ``(out, flow [B,4,H,W], mask_sigmoid [B,1,H,W])``."""
        B, _, H, W = img0.shape
        flow = img0.new_zeros(B, 4, H, W)
        mask = img0.new_zeros(B, 1, H, W)
        w0, w1 = img0, img1
        for i, block in enumerate((self.block0, self.block1, self.block2)):
            s = BASE_SCALES[i] / scale
            f_fwd, m_fwd = block(torch.cat((w0, w1, mask), 1), flow, s)
            f_rev, m_rev = block(torch.cat((w1, w0, -mask), 1), swap_flow(flow), s)
            flow = flow + (f_fwd + swap_flow(f_rev)) / 2
            mask = mask + (m_fwd - m_rev) / 2
            w0, w1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        m = torch.sigmoid(mask)
        if debug is not None:
            debug["flow_final"], debug["mask_sigmoid"] = flow, m
        return w0 * m + w1 * (1 - m), flow, m
