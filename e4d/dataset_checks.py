"""Checks of a view-matrix folder (``cameras.json`` + ``views/vVV/tTT.png``) before and after its images are read.

A malformed ``cameras.json`` must give one clear message naming the file, the rule and the fix, never a
``KeyError`` / ``TypeError`` from deep inside the loader; a folder that cannot be fitted (cameras that do not match
the view folders, a singular camera, views without an object) must be refused rather than silently fitted.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

LAYOUT = ("{width, height, fx, views: [{w2c: 4x4 list, fx?, fy?, cx?, cy?, dir?}, ...], times?}")
"""The shape of cameras.json, quoted in the messages."""

WHITE_LEVEL = 0.98
"""A pixel at least this bright in every channel counts as background (the layout puts objects on white)."""


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_cameras_json(meta: Any, cam_file: Path) -> None:
    """Raise ValueError naming ``cam_file``, the rule broken and the fix when ``meta`` (the parsed JSON) does not
    follow :data:`LAYOUT`: an object with whole ``width``/``height`` >= 1, a non-empty ``views`` list of objects,
    each with an invertible, finite 4x4 ``w2c`` and a finite ``fx`` > 0 (its own or the top-level one)."""
    def fail(rule: str) -> ValueError:
        return ValueError(f"{cam_file}: {rule}; cameras.json must look like {LAYOUT}")

    if not isinstance(meta, dict):
        raise fail(f"the top level is a JSON {type(meta).__name__}, not an object")
    for key in ("width", "height"):
        v = meta.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise fail(f"'{key}' must be a whole number >= 1, got {v!r}")
    views = meta.get("views")
    if not isinstance(views, list) or not views:
        raise fail(f"'views' must be a non-empty list of camera objects, got {type(views).__name__}")
    for i, v in enumerate(views):
        if not isinstance(v, dict):
            raise fail(f"views[{i}] is a {type(v).__name__}, not an object")
        w2c = v.get("w2c")
        if (not isinstance(w2c, list) or len(w2c) != 4
                or any(not isinstance(r, list) or len(r) != 4 or not all(_number(x) for x in r) for r in w2c)):
            raise fail(f"views[{i}].w2c must be a 4x4 list of finite numbers, got {str(w2c)[:80]}")
        if abs(float(np.linalg.det(np.asarray(w2c, dtype=np.float64)[:3, :3]))) < 1e-6:
            raise fail(f"views[{i}].w2c is singular (its 3x3 rotation has determinant ~0); give a rigid "
                       "world-to-camera matrix")
        fx = v.get("fx", meta.get("fx"))
        if not _number(fx) or fx <= 0:
            raise fail(f"views[{i}] has no finite focal length 'fx' > 0 (its own or the top-level one), got {fx!r}")
        for key in ("fy", "cx", "cy"):
            x = v.get(key, meta.get(key))
            if x is not None and not _number(x):
                raise fail(f"views[{i}].{key} must be a finite number, got {x!r}")
        if "dir" in v and not isinstance(v["dir"], str):
            raise fail(f"views[{i}].dir must be a folder name (string), got {v['dir']!r}")
    times = meta.get("times")
    if times is not None and (not isinstance(times, list) or not all(_number(t) for t in times)):
        raise fail(f"'times' must be a list of finite numbers, got {str(times)[:80]}")


def check_view_folders(folder: Path, n_cameras: int, cam_file: Path) -> None:
    """ValueError when ``folder/views`` holds a different number of ``vNN`` folders than cameras.json lists."""
    views = Path(folder) / "views"
    if not views.is_dir():
        return
    found = sorted(p.name for p in views.iterdir() if p.is_dir() and re.fullmatch(r"v\d+", p.name))
    if found and len(found) != n_cameras:
        raise ValueError(f"{cam_file} lists {n_cameras} cameras but {views} holds {len(found)} view folders "
                         f"({found[0]}..{found[-1]}); give one camera per view folder")


def check_views_have_object(rgb: np.ndarray, alpha: Optional[np.ndarray], view_dirs: Sequence[Path]) -> None:
    """ValueError when a view shows no object at any time: white everywhere and no informative alpha (one that is
    partly opaque and partly transparent).

    ``rgb``: ``[T, V, H, W, 3]`` on white; ``alpha``: ``[T, V, H, W]`` or None.
    """
    for v, d in enumerate(view_dirs):
        a = None if alpha is None else alpha[:, v]
        if a is not None and bool((a > 0.02).any()) and bool((a < 0.98).any()):
            continue  # an informative alpha marks the object, even a white one
        if bool((rgb[:, v] >= WHITE_LEVEL).all()):
            raise ValueError(f"view folder {d} is white everywhere at every time: there is no object to fit; check "
                             "the images (the object on a white background) or leave the view out")
