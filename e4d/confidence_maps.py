"""Confidence maps from frame interpolation (paper §4.2, eq. 13, 16, 17).

For every generated image I_t (per view) the interpolator predicts it from its temporal neighbours:
Î_t1 = Interp(I_{t-1}, I_{t+1}) and Î_t2 = Interp(I_{t-2}, I_{t+2}) (midpoints, t = 0.5). Where the
prediction disagrees with I_t, the generator was temporally inconsistent and the fit should trust it less.

Two modes:

* ``"paper"``: eq. 16 interpolation error per pair, |I_t - Î| averaged over the 3 colour channels (stated choice:
  the paper writes |.| of RGB images; the channel mean keeps the map in [0, 1]);
  eq. 17 C_rgb = 1 - ½(E_1 + E_2); eq. 13 C_ssim = 1 - ½((1 - S_1) + (1 - S_2)) with S the channel-mean SSIM map
  (e4d.metrics.ssim_map). Both clamped to [0, 1].
* ``"official"``: Efficient4D's video_confidence.py: RGB error = sum over channels, SSIM error = 1 - channel-mean
  SSIM, the pairs' errors averaged, then per image conf = (max - err) / max(max - err), clamped.

Ends of the sequence use the neighbours that exist (the second and second-to-last frame only ±1); frames with
no neighbour pair on both sides (first and last) get confidence 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .confidence import Confidence
from .limits import check_finite_fields
from .metrics import ssim_map
from .interp.base import Interpolator
from .progress import ProgressCallback, report
from .viewmatrix import ViewMatrix

MODES = ("paper", "official")


@dataclass
class ConfidenceConfig:
    """How confidence maps are computed."""

    mode: str = "paper"
    """"paper" (eq. 13/16/17, absolute errors) or "official" (per-image max-normalised, as the released code)."""
    gaps: tuple[int, ...] = (1, 2)
    """Neighbour distances k of the predictions Î = Interp(I_{t-k}, I_{t+k}); the paper uses 1 and 2."""
    batch: int = 64
    """Images per interpolator call."""

    def validate(self) -> None:
        """Raise ValueError naming the field, its rule, the value and the fix."""
        check_finite_fields(self)  # NaN passes every range check below
        if self.mode not in MODES:
            raise ValueError(f"ConfidenceConfig.mode must be one of {MODES}, got {self.mode!r}")
        if not self.gaps or any(int(g) < 1 for g in self.gaps):
            raise ValueError(f"ConfidenceConfig.gaps must be positive integers, got {self.gaps}; use (1, 2)")
        if self.batch < 1:
            raise ValueError(f"ConfidenceConfig.batch must be >= 1, got {self.batch}")


def interpolation_error(image: Tensor, predicted: Tensor, reduce: str = "mean") -> Tensor:
    """Eq. 16 (as we read it): per-pixel |I_t - Î_t| of ``[B, 3, H, W]`` images -> ``[B, H, W]``.

    ``reduce="mean"`` averages the channels (paper mode), ``"sum"`` adds them (official code).
    """
    d = (image - predicted).abs()
    return d.mean(1) if reduce == "mean" else d.sum(1)


def ssim_error(image: Tensor, predicted: Tensor) -> Tensor:
    """Per-pixel 1 - SSIM (channel mean) of ``[B, 3, H, W]`` images -> ``[B, H, W]``."""
    return 1.0 - ssim_map(image, predicted).mean(1)


def rgb_confidence(errors: Tensor, count: Tensor) -> Tensor:
    """Eq. 17: C_rgb = 1 - mean over the available pairs of the interpolation error; 1 where no pair exists.

    Args:
        errors: ``[..., H, W]`` sum of the per-pair errors; count: ``[...]`` number of pairs summed.
    """
    mean = errors / count.clamp_min(1).view(*count.shape, 1, 1).to(errors.dtype)
    return (1.0 - mean).clamp(0, 1)


def ssim_confidence(ssim_errors: Tensor, count: Tensor) -> Tensor:
    """Eq. 13: C_ssim = 1 - mean over the available pairs of (1 - SSIM); 1 where no pair exists."""
    return rgb_confidence(ssim_errors, count)


def official_confidence(errors: Tensor, count: Tensor) -> Tensor:
    """Released-code normalisation per image: err averaged over pairs, conf = (max - err) / max(max - err).

    Images without any pair (first, last frame) and constant-error images get all ones.
    """
    err = errors / count.clamp_min(1).view(*count.shape, 1, 1).to(errors.dtype)
    mx = err.amax(dim=(-2, -1), keepdim=True)
    gap = mx - err
    den = gap.amax(dim=(-2, -1), keepdim=True)
    conf = torch.where(den > 0, gap / den.clamp_min(1e-12), torch.ones_like(gap)).clamp(0, 1)
    none = (count == 0).view(*count.shape, 1, 1).expand_as(conf)
    return torch.where(none, torch.ones_like(conf), conf)


def compute_confidence(images: Tensor, interp: Interpolator, config: Optional[ConfidenceConfig] = None,
                       callback: Optional[ProgressCallback] = None) -> Confidence:
    """Confidence maps of a view-matrix image tensor.

    Args:
        images: ``[T, V, H, W, 3]`` in [0, 1] (typically the time-interpolated view matrix).
        interp: the frame interpolator (RIFE or flow fallback), used at t = 0.5.
        config: mode, neighbour gaps and batch size.
        callback: progress after each batch.

    Returns:
        :class:`~e4d.confidence.Confidence` with ``c_rgb`` and ``c_ssim`` of shape ``[T, V, H, W]``.
    """
    cfg = config or ConfidenceConfig()
    cfg.validate()
    if images.ndim != 5 or images.shape[-1] != 3:
        raise ValueError(f"images must be [T, V, H, W, 3], got {tuple(images.shape)}")
    T, V, H, W, _ = images.shape
    seq = images.permute(0, 1, 4, 2, 3)  # [T, V, 3, H, W]
    # tasks: (t, v, gap) for every t with both neighbours at distance gap
    tasks = [(t, v, g) for g in cfg.gaps for t in range(g, T - g) for v in range(V)]
    rgb_sum = images.new_zeros(T, V, H, W)
    ssim_sum = images.new_zeros(T, V, H, W)
    count = torch.zeros(T, dtype=torch.long, device=images.device)
    for g in cfg.gaps:
        if T > 2 * g:
            count[g:T - g] += 1
    reduce = "mean" if cfg.mode == "paper" else "sum"
    total = -(-len(tasks) // cfg.batch)
    for step, j in enumerate(range(0, len(tasks), cfg.batch), 1):
        chunk = torch.tensor(tasks[j:j + cfg.batch], device=images.device)
        t, v, g = chunk[:, 0], chunk[:, 1], chunk[:, 2]
        pred = interp.interpolate(seq[t - g, v], seq[t + g, v], 0.5).to(images.dtype)
        target = seq[t, v]
        rgb_sum.index_put_((t, v), interpolation_error(target, pred, reduce), accumulate=True)
        ssim_sum.index_put_((t, v), ssim_error(target, pred), accumulate=True)
        report(callback, step, total, interpolator=interp.name)
    cnt = count.view(T, 1).expand(T, V)
    if cfg.mode == "paper":
        return Confidence(rgb_confidence(rgb_sum, cnt), ssim_confidence(ssim_sum, cnt))
    return Confidence(official_confidence(rgb_sum, cnt), official_confidence(ssim_sum, cnt))


def confidence_for_view_matrix(vm: ViewMatrix, interp: Interpolator, config: Optional[ConfidenceConfig] = None,
                               callback: Optional[ProgressCallback] = None) -> Confidence:
    """:func:`compute_confidence` on ``vm.images``, tied to ``vm`` (its times), so the fit refuses the maps for
    another view matrix. The images are read on the interpolator's device; the maps come back there."""
    conf = compute_confidence(vm.images.to(interp.device), interp, config, callback)
    return Confidence(conf.c_rgb, conf.c_ssim, vm.times.to(conf.c_rgb.device))


def confidence_preview(conf: Confidence, max_views: int = 16) -> Tensor:
    """Grey preview ``[T, 2H, V'W, 3]``: per time, a row of C_rgb over a row of C_ssim (V' = min(V, max_views))."""
    c_rgb, c_ssim = conf.c_rgb[:, :max_views], conf.c_ssim[:, :max_views]
    T, V, H, W = c_rgb.shape
    rows = torch.cat((c_rgb, c_ssim), 2)  # [T, V, 2H, W]
    grid = rows.permute(0, 2, 1, 3).reshape(T, 2 * H, V * W)
    return grid.unsqueeze(-1).expand(T, 2 * H, V * W, 3).float().contiguous()
