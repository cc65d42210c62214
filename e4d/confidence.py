"""Confidence contract: per-pixel weights of the reconstruction loss (paper §4.2, eq. 13 and 16-17).

The maps themselves are computed from a frame interpolator in :mod:`e4d.confidence_maps`; this module holds
only the container every stage agrees on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


@dataclass
class Confidence:
    """Per-image confidence maps in [0, 1].

    Attributes:
        c_rgb: ``[T, V, H, W]`` weight of the L1 colour term (paper eq. 17, C_rgb).
        c_ssim: ``[T, V, H, W]`` weight of the (1 - SSIM) term (paper eq. 13, C_ssim).
    """

    c_rgb: Tensor
    c_ssim: Tensor

    def __post_init__(self) -> None:
        if self.c_rgb.ndim != 4 or self.c_rgb.shape != self.c_ssim.shape:
            raise ValueError(f"confidence maps must both be [T, V, H, W], got c_rgb {tuple(self.c_rgb.shape)} "
                             f"and c_ssim {tuple(self.c_ssim.shape)}")
        for name in ("c_rgb", "c_ssim"):
            x = getattr(self, name)
            if not torch.isfinite(x).all():
                raise ValueError(f"confidence {name} contains NaN or inf")
            if x.numel() and (x.min() < 0 or x.max() > 1):
                raise ValueError(f"confidence {name} must be in [0, 1], got range [{float(x.min()):.3g}, {float(x.max()):.3g}]")

    @staticmethod
    def ones(T: int, V: int, H: int, W: int, device=None, dtype=torch.float32) -> "Confidence":
        """All-ones maps: the unweighted loss."""
        one = torch.ones(T, V, H, W, device=device, dtype=dtype)
        return Confidence(one, one.clone())

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.c_rgb.shape)  # type: ignore[return-value]

    def check_matches(self, T: int, V: int, H: int, W: int) -> None:
        if self.shape != (T, V, H, W):
            raise ValueError(f"confidence maps are {list(self.shape)} but the view matrix is [T, V, H, W]="
                             f"{[T, V, H, W]}; compute confidence on the same (interpolated) view matrix")

    def to(self, device=None, dtype=None) -> "Confidence":
        return Confidence(self.c_rgb.to(device=device, dtype=dtype), self.c_ssim.to(device=device, dtype=dtype))


def confidence_or_ones(conf: Optional[Confidence], T: int, V: int, H: int, W: int, device=None) -> Confidence:
    """``conf`` checked against the view matrix size, or all-ones maps when absent."""
    if conf is None:
        return Confidence.ones(T, V, H, W, device=device)
    conf.check_matches(T, V, H, W)
    return conf.to(device)
