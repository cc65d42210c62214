"""Reading one image file safely: clear errors for non-images and damaged files, the pixel limit checked before
any pixel is decoded (reduced JPEG decoding where a smaller size is wanted), 16-bit greyscale scaled, not clipped.
Used by video/frame-folder decoding and by view-matrix folders."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from .limits import MAX_IMAGE_PIXELS_ENV, max_image_pixels


def pil_has_alpha(im) -> bool:
    """True when a PIL image carries transparency (an alpha band or a transparent palette entry)."""
    return im.mode in ("RGBA", "LA", "PA", "RGBa") or (im.mode == "P" and "transparency" in im.info)


HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
"""Pillow modes of 16-bit greyscale PNG/TIFF (``I`` is how older Pillow opens them): values 0..65535."""


@contextlib.contextmanager
def open_image(path: Path, target: Optional[tuple[int, int]] = None) -> Iterator["object"]:
    """``PIL.Image.open`` with clear errors and the pixel limit checked before any pixel is decoded.

    Images above :func:`e4d.limits.max_image_pixels` are decoded reduced when a smaller ``target`` size
    ``(width, height)`` is wanted and the format can (JPEG draft mode); otherwise they are refused with a
    ValueError naming the size, the limit and the fix. A file that is not an image gives a ValueError too.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(path)
    except UnidentifiedImageError as e:
        raise ValueError(f"{path} is not an image Pillow can read (wrong extension or damaged file); re-export it "
                         "as PNG or JPEG") from e
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path}: {e}; downscale the image first") from e
    except OSError as e:
        raise ValueError(f"cannot read image {path}: {e}; re-export it as PNG or JPEG") from e
    with im:
        limit = max_image_pixels()
        if im.width * im.height > limit and target is not None and im.format == "JPEG":
            im.draft("RGB", target)  # decode at 1/2, 1/4 or 1/8 scale: the full image is never in memory
        if im.width * im.height > limit:
            raise ValueError(f"{path} is {im.width}x{im.height} ({im.width * im.height / 1e6:.0f} MP), more than the "
                             f"{limit / 1e6:.0f} MP decoded at full size; downscale it first, or raise the limit "
                             f"with {MAX_IMAGE_PIXELS_ENV}=<pixels>")
        yield im


def pil_rgba_uint8(im) -> np.ndarray:
    """``[H, W, 4]`` uint8 RGBA of a PIL image; 16-bit greyscale (``I;16``) is scaled by 65535, not clipped."""
    if im.mode in HIGH_BIT_MODES or im.mode == "F":
        grey = np.asarray(im, dtype=np.float64) / (1.0 if im.mode == "F" else 65535.0)
        grey = (np.clip(grey, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        out = np.empty(grey.shape + (4,), np.uint8)
        out[..., :3] = grey[..., None]
        out[..., 3] = 255
        return out
    return np.asarray(im.convert("RGBA"), dtype=np.uint8)


def pil_float(im) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """RGB ``[H, W, 3]`` float32 in [0, 1] and alpha ``[H, W]`` (None when the image has none) of a PIL image;
    16-bit greyscale keeps its precision (divided by 65535)."""
    if im.mode in HIGH_BIT_MODES or im.mode == "F":
        grey = np.asarray(im, dtype=np.float32) / (1.0 if im.mode == "F" else 65535.0)
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=-1), None
    if pil_has_alpha(im):
        arr = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        return arr[..., :3], arr[..., 3]
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0, None


def read_image(path: Path) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Read one image file as :func:`pil_float` does, with :func:`open_image`'s checks."""
    with open_image(Path(path)) as im:
        try:
            im.load()
        except OSError as e:
            raise ValueError(f"cannot decode image {path}: {e}; re-export it as PNG") from e
        return pil_float(im)
