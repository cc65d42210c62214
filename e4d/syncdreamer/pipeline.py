"""Video frames -> view matrix: frame selection, object preprocessing, SyncDreamer-T sampling (one call for nodes)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..masks import subsample_indices
from ..pipeline_hooks import SubstageClock
from ..preprocess import PrepareConfig, prepare_object_frames
from ..progress import ProgressCallback
from .model import SyncDreamer
from .sampler import SamplerConfig, generate_view_matrix

PREPARE_MODES = ("auto", "clip", "frame", "none")


def select_frames(n: int, k: int) -> Tensor:
    """Indices of ``k`` frames evenly spread over ``n`` (first and last kept); ``k <= 0`` or ``k >= n``: all."""
    return torch.tensor(subsample_indices(n, k), dtype=torch.long)


def syncdreamer_t(model: SyncDreamer, frames: Tensor, alpha: Optional[Tensor] = None, num_frames: int = 16,
                  prepare: str = "auto", crop_size: int = 200, config: SamplerConfig = SamplerConfig(),
                  callback: Optional[ProgressCallback] = None, clock: Optional[SubstageClock] = None):
    """Efficient4D stage 1 on a video: ``frames [N, H, W, 3]`` (+ alpha ``[N, H, W]``) -> ViewMatrix ``[K, 16, ...]``.

    Args:
        frames: video frames in [0, 1]; RGB with ``alpha``, or already prepared (object centred on white, 256²).
        alpha: optional coverage, 1 = object.
        num_frames: K, frames kept (evenly subsampled; 0 = all). Times of the result are the kept frames'
            normalised positions in the input video.
        prepare: ``"clip"`` / ``"frame"``: crop box of :mod:`e4d.preprocess`; ``"none"``: frames are already
            prepared; ``"auto"``: ``"none"`` for square frames at the model size (256², e.g. from 'Prepare
            Object Frames') or square frames without alpha (any multiple of 64, e.g. small test runs), else
            ``"clip"``.
        crop_size: longest object side after preparation (official 200).
        config: sampling parameters.
        clock: receives the seconds of each part (``prepare`` and those of
            :func:`~.sampler.generate_view_matrix`); they are also logged at INFO.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3], got {tuple(frames.shape)}")
    if prepare not in PREPARE_MODES:
        raise ValueError(f"prepare must be one of {PREPARE_MODES}, got {prepare!r}")
    size = model.dims.volume.input_image_size
    clock = clock if clock is not None else SubstageClock(model.cc_projection.weight.device)
    with clock("prepare"):
        out_frames, out_alpha, times = _prepared(frames, alpha, num_frames, prepare, crop_size, size)
    return generate_view_matrix(model, out_frames, out_alpha, config, times=times, callback=callback, clock=clock)


def _prepared(frames: Tensor, alpha: Optional[Tensor], num_frames: int, prepare: str, crop_size: int, size: int):
    """The kept frames prepared for SyncDreamer (see :func:`syncdreamer_t`), their alpha and normalised times."""
    n, h, w = frames.shape[:3]
    idx = select_frames(n, num_frames)
    frames = frames[idx.to(frames.device)]
    alpha = None if alpha is None else alpha[idx.to(alpha.device)]
    times = (idx.float() / max(n - 1, 1)).tolist()
    mode = prepare
    if mode == "auto":
        mode = "none" if h == w and (h == size or alpha is None) else "clip"
    if mode == "none":
        if h != w:
            raise ValueError(f"prepare='none' needs square frames centred on white ({size}x{size}), got {w}x{h}; "
                             f"use prepare='clip' with a mask or RGBA input")
        out_frames, out_alpha = frames.float(), alpha
    else:
        prep = prepare_object_frames(frames, alpha, PrepareConfig(size=size, crop_size=crop_size, box=mode))
        out_frames, out_alpha = prep.images, prep.alpha
    return out_frames, out_alpha, times
