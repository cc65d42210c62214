"""Image metrics: SSIM (map and mean) and PSNR. Used by the fit loss, confidence maps and benchmarks."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


@functools.lru_cache(maxsize=8)
def _gauss_1d(size: int, sigma: float, device_str: str, dtype: torch.dtype) -> Tensor:
    # Built outside inference mode: ComfyUI runs nodes under torch.inference_mode(), and a cached inference tensor
    # could not be saved for backward by a later fit.
    with torch.inference_mode(False):
        x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
        return (g / g.sum()).to(device=torch.device(device_str), dtype=dtype)


def ssim_map(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5, c1: float = 0.01 ** 2,
             c2: float = 0.03 ** 2) -> Tensor:
    """Per-pixel SSIM of images ``[B, C, H, W]`` in [0, 1]; returns ``[B, C, H, W]``.

    Gaussian window 11 / sigma 1.5 with zero padding ("same" size), as in 3DGS and Efficient4D's code.
    The separable blur is exact (the 2-D Gaussian window is the outer product of the 1-D one).
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim_map needs two [B, C, H, W] tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    C = x.shape[1]
    g = _gauss_1d(window, sigma, str(x.device), x.dtype)
    gh = g.view(1, 1, 1, -1).expand(C, 1, 1, window)
    gv = g.view(1, 1, -1, 1).expand(C, 1, window, 1)
    pad = window // 2

    def blur(z: Tensor) -> Tensor:
        z = F.conv2d(z, gh, padding=(0, pad), groups=C)
        return F.conv2d(z, gv, padding=(pad, 0), groups=C)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x ** 2
    syy = blur(y * y) - mu_y ** 2
    sxy = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Mean SSIM per image, ``[B]``."""
    return ssim_map(x, y).mean(dim=(1, 2, 3))


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR in dB per image for ``[B, ...]`` tensors in [0, 1], ``[B]``."""
    mse = (x - y).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)
