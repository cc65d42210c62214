"""White-background helpers shared by every stage: composite on white, object masks from a white background, and
the one "keep K of N frames" rule."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

ALL_ONES_LEVEL = 0.999
"""An alpha whose every value exceeds this is "all ones" (8-bit masks store 1.0 as 255/255; 0.999 leaves room for
resampling and half precision)."""


def composite_on_white(image: Tensor, alpha: Optional[Tensor] = None) -> Tensor:
    """RGB ``[..., 3]`` on white: ``rgb * a + (1 - a)`` (the view-matrix contract and SyncDreamer's recipe).

    Args:
        image: ``[..., 3]`` RGB or ``[..., 4]`` RGBA in [0, 1] (any leading dims, e.g. ``[H, W]`` or ``[T, H, W]``).
        alpha: optional coverage ``[...]`` (1 = object) matching the image's leading dims; it overrides the 4th
            channel of an RGBA image.

    Returns:
        float ``[..., 3]``; without alpha (RGB image and no ``alpha``) the clamped colour is returned.
    """
    if image.ndim < 1 or image.shape[-1] not in (3, 4):
        raise ValueError(f"image must be [..., 3] or [..., 4] in [0, 1], got {tuple(image.shape)}")
    rgb = image[..., :3].float().clamp(0, 1)
    a = None
    if alpha is not None:
        if alpha.shape != image.shape[:-1]:
            raise ValueError(f"alpha must be {list(image.shape[:-1])} like the image, got {tuple(alpha.shape)}; "
                             "resize the mask to the image first")
        a = alpha.float().clamp(0, 1)
    elif image.shape[-1] == 4:
        a = image[..., 3].float().clamp(0, 1)
    if a is None:
        return rgb
    return rgb * a[..., None] + (1.0 - a[..., None])


def pad_to_aspect(image: Tensor, width: int, height: int) -> Tensor:
    """Pad ``[H, W, 3]`` with white to the aspect ratio ``width:height`` (centred), so resizing does not distort."""
    H, W = image.shape[:2]
    target = width / height
    if abs(W / H - target) < 1e-6:
        return image
    if W / H < target:
        new_w, new_h = int(round(H * target)), H
    else:
        new_w, new_h = W, int(round(W / target))
    out = torch.ones(new_h, new_w, image.shape[2], dtype=image.dtype, device=image.device)
    y, x = (new_h - H) // 2, (new_w - W) // 2
    out[y:y + H, x:x + W] = image
    return out


def masks_from_white(frames: Tensor, threshold: float = 0.04, kernel: int = 3, min_area: float = 0.001) -> Tensor:
    """Object masks ``[F, H, W]`` (float 0/1) of frames ``[F, H, W, 3]`` on a white background.

    A pixel is object when any channel is darker than ``1 - threshold``; a morphological opening then closing
    with an elliptic ``kernel`` px structuring element removes speckle and pinholes, and connected components
    smaller than ``min_area`` of the frame are dropped (diffusion models leave faint blobs in the background).
    """
    import cv2

    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3] in [0, 1], got {tuple(frames.shape)}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"mask threshold must be in (0, 1), got {threshold}")
    dark = ((1.0 - frames.detach().float().cpu()).amax(-1) > threshold).numpy().astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel)) if kernel > 1 else None
    out = np.zeros_like(dark, dtype=np.float32)
    min_px = max(1, int(min_area * dark.shape[1] * dark.shape[2]))
    for i, m in enumerate(dark):
        if k is not None:
            m = cv2.morphologyEx(m, cv2.MORPH_OPEN, k)
            m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, k)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        keep = np.zeros(n, dtype=bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
        out[i] = keep[lab].astype(np.float32)
    return torch.from_numpy(out).to(frames.device)


def subsample_indices(n: int, k: int) -> list[int]:
    """``k`` indices evenly spread over ``range(n)``, first and last included (``k <= 0`` or ``k >= n``: all)."""
    if n < 1:
        raise ValueError(f"need at least one frame, got n={n}")
    if k <= 0 or k >= n:
        return list(range(n))
    if k == 1:
        return [0]
    return [int(round(i * (n - 1) / (k - 1))) for i in range(k)]


def informative_alpha(alpha: Optional[Tensor]) -> Optional[Tensor]:
    """``alpha`` unless it carries no coverage information, then None: the one all-ones rule of the pack.

    A video without alpha reaches the pipeline with an all-ones mask (ComfyUI's Load Video); treated as coverage
    it would teach the fit an opaque block around the object and hide the white-background fallback.
    """
    if alpha is None or not bool((alpha > ALL_ONES_LEVEL).all()):
        return alpha
    return None
