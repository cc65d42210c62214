"""Object-frame preprocessing for SyncDreamer-style image-to-multiview models.

SyncDreamer (Liu et al. 2024, ``ldm/util.py prepare_inputs``) and Efficient4D feed the model a 256 x 256 RGB image
of the object on white, cropped to the alpha bounding box and scaled so that its longest side is 200 px. This
module reproduces that recipe bit-exactly (it goes through Pillow on uint8 RGBA, like the official code):

1. bounding box of the ``alpha > 0`` pixels, cropped PIL-style with the right/bottom edge *exclusive*
   (``crop((min_x, min_y, max_x, max_y))``: the last object row/column is dropped, as in the official code);
2. scale = ``crop_size / max(w, h)``, new size ``(int(scale*w), int(scale*h))``, PIL BICUBIC on the RGBA image
   (Pillow premultiplies alpha for RGBA, so colour does not bleed in from transparent pixels);
3. paste centred at ``((size-w)//2, (size-h)//2)`` on a transparent ``size x size`` canvas;
4. composite on white: ``rgb * a + (1 - a)``.

For a video the box can be one per frame (``box="frame"``, the official per-image behaviour, which removes the
object's motion across the frame) or one for the whole clip (``box="clip"``, the union of all frames' boxes,
the default: the motion of the object inside the frame survives).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from .limits import check_finite_fields
from .masks import composite_on_white

ArrayLike = Union[Tensor, np.ndarray]

_NO_ALPHA_FIX = ("give RGBA frames (an IMAGE with 4 channels, or IMAGE + MASK where the mask is 1 on the object), "
                 "or run a background-removal node (e.g. a rembg / BiRefNet node) before this one")


@dataclass
class PrepareConfig:
    """How frames are cropped and centred (defaults = SyncDreamer README / Efficient4D ``run.sh``)."""

    size: int = 256
    """Side of the square output canvas in pixels (SyncDreamer's input size)."""
    crop_size: int = 200
    """Longest side of the object after scaling, in pixels; ``<= 0`` keeps the whole frame (padded to a square)."""
    box: str = "clip"
    """``"clip"``: one crop box (union over all frames) so motion inside the frame survives; ``"frame"``: the
    official per-frame box."""
    alpha_threshold: float = 0.0
    """A pixel belongs to the object when its 8-bit alpha is greater than ``round(255 * alpha_threshold)``
    (0 = the official ``alpha > 0``)."""

    def validate(self) -> None:
        """Raise ValueError naming the field, its rule, the value and the fix."""
        check_finite_fields(self)  # NaN passes every range check below
        if self.box not in ("clip", "frame"):
            raise ValueError(f"PrepareConfig.box must be 'clip' or 'frame', got {self.box!r}")
        if self.size < 8:
            raise ValueError(f"PrepareConfig.size must be >= 8 px, got {self.size}")
        if self.crop_size > self.size:
            raise ValueError(f"PrepareConfig.crop_size ({self.crop_size}) must be <= size ({self.size}); "
                             f"use e.g. crop_size={int(self.size * 200 / 256)}")
        if not 0.0 <= self.alpha_threshold < 1.0:
            raise ValueError(f"PrepareConfig.alpha_threshold must be in [0, 1), got {self.alpha_threshold}")


@dataclass
class PreparedFrames:
    """Result of :func:`prepare_object_frames`."""

    images: Tensor
    """``[T, S, S, 3]`` float32 in [0, 1], composited on white."""
    alpha: Tensor
    """``[T, S, S]`` float32 coverage in [0, 1]."""
    boxes: Tensor
    """``[T, 4]`` int64 crop boxes ``(x0, y0, x1, y1)`` in source pixels (x1, y1 exclusive, PIL convention)."""
    rgba_uint8: np.ndarray
    """``[T, S, S, 4]`` uint8 RGBA canvases before compositing (what the official code builds)."""


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _to_uint8(x: np.ndarray, name: str) -> np.ndarray:
    """Float in [0, 1] -> uint8 by rounding; uint8 passes through unchanged (bit-exact official path)."""
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be float in [0, 1] or uint8, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return np.clip(np.rint(x.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def to_rgba_uint8(frames: ArrayLike, alpha: Optional[ArrayLike] = None) -> np.ndarray:
    """Frames ``[T, H, W, 3|4]`` (+ optional alpha ``[T, H, W]``) -> uint8 RGBA ``[T, H, W, 4]``.

    A single image ``[H, W, C]`` is accepted as T = 1. Raises ValueError when there is no alpha at all.
    """
    f = _to_numpy(frames)
    if f.ndim == 3:
        f = f[None]
    if f.ndim != 4 or f.shape[-1] not in (3, 4):
        raise ValueError(f"frames must be [T, H, W, 3] or [T, H, W, 4] (RGBA), got {tuple(f.shape)}")
    f = _to_uint8(f, "frames")
    if alpha is not None:
        a = _to_numpy(alpha)
        if a.ndim == 2:
            a = a[None]
        if a.ndim == 4 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.shape != f.shape[:3]:
            raise ValueError(f"alpha must be [T, H, W] = {tuple(f.shape[:3])} to match the frames, got {tuple(a.shape)}")
        a = _to_uint8(a, "alpha")
    elif f.shape[-1] == 4:
        a = f[..., 3]
    else:
        raise ValueError(f"no alpha: the frames are RGB {tuple(f.shape)} and no mask was given; {_NO_ALPHA_FIX}")
    return np.concatenate([f[..., :3], a[..., None]], axis=-1)


def alpha_boxes(alpha_u8: np.ndarray, mode: str = "clip", threshold: int = 0) -> np.ndarray:
    """Crop boxes ``[T, 4]`` (x0, y0, x1, y1) from uint8 alpha ``[T, H, W]``.

    The box spans min..max of the pixels with ``alpha > threshold`` and, like the official ``crop((min_x, min_y,
    max_x, max_y))``, the max index is used as the *exclusive* end. ``mode="clip"`` repeats the union box.
    """
    if alpha_u8.ndim != 3:
        raise ValueError(f"alpha must be [T, H, W], got {alpha_u8.shape}")
    fg = alpha_u8 > threshold
    if not fg.any():
        raise ValueError(f"no usable alpha: every pixel of all {fg.shape[0]} frame(s) is transparent "
                         f"(alpha <= {threshold}); {_NO_ALPHA_FIX}")
    if (alpha_u8 == 255).all():
        raise ValueError(f"no usable alpha: every pixel of all {fg.shape[0]} frame(s) is opaque, so the object "
                         f"cannot be cut out; {_NO_ALPHA_FIX}")
    boxes = np.zeros((fg.shape[0], 4), dtype=np.int64)
    for i, m in enumerate(fg):
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            if mode == "frame":
                raise ValueError(f"no usable alpha in frame {i}: it is fully transparent; remove the frame, use "
                                 f"box='clip', or fix the mask ({_NO_ALPHA_FIX})")
            boxes[i] = (-1, -1, -1, -1)
            continue
        boxes[i] = (xs.min(), ys.min(), xs.max(), ys.max())
    if mode == "clip":
        ok = boxes[:, 0] >= 0
        union = np.array([boxes[ok, 0].min(), boxes[ok, 1].min(), boxes[ok, 2].max(), boxes[ok, 3].max()])
        boxes[:] = union
    elif mode != "frame":
        raise ValueError(f"box mode must be 'clip' or 'frame', got {mode!r}")
    return boxes


def crop_and_center(rgba: np.ndarray, box, crop_size: int = 200, size: int = 256) -> np.ndarray:
    """One uint8 RGBA image ``[H, W, 4]`` -> ``[size, size, 4]`` uint8 (official crop / BICUBIC / centred paste).

    ``box`` is (x0, y0, x1, y1) with exclusive ends; with ``crop_size <= 0`` the whole image is padded to a square
    (centred, transparent) and resized to ``size`` instead.
    """
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(rgba), mode="RGBA")
    if crop_size > 0:
        x0, y0, x1, y1 = (int(v) for v in box)
        w, h = x1 - x0, y1 - y0
        if w < 1 or h < 1:
            raise ValueError(f"the object's alpha box {tuple(int(v) for v in box)} is thinner than 2 px; the mask "
                             f"is nearly empty ({_NO_ALPHA_FIX})")
        img = img.crop((x0, y0, x1, y1))
        scale = crop_size / max(w, h)
        nw, nh = max(1, int(scale * w)), max(1, int(scale * h))
        img = img.resize((nw, nh), resample=Image.BICUBIC)
    else:
        w, h = img.size
        side = max(w, h)
        sq = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        sq.paste(img, ((side - w) // 2, (side - h) // 2))
        img = sq.resize((size, size), resample=Image.BICUBIC)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(img, ((size - img.size[0]) // 2, (size - img.size[1]) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def prepare_object_frames(frames: ArrayLike, alpha: Optional[ArrayLike] = None,
                          config: PrepareConfig = PrepareConfig()) -> PreparedFrames:
    """Crop, scale and centre the object of every frame on a white ``size x size`` canvas.

    Args:
        frames: ``[T, H, W, 3]`` (with ``alpha``) or ``[T, H, W, 4]`` RGBA, float in [0, 1] or uint8 (a single
            ``[H, W, C]`` image is T = 1). uint8 input reproduces the official pipeline bit-exactly; float input
            is rounded to 8 bits first, as a PNG round trip would.
        alpha: optional ``[T, H, W]`` coverage (1 = object). Overrides the 4th channel of RGBA frames.
        config: see :class:`PrepareConfig`.

    Returns:
        :class:`PreparedFrames` with images ``[T, S, S, 3]`` and alpha ``[T, S, S]`` on the device of ``frames``
        (CPU for numpy input).

    Raises:
        ValueError: no alpha at all, alpha empty / fully opaque everywhere, or a fully transparent frame with
            ``box="frame"``.
    """
    config.validate()
    device = frames.device if isinstance(frames, Tensor) else torch.device("cpu")
    rgba = to_rgba_uint8(frames, alpha)
    thr = int(round(255 * config.alpha_threshold))
    T = rgba.shape[0]
    if config.crop_size > 0:
        boxes = alpha_boxes(rgba[..., 3], config.box, thr)
    else:
        alpha_boxes(rgba[..., 3], "clip", thr)  # still validates that the alpha is usable
        H, W = rgba.shape[1:3]
        boxes = np.tile(np.array([0, 0, W, H], dtype=np.int64), (T, 1))
    out = np.stack([crop_and_center(rgba[i], boxes[i], config.crop_size, config.size) for i in range(T)])
    rgba = torch.from_numpy(out).to(torch.float32) / 255.0
    rgb = composite_on_white(rgba)
    return PreparedFrames(images=rgb.to(device), alpha=rgba[..., 3].to(device), boxes=torch.from_numpy(boxes),
                          rgba_uint8=out)
