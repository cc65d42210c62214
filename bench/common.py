"""Shared helpers of the benchmark scripts: device-synchronized timing, peak VRAM, environment, JSON output.

Every bench prints one JSON line per measured configuration (``print_json``) so a single GPU run can be pasted
into docs/benchmarks.md or compared by a script.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benches run as `python bench/x.py` from the repo root
    sys.path.insert(0, str(REPO))


DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
"""The ``--dtype`` / ``--vae-dtype`` choices of the benches."""


def cesium_data(need: str = "input") -> Path:
    """The CesiumMan data folder that has ``need`` (``input`` frames or ``cameras.json``), first of: ``$E4D_SHARED``'s,
    the ``../shared`` beside the checkout (CPU machines), the carried ``.devcomfy`` copy (GPU machine, input frames
    only; see tools/device_comfy_prepare.sh). None has it: the first, so the caller's error names a real path."""
    shared = os.environ.get("E4D_SHARED")
    candidates = ([Path(shared) / "data" / "cesium_man_walk"] if shared else []) + [
        REPO.parent / "shared" / "data" / "cesium_man_walk", REPO / ".devcomfy" / "data" / "cesium_man_walk"]
    return next((d for d in candidates if (d / need).exists()), candidates[0])


def sync(device: Optional[torch.device] = None) -> None:
    """Wait for queued device work (CUDA only; a no-op on CPU)."""
    dev = torch.device(device) if device is not None else None
    if (dev is None and torch.cuda.is_available()) or (dev is not None and dev.type == "cuda"):
        torch.cuda.synchronize(dev)


class Stopwatch:
    """Named, device-synchronized stage timings: ``with sw("fit"): ...``; ``sw.times`` maps name -> seconds."""

    def __init__(self, device: Optional[torch.device] = None) -> None:
        self.device = device
        self.times: Dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        sync(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0

    def rounded(self, digits: int = 3) -> Dict[str, float]:
        return {k: round(v, digits) for k, v in self.times.items()}


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA only)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_vram_gb(device: torch.device) -> Optional[float]:
    """Peak ``torch.cuda.max_memory_allocated`` since the last reset, in GiB (None on CPU)."""
    if torch.device(device).type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3)


def env_info(device: torch.device) -> Dict[str, Any]:
    """Versions and device name for the JSON records."""
    info: Dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "device": str(device)}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        import gsplat
        info["gsplat"] = getattr(gsplat, "__version__", "?")
    except Exception:  # gsplat is optional on CPU machines; its absence is reported, not fatal
        info["gsplat"] = None
    return info


def print_json(record: Dict[str, Any]) -> None:
    """One JSON line on stdout (flushed, so partial runs still leave their records)."""
    print(json.dumps(record, sort_keys=False, default=str), flush=True)


def pick_device(name: str) -> torch.device:
    """``"cuda"`` (must exist), ``"cpu"``, or ``"auto"``; fails early with the fix when CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA device visible; run on the GPU machine or pass --device cpu "
                         "with tiny settings")
    return dev


__all__ = ["DTYPES", "cesium_data", "Stopwatch", "sync", "reset_peak", "peak_vram_gb", "env_info", "print_json", "pick_device", "REPO"]
