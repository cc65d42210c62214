"""Which rasterizer renders: the ``backend`` argument resolved on a device, said once in the log, never a surprise.

``"auto"`` picks, in order:

1. ``"gsplat"`` on a CUDA device when gsplat's CUDA extension is already there (a prebuilt wheel, or built
   before into torch's extension cache). If gsplat is installed but would first JIT-compile its extension
   (minutes, needs nvcc), auto does not start that build: it logs once what it would cost and that
   ``backend="gsplat"`` opts in;
2. ``"triton"`` on a CUDA or ROCm GPU when Triton imports (no compiler needed beyond the Triton wheel);
3. ``"reference"`` otherwise (CPU, Apple MPS): the bounded-memory pure-torch renderer, slow but it fits.
"""
from __future__ import annotations

import functools
import logging
import math
from typing import Optional, Union

import torch

BACKENDS = ("auto", "gsplat", "triton", "reference")
DeviceLike = Union[str, torch.device]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _gsplat_state() -> str:
    from .gsplat_backend import gsplat_state
    return gsplat_state()


@functools.lru_cache(maxsize=1)
def _gsplat_loads() -> bool:
    from .gsplat_backend import gsplat_available
    return gsplat_available()


@functools.lru_cache(maxsize=1)
def _triton_imports() -> bool:
    from .triton_backend import triton_available
    return triton_available()


@functools.lru_cache(maxsize=None)
def _say_once(message: str) -> None:
    log.info(message)


def resolve_backend(backend: str, device: DeviceLike) -> str:
    """The concrete backend ("gsplat", "triton" or "reference") for ``backend`` on ``device``.

    Explicit choices are returned as they are (their renderers raise a clear error if they cannot run there);
    ``"auto"`` follows the order of the module docstring and never starts a compile.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown render backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    device = torch.device(device)
    if device.type != "cuda":  # torch's ROCm builds report their GPUs as "cuda" too
        return "reference"
    state = _gsplat_state()
    if state == "ready" and _gsplat_loads():
        return "gsplat"
    if state == "compile":
        _say_once("gsplat is installed but its CUDA extension is not built; backend 'auto' does not start that "
                  "build (minutes with nvcc, on the first render) and renders with "
                  "Triton instead. Pass backend='gsplat' to build and use it.")
    if _triton_imports():
        return "triton"
    _say_once("no fast rasterizer on this GPU (no built gsplat extension, Triton does not import): rendering with "
              "the pure-torch reference renderer, which is slow. On Linux torch's CUDA wheels bring Triton; on "
              "Windows pip install triton-windows.")
    return "reference"


def describe_backend(backend: str, device: DeviceLike) -> str:
    """One line for logs and node info: the backend that renders on ``device`` and why, e.g.
    ``"triton (auto on cuda: gsplat's CUDA extension is not built)"``."""
    which = resolve_backend(backend, device)
    dev = torch.device(device)
    if backend != "auto":
        return f"{which} (requested, on {dev.type})"
    if which == "gsplat":
        why = "gsplat's CUDA extension is built"
    elif which == "triton":
        why = {"missing": "gsplat is not installed", "compile": "gsplat's CUDA extension is not built",
               "unavailable": "gsplat has no CUDA extension"}.get(_gsplat_state(), "gsplat did not load")
    elif dev.type == "cuda":
        why = "neither gsplat's extension nor Triton is usable"
    else:
        why = f"no GPU rasterizer on {dev.type}"
    return f"{which} (auto on {dev.type}: {why})"


def log_backend(backend: str, device: DeviceLike) -> str:
    """Log :func:`describe_backend` once per distinct (backend, device type) in this process; return it."""
    text = describe_backend(backend, device)
    _say_once(f"Efficient4D render backend: {text}")
    return text


def fit_time_estimate(backend: str, device: DeviceLike, step_seconds: float, steps_left: int,
                      warn_after: float = 60.0) -> Optional[str]:
    """Extrapolated remaining fit time from one measured step; logged (warning) and returned when the renderer
    is the reference (CPU/MPS) and the estimate exceeds ``warn_after`` seconds, else None.

    The fit calls it once, after timing its second step (the first includes one-off allocations).
    """
    if resolve_backend(backend, device) != "reference" or steps_left <= 0:
        return None
    total = float(step_seconds) * int(steps_left)
    if not math.isfinite(total) or total <= warn_after:
        return None
    text = (f"the fit renders with the pure-torch reference renderer on {torch.device(device).type}: about "
            f"{step_seconds:.2f} s per step, so about {_duration(total)} for the remaining {steps_left} steps. A "
            "CUDA or ROCm GPU with Triton (or gsplat) takes seconds; fewer steps, points or a smaller size also help.")
    log.warning(text)
    return text


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["BACKENDS", "resolve_backend", "describe_backend", "log_backend", "fit_time_estimate"]
