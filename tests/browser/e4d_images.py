"""Pixel helpers of the browser tests (kept out of conftest.py: two conftest modules share that name)."""
from __future__ import annotations

import io

import numpy as np


def png_to_array(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def foreground(img: np.ndarray, bg=(255, 255, 255), tol: int = 40) -> np.ndarray:
    """Bool mask of pixels that differ from the background colour by more than ``tol`` in some channel."""
    return (np.abs(img - np.asarray(bg, dtype=np.int16)) > tol).any(-1)
