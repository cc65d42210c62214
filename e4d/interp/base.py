"""The model-agnostic frame-interpolator contract shared by RIFE, the flow fallback and the sequence runner.

Contract: ``interpolate(img0 [B,3,H,W], img1 [B,3,H,W], t: float | Tensor[B]) -> [B,3,H,W]`` in [0, 1].
``interpolate_with_extra`` also carries extra channels (alpha) through the SAME flow and blend weights, so an
object's coverage moves with its colour. Inputs may live anywhere; results come back on the inputs' device
and dtype.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Union

import torch
from torch import Tensor

TimeArg = Union[float, Tensor]


def check_pair(img0: Tensor, img1: Tensor, extra0: Optional[Tensor] = None, extra1: Optional[Tensor] = None) -> None:
    """Shape rule shared by every interpolator."""
    if img0.ndim != 4 or img0.shape[1] != 3 or img0.shape != img1.shape:
        raise ValueError(f"interpolate needs img0, img1 as [B, 3, H, W] of one shape, got {tuple(img0.shape)} "
                         f"and {tuple(img1.shape)}")
    if (extra0 is None) != (extra1 is None):
        raise ValueError("pass both extra0 and extra1 or neither")
    if extra0 is not None and (extra0.shape != extra1.shape or extra0.ndim != 4
                               or extra0.shape[0] != img0.shape[0] or extra0.shape[2:] != img0.shape[2:]):
        raise ValueError(f"extra channels must be [B, C, H, W] matching the images {tuple(img0.shape)}, got "
                         f"{tuple(extra0.shape)} and {tuple(extra1.shape)}")


def time_vector(t: TimeArg, B: int, device, dtype) -> Tensor:
    """``t`` as a ``[B]`` tensor; floats broadcast, tensors must hold B (or 1) values in [0, 1]."""
    tt = torch.as_tensor(t, dtype=torch.float64 if not isinstance(t, Tensor) else t.dtype).flatten()
    if tt.numel() == 1:
        tt = tt.expand(B)
    if tt.numel() != B:
        raise ValueError(f"t must be a float or a [B]={B} tensor, got {tt.numel()} values")
    if bool(((tt < 0) | (tt > 1)).any()):
        raise ValueError(f"t must lie in [0, 1], got {tt.tolist()}")
    return tt.to(device=device, dtype=dtype)


class Interpolator(ABC):
    """Anything that makes the frame between two frames at time t."""

    name: str = "interpolator"
    """Human-readable description of what runs, e.g. "rife 4.7 (rife47.pth)"."""
    midpoint_only: bool = False
    """True when the model only makes t=0.5; other t are then reached by recursive bisection."""

    def interpolate(self, img0: Tensor, img1: Tensor, t: TimeArg = 0.5) -> Tensor:
        """``[B,3,H,W]`` frame at time ``t`` between ``img0`` (t=0) and ``img1`` (t=1)."""
        return self.interpolate_with_extra(img0, img1, t)[0]

    @abstractmethod
    def interpolate_with_extra(self, img0: Tensor, img1: Tensor, t: TimeArg = 0.5, extra0: Optional[Tensor] = None,
                               extra1: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """Frame at ``t`` plus ``extra`` channels ``[B,C,H,W]`` moved by the same flow and blend weights."""

    def to(self, device=None, dtype=None) -> "Interpolator":
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
