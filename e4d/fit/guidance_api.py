"""The guidance hook of the fit: an optional extra loss on renders from sampled cameras (paper eq. 14's SDS term).

The fit never needs guidance; a later stage (e.g. Zero123 SDS) supplies an object of this shape. Protocol, in
the order the trainer calls it:

1. ``prepare(vm)`` once, before the first step (encode reference frames, move models, ...).
2. Each step: ``sample_cameras(time_idx [B], step, total, generator) -> Cameras`` with exactly B cameras (one per
   sampled time index into ``vm.times``; all of one image size); ``generator`` is the fit's CPU
   ``torch.Generator`` so the whole fit stays deterministic given its seed.
3. The trainer renders those cameras at ``vm.times[time_idx]`` on the fit's background, then calls
   ``loss(renders [B, 3, H, W] in [0, 1], time_idx [B], step, total) -> scalar Tensor``; gradients flow back into
   the Gaussians. The total loss adds ``config.lambda_sds * weight * loss``.

``step`` counts from 0 to ``total - 1``.

Optional: ``views_per_time`` (int >= 1, default 1). With k > 1 the trainer passes each sampled time index k times
(``time_idx.repeat_interleave(k)``, so ``sample_cameras`` returns B * k cameras, k consecutive ones per time), renders
them as B slices x k cameras and hands ``loss`` the ``[B * k, 3, H, W]`` renders with the repeated indices.

Optional: ``working_bytes(views) -> int``: device memory one guidance step over ``views`` renders needs beyond the
guidance's weights; a host that manages memory (the ComfyUI fit node) makes that much room before the fit.

Optional: ``skips(step) -> bool``. Where it returns True the trainer neither samples cameras nor renders them
for that step (the guidance would contribute nothing), so a guidance applied every k-th step costs nothing in
between.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..cameras import Cameras
from ..viewmatrix import ViewMatrix


@runtime_checkable
class Guidance(Protocol):
    """Structural type of a guidance object (see the module docstring)."""

    weight: float

    def prepare(self, vm: ViewMatrix) -> None: ...

    def sample_cameras(self, time_idx: Tensor, step: int, total: int, generator: torch.Generator) -> Cameras: ...

    def loss(self, renders: Tensor, time_idx: Tensor, step: int, total: int) -> Tensor: ...


def check_guidance(guidance: object) -> None:
    """Raise TypeError naming what a guidance object lacks."""
    missing = [n for n in ("weight", "prepare", "sample_cameras", "loss") if not hasattr(guidance, n)]
    if missing:
        raise TypeError(f"guidance object {type(guidance).__name__} lacks {missing}; it must provide weight, "
                        "prepare(vm), sample_cameras(time_idx, step, total, generator) and "
                        "loss(renders, time_idx, step, total) (see e4d.fit.guidance_api)")
    w = getattr(guidance, "weight")
    if not isinstance(w, (int, float)) or w != w or w < 0:
        raise ValueError(f"guidance.weight must be a number >= 0, got {w!r}")
    guidance_views_per_time(guidance)


def guidance_skips(guidance: object, step: int) -> bool:
    """True when ``guidance`` declares (optional ``skips(step)``) that it contributes nothing at ``step``."""
    skips = getattr(guidance, "skips", None)
    return bool(skips(step)) if callable(skips) else False


def guidance_views_per_time(guidance: object) -> int:
    """The guidance's optional ``views_per_time`` (novel views per sampled time), 1 when it has none."""
    k = getattr(guidance, "views_per_time", 1)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"guidance.views_per_time must be an int >= 1, got {k!r}")
    return k


def check_guidance_cameras(cams: object, batch: int) -> Cameras:
    """Validate what ``sample_cameras`` returned: a Cameras of exactly ``batch`` views."""
    if not isinstance(cams, Cameras):
        raise TypeError(f"guidance.sample_cameras must return e4d.cameras.Cameras, got {type(cams).__name__}")
    if len(cams) != batch:
        raise ValueError(f"guidance.sample_cameras must return one camera per sampled time ({batch}), got {len(cams)}")
    return cams


def check_guidance_loss(value: object) -> Tensor:
    """Validate what ``loss`` returned: a scalar tensor (finiteness is not checked: that would sync every step)."""
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise TypeError(f"guidance.loss must return a scalar torch.Tensor, got {shape}")
    return value.reshape(())


__all__ = ["Guidance", "check_guidance", "check_guidance_cameras", "check_guidance_loss", "guidance_views_per_time"]
