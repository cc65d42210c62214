"""Per-stage hooks of :mod:`e4d.pipeline`: called before and after every stage with its name.

A hook is any object with ``before_stage(stage, models)`` and ``after_stage(stage, models, error)``. The pipeline
calls every hook's ``before_stage`` in order, runs the stage, then every hook's ``after_stage`` in reverse order
(also when the stage raised, with the exception as ``error``, so offloading and bookkeeping still happen; the
exception then propagates). Two hooks ship here:

* :class:`StageTimer`: wall time (device-synchronized) and peak CUDA memory of each stage, as records;
* :class:`Offload`: a stage's models live on the compute device only while that stage runs.

:class:`SubstageClock` times named parts *inside* a stage (e.g. SyncDreamer-T's condition, graph capture,
sampling loop, decode); stages that take one fill it, and the pipeline returns the figures in its result.
"""
from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence

import torch

STAGE_MODELS: Dict[str, tuple[str, ...]] = {
    "svd": ("svd",),
    "preprocess": (),
    "syncdreamer": ("syncdreamer",),
    "interpolate": ("interpolator",),
    "confidence": ("interpolator",),
    "fit": ("guidance",),
    "orbit": (),
    "export": (),
}
"""Stage names in run order and the :class:`~e4d.pipeline.PipelineModels` fields each one uses."""


class StageHook(Protocol):
    """Called around every pipeline stage (see the module docstring)."""

    def before_stage(self, stage: str, models: Any) -> None: ...

    def after_stage(self, stage: str, models: Any, error: Optional[BaseException]) -> None: ...


def run_stage(stage: str, fn: Callable[[], Any], models: Any, hooks: Sequence[StageHook] = ()) -> Any:
    """``fn()`` between the hooks' ``before_stage`` and ``after_stage`` (the latter also on error)."""
    if stage not in STAGE_MODELS:
        raise ValueError(f"unknown pipeline stage {stage!r}; stages are {list(STAGE_MODELS)}")
    for h in hooks:
        h.before_stage(stage, models)
    try:
        out = fn()
    except BaseException as e:
        for h in reversed(hooks):
            h.after_stage(stage, models, e)
        raise
    for h in reversed(hooks):
        h.after_stage(stage, models, None)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gb(n: float) -> float:
    return round(n / 2 ** 30, 3)


@dataclass
class StageTimer:
    """Records, per stage: ``stage``, ``s`` (wall seconds, synchronized on ``device``), and on CUDA
    ``peak_alloc_gb`` / ``peak_reserved_gb`` (``max_memory_allocated`` / ``reserved`` since the stage began,
    resident weights included) and ``alloc_start_gb``; ``error`` when the stage raised.

    ``sink`` (optional) receives each record as it is made (e.g. to print a JSON line).
    """

    device: torch.device
    sink: Optional[Callable[[Dict[str, Any]], None]] = None
    records: List[Dict[str, Any]] = field(default_factory=list)
    _t0: float = 0.0
    _alloc0: int = 0

    def before_stage(self, stage: str, models: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._alloc0 = torch.cuda.memory_allocated(self.device)
        _sync(self.device)
        self._t0 = time.perf_counter()

    def after_stage(self, stage: str, models: Any, error: Optional[BaseException]) -> None:
        if error is None:
            _sync(self.device)
        rec: Dict[str, Any] = {"stage": stage, "s": round(time.perf_counter() - self._t0, 3)}
        if self.device.type == "cuda":
            rec.update(peak_alloc_gb=_gb(torch.cuda.max_memory_allocated(self.device)),
                       peak_reserved_gb=_gb(torch.cuda.max_memory_reserved(self.device)),
                       alloc_start_gb=_gb(self._alloc0))
        if error is not None:
            rec["error"] = f"{type(error).__name__}: {str(error)[:500]}"
        self.records.append(rec)
        if self.sink is not None:
            self.sink(rec)


@dataclass
class SubstageClock:
    """Wall seconds of named parts of one stage, ``seconds[name]`` (repeated parts add up).

    Each part is synchronized on ``device`` at its start and end (CUDA), so a part's figure is its GPU work, not
    the time to queue it: a few syncs per stage, none inside a loop. ``device`` None: plain wall time.
    """

    device: Optional[torch.device] = None
    seconds: Dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as part ``name``."""
        self.sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.add(name, time.perf_counter() - t0)

    def sync(self) -> None:
        if self.device is not None:
            _sync(self.device)

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to part ``name`` (for parts timed elsewhere, e.g. inside a loop's first step)."""
        self.seconds[name] = round(self.seconds.get(name, 0.0) + float(seconds), 4)

    def summary(self) -> str:
        """``"name 1.23 s, other 0.45 s"`` in insertion order."""
        return ", ".join(f"{k} {v:.2f} s" for k, v in self.seconds.items())


def move_model(obj: Any, device: torch.device) -> None:
    """Move a model holder (``nn.Module``, interpolator, diffusers pipeline, Zero123 components) to ``device``."""
    if obj is None or callable(obj) and not hasattr(obj, "to"):  # a lazy loader: nothing resident yet
        return
    if hasattr(obj, "camera_projection"):  # Zero123Components.to takes keywords
        obj.to(device=device)
    else:
        obj.to(device)


@dataclass
class Offload:
    """Keep each model on ``offload_device`` except while a stage that uses it runs on ``device``.

    Bounds the pipeline's resident weights by its largest stage (SyncDreamer, or SVD for image-to-4D) instead of
    the sum of all models. ``seconds`` accumulates the time spent moving weights.
    """

    device: torch.device
    offload_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seconds: float = 0.0

    def _move(self, stage: str, models: Any, device: torch.device) -> None:
        t0 = time.perf_counter()
        for name in STAGE_MODELS[stage]:
            move_model(getattr(models, name, None), device)
        if device == self.offload_device and STAGE_MODELS[stage]:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        _sync(self.device)
        self.seconds += time.perf_counter() - t0

    def before_stage(self, stage: str, models: Any) -> None:
        self._move(stage, models, self.device)

    def after_stage(self, stage: str, models: Any, error: Optional[BaseException]) -> None:
        self._move(stage, models, self.offload_device)


__all__ = ["STAGE_MODELS", "StageHook", "run_stage", "StageTimer", "SubstageClock", "Offload", "move_model"]
