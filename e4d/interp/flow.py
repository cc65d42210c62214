"""Weights-free interpolator: OpenCV DIS optical flow + Super-SloMo time blend (reference ARCHITECTURE §10).

1. Bidirectional flow F01, F10 on grayscale with DIS (OpenCV, no weights).
2. Backward flows to time t (quadratic blend, Jiang et al. 2018 "Super SloMo"):
   F_t0 = -t(1-t) F01 + t^2 F10,  F_t1 = (1-t)^2 F01 - t(1-t) F10.
3. Warp both frames with the RIFE warp and blend with weights (1-t) v0 and t v1, where v0, v1 are visibility
   maps from a forward-backward consistency check, normalised.
Same I/O contract as RIFE; results do not match RIFE numerically.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ..limits import check_finite_fields
from ..rife.warp import warp
from .base import Interpolator, TimeArg, check_pair, time_vector


@dataclass
class FlowConfig:
    """Settings of the OpenCV flow fallback."""

    preset: str = "medium"
    """DIS preset: "ultrafast", "fast" or "medium" (slower, better on large motion)."""
    consistency_sigma: float = 1.0
    """Forward-backward error (pixels) at which a pixel's visibility weight drops to exp(-1)."""

    def validate(self) -> None:
        """Raise ValueError naming the field, its rule, the value and the fix."""
        check_finite_fields(self)  # NaN passes every range check below
        if self.preset not in _PRESETS:
            raise ValueError(f"FlowConfig.preset must be one of {sorted(_PRESETS)}, got {self.preset!r}; use 'medium'")
        if self.consistency_sigma <= 0:
            raise ValueError(f"FlowConfig.consistency_sigma must be > 0, got {self.consistency_sigma}; use 1.0")


_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}


def _gray_u8(img: Tensor) -> list[np.ndarray]:
    """``[B, 3, H, W]`` in [0, 1] -> list of HxW uint8 luma images (BT.601 weights)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(1, 3, 1, 1)
    g = (img.detach().float().cpu().clamp(0, 1) * w).sum(1).mul(255).round().to(torch.uint8).numpy()
    return list(g)


def dis_flow(src: list[np.ndarray], dst: list[np.ndarray], preset: str = "medium") -> Tensor:
    """Forward flow from each ``src`` to ``dst`` image: ``src(x) ~ dst(x + F(x))``; ``[B, 2, H, W]`` float32 CPU.

    Identical (src, dst) pairs in one call are computed once: the same pair at several times t (multiplier > 2)
    then costs one DIS run, which dominates the fallback's time.
    """
    import hashlib

    import cv2  # heavy optional import, only when the fallback runs

    if preset not in _PRESETS:
        raise ValueError(f"DIS preset must be one of {sorted(_PRESETS)}, got {preset!r}")
    dis = cv2.DISOpticalFlow_create(_PRESETS[preset])
    done: dict[bytes, np.ndarray] = {}
    flows = []
    for a, b in zip(src, dst):
        key = hashlib.blake2b(a.tobytes() + b.tobytes(), digest_size=16).digest()
        if key not in done:
            done[key] = dis.calc(a, b, None)  # H x W x 2 (x, y)
        flows.append(done[key])
    return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()


def time_flows(f01: Tensor, f10: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Super-SloMo backward flows from time t to frame 0 and to frame 1; ``t`` is ``[B]``."""
    t = t.view(-1, 1, 1, 1).to(f01.dtype)
    ft0 = -t * (1 - t) * f01 + t * t * f10
    ft1 = (1 - t) ** 2 * f01 - t * (1 - t) * f10
    return ft0, ft1


def visibility(f_ab: Tensor, f_ba: Tensor, sigma: float) -> Tensor:
    """Per-pixel weight in frame a: exp(-|F_ab + F_ba(x + F_ab)|^2 / sigma^2); ``[B, 1, H, W]``."""
    err = f_ab + warp(f_ba, f_ab)
    return torch.exp(-(err * err).sum(1, keepdim=True) / (sigma * sigma))


class FlowInterpolator(Interpolator):
    """Classical-flow frame interpolator that needs no weights (the pipeline's out-of-the-box default)."""

    midpoint_only = False

    def __init__(self, config: Optional[FlowConfig] = None) -> None:
        self.config = config or FlowConfig()
        self.config.validate()
        self.name = f"flow (no weights, OpenCV DIS {self.config.preset})"

    @torch.no_grad()
    def interpolate_with_extra(self, img0: Tensor, img1: Tensor, t: TimeArg = 0.5, extra0: Optional[Tensor] = None,
                               extra1: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        check_pair(img0, img1, extra0, extra1)
        B, _, H, W = img0.shape
        if H < 2 or W < 2:
            raise ValueError(f"flow interpolation needs images of at least 2x2, got {H}x{W}")
        dev, dt = img0.device, torch.float32
        tv = time_vector(t, B, dev, dt)
        g0, g1 = _gray_u8(img0), _gray_u8(img1)
        f01 = dis_flow(g0, g1, self.config.preset).to(dev)
        f10 = dis_flow(g1, g0, self.config.preset).to(dev)
        ft0, ft1 = time_flows(f01, f10, tv)
        s = self.config.consistency_sigma
        # visibility is measured in each source frame, then carried to time t by the same backward flow
        v0 = warp(visibility(f01, f10, s), ft0)
        v1 = warp(visibility(f10, f01, s), ft1)
        tt = tv.view(B, 1, 1, 1)
        w0, w1 = (1 - tt) * v0, tt * v1
        norm = w0 + w1
        # where both frames are flagged occluded, fall back to the plain time-linear weights
        fallback = norm < 1e-4
        w0 = torch.where(fallback, 1 - tt, w0 / norm.clamp_min(1e-4))
        w1 = torch.where(fallback, tt.expand_as(w1), w1 / norm.clamp_min(1e-4))

        def blend(x0: Tensor, x1: Tensor) -> Tensor:
            return warp(x0.to(dt), ft0) * w0 + warp(x1.to(dt), ft1) * w1

        out = blend(img0.clamp(0, 1), img1.clamp(0, 1)).clamp(0, 1).to(img0.dtype)
        eout = None if extra0 is None else blend(extra0, extra1).to(extra0.dtype)
        return out, eout
