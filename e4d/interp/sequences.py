"""Time interpolation of view matrices and plain frame batches (paper §4.1: midpoints applied twice, M = 4K - 3).

Generalised to any integer multiplier m: a sequence of N frames becomes (N - 1) m + 1 frames (the originals
copied bit-exactly at every m-th slot, as ComfyUI-Frame-Interpolation orders them). Two methods:

* ``"recursive"``: log2(m) levels of midpoints (the paper's way; m must be a power of two);
* ``"direct"``: one call per in-between at t = k/m (RIFE 4.x's arbitrary timestep; midpoint-only models reach
  t by bisection inside the interpolator);
* ``"auto"``: direct for models with a timestep, recursive for midpoint-only models when m is a power of two.

Every view is interpolated on its own 256x256 images, never on the 16-view strip the official code uses, so flow
cannot cross view borders. All (view, pair, t) tasks of one level are packed into batches of ``batch`` images.
Alpha is carried through the same flow and blend weights as the colour (not recomputed from the background).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

import torch
from torch import Tensor

from ..progress import ProgressCallback, report
from ..viewmatrix import ViewMatrix
from .base import Interpolator

METHODS = ("auto", "direct", "recursive")


def resolve_method(interp: Interpolator, multiplier: int, method: str = "auto") -> str:
    """Pick "direct" or "recursive" and check the multiplier rule."""
    if not isinstance(multiplier, int) or multiplier < 1:
        raise ValueError(f"multiplier must be an integer >= 1, got {multiplier!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    pow2 = multiplier & (multiplier - 1) == 0
    if method == "auto":
        method = "recursive" if interp.midpoint_only and pow2 else "direct"
    if method == "recursive" and not pow2:
        raise ValueError(f"recursive midpoints give multipliers 2, 4, 8, ...; got {multiplier}: use method='direct'")
    return method


def interpolate_times(times: Tensor, multiplier: int) -> Tensor:
    """``[N]`` -> ``[(N-1) m + 1]``, new times placed linearly between their neighbours."""
    if multiplier == 1 or times.numel() < 2:
        return times.clone()
    k = torch.arange(multiplier, dtype=times.dtype, device=times.device) / multiplier
    mid = times[:-1, None] + (times[1:] - times[:-1])[:, None] * k  # [N-1, m]
    return torch.cat((mid.flatten(), times[-1:]))


class _Runner:
    """Runs a list of (frame a, frame b, t) tasks through the interpolator in batches, with progress."""

    def __init__(self, interp: Interpolator, batch: int, total: int, callback: Optional[ProgressCallback]):
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.interp, self.batch, self.total, self.callback, self.step = interp, batch, total, callback, 0

    def run(self, seq: Tensor, extra: Optional[Tensor], ia: Tensor, ib: Tensor, s: Tensor,
            t: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """seq ``[N, S, 3, H, W]``; task j interpolates seq[ia[j], s[j]] -> seq[ib[j], s[j]] at t[j]."""
        outs, eouts = [], []
        for j in range(0, ia.numel(), self.batch):
            sl = slice(j, j + self.batch)
            a, b = seq[ia[sl], s[sl]], seq[ib[sl], s[sl]]
            ea = eb = None
            if extra is not None:
                ea, eb = extra[ia[sl], s[sl]], extra[ib[sl], s[sl]]
            o, eo = self.interp.interpolate_with_extra(a, b, t[sl], ea, eb)
            outs.append(o.to(seq.dtype))
            if eo is not None:
                eouts.append(eo.to(extra.dtype))
            self.step += 1
            report(self.callback, self.step, self.total, images=int(self.step), interpolator=self.interp.name)
        return torch.cat(outs), (torch.cat(eouts) if eouts else None)


def _n_chunks(n: int, batch: int) -> int:
    return -(-n // batch)


def count_batches(N: int, S: int, multiplier: int, method: str, batch: int) -> int:
    """Number of interpolator calls (progress total) for N frames of S streams."""
    if N < 2 or multiplier == 1:
        return 0
    if method == "direct":
        return _n_chunks((N - 1) * S * (multiplier - 1), batch)
    return sum(_n_chunks((N - 1) * (2 ** lvl) * S, batch) for lvl in range(int(math.log2(multiplier))))


def interpolate_sequences(seq: Tensor, interp: Interpolator, multiplier: int = 4, method: str = "auto",
                          batch: int = 64, extra: Optional[Tensor] = None, callback: Optional[ProgressCallback] = None,
                          _runner: Optional[_Runner] = None) -> tuple[Tensor, Optional[Tensor]]:
    """Interpolate S independent sequences in time.

    Args:
        seq: ``[N, S, 3, H, W]`` frames in [0, 1] (S streams, e.g. views).
        interp: any :class:`~e4d.interp.base.Interpolator`.
        multiplier: m; output has (N - 1) m + 1 frames.
        method: "auto", "direct" or "recursive" (module docstring).
        batch: images per interpolator call.
        extra: optional ``[N, S, C, H, W]`` channels (alpha) moved with the same flow and blend.
        callback: progress ``(step, total, info)`` after each batch.

    Returns:
        ``([(N-1) m + 1, S, 3, H, W], extra or None)``.
    """
    if seq.ndim != 5 or seq.shape[2] != 3:
        raise ValueError(f"seq must be [N, S, 3, H, W], got {tuple(seq.shape)}")
    if extra is not None and (extra.ndim != 5 or extra.shape[:2] != seq.shape[:2] or extra.shape[3:] != seq.shape[3:]):
        raise ValueError(f"extra must be [N, S, C, H, W] matching seq {tuple(seq.shape)}, got {tuple(extra.shape)}")
    method = resolve_method(interp, multiplier, method)
    N, S = seq.shape[:2]
    if N < 2 or multiplier == 1:
        return seq.clone(), None if extra is None else extra.clone()
    runner = _runner or _Runner(interp, batch, count_batches(N, S, multiplier, method, batch), callback)
    dev = seq.device
    if method == "direct":
        m = multiplier
        # task order: pair-major, then t, then stream, so one batch mixes streams of the same pair
        i, k, s = torch.meshgrid(torch.arange(N - 1), torch.arange(1, m), torch.arange(S), indexing="ij")
        i, k, s = i.flatten().to(dev), k.flatten().to(dev), s.flatten().to(dev)
        res, eres = runner.run(seq, extra, i, i + 1, s, k.to(torch.float32) / m)
        out = seq.new_empty(((N - 1) * m + 1,) + tuple(seq.shape[1:]))
        out[::m] = seq
        out[i * m + k, s] = res
        eout = None
        if extra is not None:
            eout = extra.new_empty(((N - 1) * m + 1,) + tuple(extra.shape[1:]))
            eout[::m] = extra
            eout[i * m + k, s] = eres
        return out, eout
    cur, ecur = seq, extra
    for _ in range(int(math.log2(multiplier))):
        n = cur.shape[0]
        i, s = torch.meshgrid(torch.arange(n - 1), torch.arange(S), indexing="ij")
        i, s = i.flatten().to(dev), s.flatten().to(dev)
        res, eres = runner.run(cur, ecur, i, i + 1, s, torch.full((i.numel(),), 0.5))
        nxt = cur.new_empty((2 * n - 1,) + tuple(cur.shape[1:]))
        nxt[::2] = cur
        nxt[2 * i + 1, s] = res
        if ecur is not None:
            enxt = ecur.new_empty((2 * n - 1,) + tuple(ecur.shape[1:]))
            enxt[::2] = ecur
            enxt[2 * i + 1, s] = eres
            ecur = enxt
        cur = nxt
    return cur, ecur


def interpolate_view_matrix(vm: ViewMatrix, interp: Interpolator, multiplier: Optional[int] = None,
                            levels: Optional[int] = None, method: str = "auto", batch: int = 64,
                            callback: Optional[ProgressCallback] = None) -> ViewMatrix:
    """Densify a view matrix in time: T -> (T - 1) m + 1 times (paper: m = 4, i.e. 4K - 3 frames).

    Args:
        vm: the generated view matrix (images ``[T, V, H, W, 3]``).
        interp: RIFE or the flow fallback.
        multiplier: m (default 4). ``levels=n`` instead means m = 2^n recursive midpoints (paper: levels=2).
        method: "auto" | "direct" | "recursive" (see module docstring); ``levels`` implies "recursive" under "auto".
        batch: images per interpolator call (GPU: 64-256 at 256x256).
        callback: progress after each batch.

    Returns:
        A new ViewMatrix with interpolated images, alpha (same flow/blend as colour), input frames and input
        alpha (when present), linearly interpolated times and the same cameras.
    """
    if multiplier is not None and levels is not None and multiplier != 2 ** levels:
        raise ValueError(f"give multiplier or levels, not both (got multiplier={multiplier}, levels={levels})")
    if levels is not None:
        if not isinstance(levels, int) or levels < 0:
            raise ValueError(f"levels must be an integer >= 0, got {levels!r}")
        multiplier = 2 ** levels
        method = "recursive" if method == "auto" else method
    m = 4 if multiplier is None else multiplier
    method = resolve_method(interp, m, method)
    T, V = vm.T, vm.V
    if T < 2 or m == 1:
        return replace(vm)
    seq = vm.images.permute(0, 1, 4, 2, 3)  # [T, V, 3, H, W]
    extra = None if vm.alpha is None else vm.alpha.unsqueeze(2)
    total = count_batches(T, V, m, method, batch)
    if vm.input_images is not None:
        total += count_batches(T, 1, m, method, batch)
    runner = _Runner(interp, batch, total, callback)
    out, eout = interpolate_sequences(seq, interp, m, method, batch, extra, _runner=runner)
    new = dict(images=out.permute(0, 1, 3, 4, 2).contiguous(), times=interpolate_times(vm.times, m),
               alpha=None if eout is None else eout.squeeze(2).clamp(0, 1))
    if vm.input_images is not None:
        iseq = vm.input_images.permute(0, 3, 1, 2).unsqueeze(1)  # [T, 1, 3, H, W]
        iex = None if vm.input_alpha is None else vm.input_alpha[:, None, None]
        iout, ieout = interpolate_sequences(iseq, interp, m, method, batch, iex, _runner=runner)
        new["input_images"] = iout[:, 0].permute(0, 2, 3, 1).contiguous()
        new["input_alpha"] = None if ieout is None else ieout[:, 0, 0].clamp(0, 1)
    return replace(vm, **new)


def interpolate_frames(frames: Tensor, interp: Interpolator, multiplier: int = 2, method: str = "auto",
                       batch: int = 16, callback: Optional[ProgressCallback] = None) -> Tensor:
    """Interpolate a plain image batch (a video, ComfyUI IMAGE layout).

    Args:
        frames: ``[N, H, W, C]`` in [0, 1], C = 3, or 4 (channel 3 is carried like alpha).
        multiplier: m; the result has (N - 1) m + 1 frames: frame0, its m - 1 in-betweens, ..., the last frame
            (ComfyUI-Frame-Interpolation's order). In-betweens are clamped to [0, 1]; originals are copied.

    Returns:
        ``[(N - 1) m + 1, H, W, C]`` on the input's device and dtype.
    """
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"frames must be an IMAGE batch [N, H, W, 3|4], got {tuple(frames.shape)}")
    seq = frames[..., :3].permute(0, 3, 1, 2).unsqueeze(1)
    extra = frames[..., 3:].permute(0, 3, 1, 2).unsqueeze(1) if frames.shape[-1] == 4 else None
    out, eout = interpolate_sequences(seq, interp, multiplier, method, batch, extra, callback)
    out = out[:, 0].permute(0, 2, 3, 1)
    if eout is not None:
        out = torch.cat((out, eout[:, 0].permute(0, 2, 3, 1).clamp(0, 1)), -1)
    return out.contiguous()
