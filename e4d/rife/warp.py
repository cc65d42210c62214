"""Backward warp shared by every RIFE version and the flow fallback (reference ARCHITECTURE §5).

All public RIFE code samples with ``grid_sample(bilinear, padding_mode="border", align_corners=True)`` on a
grid built from ``linspace(-1, 1, W) x linspace(-1, 1, H)`` plus the flow scaled by ``((W-1)/2, (H-1)/2)``.
Any other convention (zeros padding, align_corners=False) changes results near the borders.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def warp(img: Tensor, flow: Tensor) -> Tensor:
    """Sample ``img`` at ``(x + u, y + v)`` for every pixel.

    Args:
        img: ``[B, C, H, W]`` image or feature map.
        flow: ``[B, 2, H, W]`` backward offsets in pixels, channel 0 = x (width), channel 1 = y (height).

    Returns:
        ``[B, C, H, W]``, same dtype as ``img`` (the grid is cast to it, as in the ComfyUI fp16 path).
    """
    if img.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[0] != img.shape[0] \
            or flow.shape[2:] != img.shape[2:]:
        raise ValueError(f"warp needs img [B, C, H, W] and flow [B, 2, H, W] of one size, got "
                         f"{tuple(img.shape)} and {tuple(flow.shape)}")
    B, _, H, W = flow.shape
    if H < 2 or W < 2:
        raise ValueError(f"warp needs H, W >= 2 (the grid is normalised by W-1 and H-1), got {H}x{W}")
    xs = torch.linspace(-1.0, 1.0, W, device=flow.device, dtype=flow.dtype).view(1, 1, W).expand(B, H, W)
    ys = torch.linspace(-1.0, 1.0, H, device=flow.device, dtype=flow.dtype).view(1, H, 1).expand(B, H, W)
    gx = xs + flow[:, 0] / ((W - 1.0) / 2.0)
    gy = ys + flow[:, 1] / ((H - 1.0) / 2.0)
    grid = torch.stack((gx, gy), dim=-1).to(img.dtype)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)


def swap_flow(flow: Tensor) -> Tensor:
    """Swap the two halves of a bidirectional flow ``[B, 4, H, W]`` (to-frame0 <-> to-frame1)."""
    return torch.cat((flow[:, 2:4], flow[:, :2]), 1)
