"""Resource limits and input checks shared by the core: memory is bounded by what the user asked for and checked
before allocating; numbers are finite; paths a dataset names stay inside the dataset.

Every limit is a module constant with an environment variable that raises it (documented in docs/comfyui.md,
"Limits"), so a server's owner can allow bigger jobs without editing code.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Union

PathLike = Union[str, os.PathLike]


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return float(default)
    try:
        value = float(raw)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={raw!r} must be a number (default {default})") from e
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"environment variable {name}={raw!r} must be a finite number > 0 (default {default})")
    return value


MAX_VIDEO_FRAMES_ENV = "E4D_MAX_VIDEO_FRAMES"
MAX_VIDEO_FRAMES = 1024
"""Frames a video load keeps when the user sets no cap (``max_frames = 0``); raise with E4D_MAX_VIDEO_FRAMES."""

MAX_IMAGE_PIXELS_ENV = "E4D_MAX_IMAGE_PIXELS"
MAX_IMAGE_PIXELS = 64_000_000
"""Largest image (width x height) decoded at full size; larger ones are decoded reduced (JPEG draft, PNG/WebP
reduce) when a smaller size was asked for, else refused. Raise with E4D_MAX_IMAGE_PIXELS."""

MAX_TENSOR_BYTES_ENV = "E4D_MAX_TENSOR_GB"
MAX_TENSOR_GB = 8
"""Largest frame stack (decoded video, view matrix, render) in GiB, checked before allocating; raise with
E4D_MAX_TENSOR_GB (fractions allowed)."""


def max_video_frames() -> int:
    """The default frame cap of video loads (:data:`MAX_VIDEO_FRAMES` or E4D_MAX_VIDEO_FRAMES)."""
    return max(1, int(_env_number(MAX_VIDEO_FRAMES_ENV, MAX_VIDEO_FRAMES)))


def max_image_pixels() -> int:
    """The largest image decoded at full size (:data:`MAX_IMAGE_PIXELS` or E4D_MAX_IMAGE_PIXELS)."""
    return max(1, int(_env_number(MAX_IMAGE_PIXELS_ENV, MAX_IMAGE_PIXELS)))


def max_tensor_bytes() -> int:
    """The largest frame stack in bytes (:data:`MAX_TENSOR_GB` GiB or E4D_MAX_TENSOR_GB)."""
    return int(_env_number(MAX_TENSOR_BYTES_ENV, MAX_TENSOR_GB) * 2**30)


def check_frames_budget(what: str, frames: int, height: int, width: int, channels: int = 3,
                        bytes_per_value: int = 4, fix: str = "lower the frame count or the size") -> None:
    """Raise ValueError before allocating ``frames x height x width x channels`` values when that exceeds
    :func:`max_tensor_bytes`, or when a size is not a positive whole number."""
    for name, v in (("frames", frames), ("height", height), ("width", width)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{what}: {name} must be a whole number >= 1, got {v!r}")
    need = frames * height * width * channels * bytes_per_value
    cap = max_tensor_bytes()
    if need > cap:
        raise ValueError(f"{what}: {frames} frames of {width}x{height} need {need / 2**30:.1f} GiB, more than the "
                         f"{cap / 2**30:.3g} GiB limit; {fix}, or raise the limit with {MAX_TENSOR_BYTES_ENV}=<GiB>")


def check_finite(owner: str, values: dict[str, Any]) -> None:
    """Raise ValueError naming the first field whose value (a float, or a list/tuple of floats) is NaN or inf."""
    for name, v in values.items():
        items: Iterable[Any] = v if isinstance(v, (list, tuple)) else (v,)
        for x in items:
            if isinstance(x, float) and not math.isfinite(x):
                raise ValueError(f"{owner}.{name} must be a finite number, got {v!r}; give a real value")


def check_finite_fields(config: Any) -> None:
    """Raise ValueError naming ``Class.field`` when a float field of the dataclass ``config`` (or a float in a
    list/tuple field, or in a nested dataclass field) is NaN or inf. Call it first in a config's validate():
    NaN passes every ``<``/``>`` range check."""
    import dataclasses

    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_finite_fields(value)
        else:
            check_finite(type(config).__name__, {f.name: value})


def inside_folder(folder: PathLike, relative: str, what: str) -> Path:
    """``folder / relative`` (normalised); ValueError when its real path leaves ``folder`` (absolute, ``..``,
    symlinks).

    For paths a dataset file (e.g. cameras.json's view ``dir``) names inside its own folder.
    """
    rel = str(relative)
    root = os.path.realpath(folder)
    real = os.path.realpath(os.path.join(root, rel))
    try:
        inside = os.path.commonpath([real, root]) == root
    except ValueError:  # different drives (Windows)
        inside = False
    if os.path.isabs(rel) or not inside:
        raise ValueError(f"{what} {rel!r} leaves the dataset folder {folder}; paths in a dataset must stay inside "
                         "it (relative, no '..', no links to elsewhere)")
    return Path(folder) / os.path.relpath(real, root)
