"""SyncDreamer-T temporal smoothing of the spatial volumes (Efficient4D §4.1, eq. 10 and eq. 15).

At every denoising step, after the K frames' spatial volumes are built and before the UNet reads them:
``V_i <- sum_j w_j V_{i+j} / sum_j w_j`` (a 1-D convolution over frames). Ends are truncated and renormalised,
or wrapped around with ``cyclic=True``.

Where we differ from the official Efficient4D code on purpose (see ``tests/test_syncdreamer_temporal.py``):
its ``get_w`` uses ``if K < 7`` followed by a non-``elif`` ``if K < 13``, so the 5-tap kernel of eq. 15 is never
used (K = 5, 6 get the 7-tap kernel; cyclic K = 5, 6 even raise); K = 3, 4 use hand tables instead of the
(1.5, 7, 1.5) kernel. We follow the paper.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

TWO_FRAME_W = 0.25
"""Eq. 10, the 2-frame sparse case: V_1 <- (1-w) V_1 + w V_2 and vice versa."""


def auto_kernel(k: int) -> list[float]:
    """Eq. 15: the smoothing kernel for K frames (centre tap in the middle)."""
    if k < 1:
        raise ValueError(f"number of frames K must be >= 1, got {k}")
    if k == 1:
        return [1.0]
    if k == 2:
        return [TWO_FRAME_W, 1.0 - TWO_FRAME_W, TWO_FRAME_W]
    if k <= 4:
        return [1.5, 7.0, 1.5]
    if k <= 6:
        return [1.0, 1.0, 6.0, 1.0, 1.0]
    if k <= 12:
        return [1.0, 1.0, 1.0, 6.0, 1.0, 1.0, 1.0]
    return [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 14.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def parse_kernel(spec: Union[str, Sequence[float]], k: int) -> list[float]:
    """``"auto"`` -> :func:`auto_kernel`; ``"1,1,6,1,1"`` -> that kernel (odd length, non-negative, centre > 0)."""
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in ("auto", ""):
            return auto_kernel(k)
        if s in ("none", "off", "1"):
            return [1.0]
        try:
            w = [float(x) for x in s.replace(";", ",").split(",") if x.strip()]
        except ValueError as e:
            raise ValueError(f"temporal weights must be 'auto' or comma-separated numbers like '1,1,6,1,1', "
                             f"got {spec!r}") from e
    else:
        w = [float(x) for x in spec]
    if len(w) % 2 == 0 or not w:
        raise ValueError(f"temporal weights need an odd number of taps (centre = current frame), got {len(w)}: {w}")
    if min(w) < 0 or w[len(w) // 2] <= 0:
        raise ValueError(f"temporal weights must be >= 0 with a positive centre tap, got {w}")
    return w


def smoothing_matrix(k: int, kernel: Sequence[float], cyclic: bool = False) -> Tensor:
    """Row-normalised ``[K, K]`` matrix M with ``V~ = M @ V`` (float64)."""
    w = torch.as_tensor(list(kernel), dtype=torch.float64)
    r = len(w) // 2
    M = torch.zeros(k, k, dtype=torch.float64)
    for i in range(k):
        for j, wj in zip(range(-r, r + 1), w):
            n = i + j
            if cyclic:
                M[i, n % k] += wj
            elif 0 <= n < k:
                M[i, n] += wj
    return M / M.sum(dim=1, keepdim=True)


def smooth_volumes(volumes: Tensor, kernel: Sequence[float], cyclic: bool = False,
                   matrix: Optional[Tensor] = None) -> Tensor:
    """``volumes [K, C, V, V, V]`` -> temporally smoothed volumes (same shape and dtype).

    ``matrix``: :func:`smoothing_matrix` of ``kernel`` already as float32 on ``volumes``' device (a sampler
    builds it once instead of copying it to the device at every step)."""
    k = volumes.shape[0]
    if k == 1 or len(kernel) == 1:
        return volumes
    M = matrix if matrix is not None else smoothing_matrix(k, kernel, cyclic)
    if M.shape != (k, k):
        raise ValueError(f"smoothing matrix must be [K, K] = [{k}, {k}], got {tuple(M.shape)}")
    M = M.to(device=volumes.device, dtype=torch.float32)
    out = torch.einsum("ij,j...->i...", M, volumes.float())
    return out.to(volumes.dtype)
