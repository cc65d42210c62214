"""Confidence contract: per-pixel weights of the reconstruction loss (paper §4.2, eq. 13 and 16-17).

The maps themselves are computed from a frame interpolator in :mod:`e4d.confidence_maps`; this module holds
only the container every stage agrees on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .viewmatrix import ViewMatrix


@dataclass
class Confidence:
    """Per-image confidence maps in [0, 1] of one view matrix.

    Attributes:
        c_rgb: ``[T, V, H, W]`` weight of the L1 colour term (paper eq. 17, C_rgb).
        c_ssim: ``[T, V, H, W]`` weight of the (1 - SSIM) term (paper eq. 13, C_ssim).
        times: ``[T]`` times of the view matrix the maps were computed on
            (:func:`e4d.confidence_maps.confidence_for_view_matrix` sets them); the fit then refuses the maps for
            a view matrix with other times. None for maps not tied to a matrix (checked by shape only).
    """

    c_rgb: Tensor
    c_ssim: Tensor
    times: Optional[Tensor] = None

    def __post_init__(self) -> None:
        if self.c_rgb.ndim != 4 or self.c_rgb.shape != self.c_ssim.shape:
            raise ValueError(f"confidence maps must both be [T, V, H, W], got c_rgb {tuple(self.c_rgb.shape)} "
                             f"and c_ssim {tuple(self.c_ssim.shape)}")
        if self.times is not None and tuple(self.times.shape) != (self.c_rgb.shape[0],):
            raise ValueError(f"confidence times must be [T]=[{self.c_rgb.shape[0]}] like the maps, got "
                             f"{tuple(self.times.shape)}")
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

    def check_matches(self, vm: ViewMatrix) -> None:
        """Raise ValueError unless these maps score ``vm``: same ``[T, V, H, W]`` and, when known, the same times."""
        want = (vm.T, vm.V, vm.H, vm.W)
        if self.shape != want:
            raise ValueError(f"confidence maps are {list(self.shape)} but the view matrix is [T, V, H, W]="
                             f"{list(want)}; compute confidence on the same (interpolated) view matrix")
        if self.times is not None and not torch.allclose(self.times.to(vm.times.device, torch.float32),
                                                         vm.times.float(), atol=1e-6, rtol=0):
            raise ValueError(f"the confidence maps were computed on a view matrix with times "
                             f"{self.times.tolist()[:4]}..., not this one ({vm.times.tolist()[:4]}...); compute "
                             "confidence on the view matrix you fit")

    def to(self, device=None, dtype=None) -> "Confidence":
        return Confidence(self.c_rgb.to(device=device, dtype=dtype), self.c_ssim.to(device=device, dtype=dtype),
                          None if self.times is None else self.times.to(device=device))
