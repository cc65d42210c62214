"""Stage bookkeeping of ``bench/e2e.py``: per-stage wall time and CUDA memory as JSON lines, models built once and
(with ``--offload``) moved between CPU and GPU around their stage, and errors that name the stage."""
from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from common import sync


class StageUnavailable(RuntimeError):
    """A stage's API is missing or broken: the message names the stage and what failed."""


class StageFailed(RuntimeError):
    """A stage raised while running (OOM, a diverging fit, ...): the records so far are still reported."""


def need(stage: str, what: str, fn: Callable[[], Any]) -> Any:
    """Run an import/builder of ``stage``; turn ImportError/AttributeError into a message naming the stage."""
    try:
        return fn()
    except (ImportError, AttributeError) as e:
        raise StageUnavailable(f"stage '{stage}': {what} is not available ({type(e).__name__}: {e}); the module "
                               f"that provides it is missing or changed its API") from e


def to_device(obj: Any, dev: torch.device) -> None:
    """Move a model holder (nn.Module, diffusers pipeline, Zero123Components, RifeInterpolator) to ``dev``."""
    if obj is None:
        return
    if hasattr(obj, "unet") and hasattr(obj, "camera_projection"):  # Zero123Components.to is a no-op when equal
        obj.to(device=dev)
    else:
        obj.to(dev)


def gb(x: float) -> float:
    return round(x / 2 ** 30, 3)


@dataclass
class Run:
    dev: torch.device
    offload: bool
    records: List[Dict[str, Any]] = field(default_factory=list)
    models: Dict[str, Any] = field(default_factory=dict)
    json_out: Optional[Path] = None

    def emit(self, rec: Dict[str, Any]) -> None:
        line = json.dumps(rec, default=str)
        print(line, flush=True)
        if self.json_out is not None:
            with open(self.json_out, "a") as f:
                f.write(line + "\n")

    def model(self, name: str, builder: Callable[[], Any]) -> tuple[Any, float]:
        """The named model on the device (built on first use); returns (model, seconds spent building/moving)."""
        sync(self.dev)
        t0 = time.perf_counter()
        m = self.models.get(name)
        if m is None:
            m = self.models[name] = builder()
        elif self.offload:
            to_device(m, self.dev)
        sync(self.dev)
        return m, time.perf_counter() - t0

    def release(self, *names: str) -> float:
        """With --offload: move the named models to the CPU and return the CUDA cache; returns seconds spent."""
        if not self.offload or not names:
            return 0.0
        t0 = time.perf_counter()
        for n in names:
            to_device(self.models.get(n), torch.device("cpu"))
        gc.collect()
        if self.dev.type == "cuda":
            torch.cuda.empty_cache()
        return time.perf_counter() - t0

    def stage(self, name: str, fn: Callable[[], Any], load_s: float = 0.0, release: tuple = (), **extra) -> Any:
        dev = self.dev
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            at_start = torch.cuda.memory_allocated(dev)
        sync(dev)
        t0 = time.perf_counter()
        try:
            out = fn()
            sync(dev)
        except StageUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 -- report which stage failed, with its peak so far, then stop
            rec = {"bench": "e2e", "stage": name, "error": f"{type(e).__name__}: {str(e)[:500]}",
                   "s": round(time.perf_counter() - t0, 3)}
            if dev.type == "cuda":
                rec["peak_alloc_gb"] = gb(torch.cuda.max_memory_allocated(dev))
            self.emit(rec)
            raise StageFailed(f"stage '{name}' failed: {type(e).__name__}: {e}") from e
        rec: Dict[str, Any] = {"bench": "e2e", "stage": name, "s": round(time.perf_counter() - t0, 3),
                               "load_s": round(load_s, 3)}
        if dev.type == "cuda":
            rec.update(peak_alloc_gb=gb(torch.cuda.max_memory_allocated(dev)),
                       peak_reserved_gb=gb(torch.cuda.max_memory_reserved(dev)), alloc_start_gb=gb(at_start))
        rec["offload_s"] = round(self.release(*release), 3)
        if dev.type == "cuda":
            free, total = torch.cuda.mem_get_info(dev)
            rec.update(alloc_end_gb=gb(torch.cuda.memory_allocated(dev)), device_used_end_gb=gb(total - free))
        rec.update(extra)
        self.records.append(rec)
        self.emit(rec)
        return out
