"""Native 4D file: every Gaussians4D parameter in one safetensors file, config and time range in its metadata.

Layout (safetensors, little-endian float32, no pickled code):

* tensors ``means [N,4]``, ``log_scales [N,4]``, ``rot_l [N,4]``, ``rot_r [N,4]``, ``opacity_logit [N]``,
  ``sh [N, 1+time_degree, (sh_degree+1)**2, 3]`` (the field names of :class:`e4d.gaussians4d.Gaussians4D`);
* metadata (strings): ``format = "e4d.gaussians4d"``, ``format_version = "1"``, ``config`` (JSON: sh_degree,
  time_degree, time_period), ``time_range`` (JSON ``[start, end]`` in normalized time, the clip the model was
  fitted on), ``num`` and ``meta`` (JSON of anything the caller passes, e.g. the fit config and the times).

Loading gives back bit-identical tensors, hence identical renders.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..atomic import atomic_path
from ..gaussians4d import CONFIG_FIELDS, TENSOR_FIELDS, Gaussians4D
from .common import check_gaussians

FORMAT = "e4d.gaussians4d"
FORMAT_VERSION = "1"
PathLike = Union[str, os.PathLike]


def save_native(g: Gaussians4D, path: PathLike, meta: Optional[Dict[str, Any]] = None,
                time_range: Optional[Sequence[float]] = None) -> Path:
    """Write ``g`` to ``path`` (``.safetensors``) atomically; returns the path.

    Args:
        g: the 4D Gaussians (any device; stored as float32 on the CPU).
        path: output file; its folder is created.
        meta: optional JSON-serializable dict kept under the ``meta`` key (fit config, times, source, ...).
        time_range: ``(start, end)`` normalized times the model covers; default ``(0, 1)``.
    """
    from safetensors.torch import save_file

    check_gaussians(g, "save_native")
    tr = [0.0, 1.0] if time_range is None else [float(x) for x in time_range]
    if len(tr) != 2 or not tr[1] >= tr[0]:
        raise ValueError(f"time_range must be (start, end) with end >= start, got {time_range}")
    try:
        meta_json = json.dumps(meta or {})
    except TypeError as e:
        raise TypeError(f"save_native meta must be JSON-serializable: {e}") from e
    tensors = {k: v.detach().to(device="cpu", dtype=torch.float32).contiguous() for k, v in g.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(g.config()),
                "time_range": json.dumps(tr), "num": str(g.num), "meta": meta_json}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def _open(path: PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"native 4D file not found: {path}; write one with `python -m e4d fit ... --out FILE`")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated / non-safetensors bytes
        raise ValueError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); it is corrupt or "
                         "another format; re-export it with save_native") from e
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is a safetensors file but not an Efficient4D native 4D file (metadata format="
                         f"{metadata.get('format')!r}, expected {FORMAT!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has native format version {metadata.get('format_version')!r}; this e4d reads "
                         f"version {FORMAT_VERSION}")
    return tensors, metadata


def read_native_meta(path: PathLike) -> Dict[str, Any]:
    """The metadata of a native file, decoded: ``config``, ``time_range``, ``num``, ``meta``."""
    _, md = _open(path)
    try:
        return {"config": json.loads(md["config"]), "time_range": json.loads(md["time_range"]),
                "num": int(md["num"]), "meta": json.loads(md.get("meta", "{}"))}
    except (KeyError, json.JSONDecodeError, ValueError) as e:
        raise ValueError(f"{path}: damaged native metadata ({e}); re-export the file") from e


def load_native(path: PathLike, device=None) -> Gaussians4D:
    """Read a file written by :func:`save_native` (onto ``device``, default CPU); renders are identical."""
    tensors, md = _open(path)
    missing = [k for k in TENSOR_FIELDS if k not in tensors]
    if missing:
        raise ValueError(f"{path} lacks tensors {missing}; a native 4D file holds {list(TENSOR_FIELDS)}")
    try:
        cfg = json.loads(md["config"])
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: damaged 'config' metadata ({e}); re-export the file") from e
    cfg = {k: cfg[k] for k in CONFIG_FIELDS if k in cfg}
    g = Gaussians4D.from_state_dict({k: tensors[k] for k in TENSOR_FIELDS}, cfg)
    return g.to(device=device) if device is not None else g


__all__ = ["save_native", "load_native", "read_native_meta", "FORMAT", "FORMAT_VERSION"]


def fitted_times(path: PathLike, count: Optional[int] = None) -> List[float]:
    """The times a native file was fitted at (its metadata), else ``count`` (default 16) evenly spaced over its
    time range."""
    md = read_native_meta(path)
    times = md["meta"].get("times")
    if count is None and times:
        return [float(t) for t in times]
    t0, t1 = md["time_range"]
    n = count or 16
    return [t0 + (t1 - t0) * i / max(n - 1, 1) for i in range(n)]

