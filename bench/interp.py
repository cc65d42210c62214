"""Benchmark: time interpolation of a T x V view matrix (default 16 x 16 at 256², multiplier 4 -> 61 frames).

Target (issue 5): RIFE 4.7 (random weights) on an H100 in <= 3 s. Prints one JSON line per model/dtype:

    python bench/interp.py                       # 4.7 fp32+fp16, 3.6 fp32+fp16, flow fallback
    python bench/interp.py --models 4.7 --dtypes fp16 --batch 256

Also times the confidence maps on the 61-frame result (``--confidence``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e4d.cameras import syncdreamer16  # noqa: E402
from e4d.confidence_maps import ConfidenceConfig, compute_confidence  # noqa: E402
from e4d.interp.sequences import interpolate_view_matrix  # noqa: E402
from e4d.interp.flow import FlowInterpolator  # noqa: E402
from e4d.interp import RifeInterpolator  # noqa: E402
from e4d.rife.loader import random_model  # noqa: E402
from e4d.viewmatrix import ViewMatrix  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_vm(T: int, V: int, size: int, device: torch.device) -> ViewMatrix:
    """A smooth moving pattern per view (content does not change RIFE's cost, but keeps flows sane)."""
    y, x = torch.meshgrid(torch.arange(size, device=device, dtype=torch.float32),
                          torch.arange(size, device=device, dtype=torch.float32), indexing="ij")
    imgs = torch.empty(T, V, size, size, 3, device=device)
    for t in range(T):
        for v in range(V):
            X, Y = x - 2.0 * t - v, y - 1.0 * t
            imgs[t, v, ..., 0] = 0.5 + 0.35 * torch.sin(X / 7.0) * torch.cos(Y / 5.0)
            imgs[t, v, ..., 1] = 0.5 + 0.35 * torch.cos((X + Y) / 9.0)
            imgs[t, v, ..., 2] = 0.5 + 0.35 * torch.sin((X - 2 * Y) / 11.0)
    alpha = torch.ones(T, V, size, size, device=device)
    return ViewMatrix(imgs, syncdreamer16(size)[list(range(V))].to(device), torch.linspace(0, 1, T, device=device),
                      alpha)


def run(model: str, dtype: str, args, device: torch.device, vm: ViewMatrix) -> dict:
    if model == "flow":
        interp = FlowInterpolator()
    else:
        interp = RifeInterpolator(random_model(model, seed=0), f"random {model}")
        interp.to(device, torch.float16 if dtype == "fp16" else torch.float32)
    small = vm.select_times([0, 1]).select_views([0])
    interpolate_view_matrix(small, interp, multiplier=args.multiplier, batch=args.batch)  # warm-up / autotune
    interpolate_view_matrix(vm.select_times([0, 1]), interp, multiplier=args.multiplier, batch=args.batch)
    _sync(device)
    times = []
    for _ in range(1 if model == "flow" else args.repeats):  # DIS runs on the CPU: one timing is enough
        t0 = time.perf_counter()
        out = interpolate_view_matrix(vm, interp, multiplier=args.multiplier, batch=args.batch)
        _sync(device)
        times.append(time.perf_counter() - t0)
    rec = {"bench": "interp_view_matrix", "model": model, "name": interp.name,
           "dtype": dtype if model != "flow" else "fp32",
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "T_in": vm.T, "T_out": out.T, "V": vm.V, "size": vm.H, "multiplier": args.multiplier, "batch": args.batch,
           "images_made": (out.T - vm.T) * vm.V, "seconds": round(min(times), 4),
           "seconds_all": [round(x, 4) for x in times], "target_s": 3.0 if model == "4.7" else None}
    if rec["target_s"]:
        rec["pass"] = rec["seconds"] <= rec["target_s"]
    if device.type == "cuda":
        rec["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
    if args.confidence:
        _sync(device)
        t0 = time.perf_counter()
        compute_confidence(out.images, interp, ConfidenceConfig(batch=args.batch))
        _sync(device)
        rec["confidence_seconds"] = round(time.perf_counter() - t0, 4)
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="4.7,3.6,flow", help="comma list of 4.7, 4.6, 4.17, 4.22, 4.25, 3.6, flow")
    p.add_argument("--dtypes", default="fp32,fp16", help="comma list of fp32, fp16 (RIFE only; fp16 needs CUDA)")
    p.add_argument("--T", type=int, default=16)
    p.add_argument("--V", type=int, default=16)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--multiplier", type=int, default=4)
    p.add_argument("--batch", type=int, default=240)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--confidence", action="store_true", help="also time the confidence maps of the result")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    vm = make_vm(args.T, args.V, args.size, device)
    for model in args.models.split(","):
        for dtype in (["fp32"] if model == "flow" else args.dtypes.split(",")):
            if dtype == "fp16" and device.type != "cuda":
                continue
            print(json.dumps(run(model, dtype, args, device, vm)), flush=True)


if __name__ == "__main__":
    main()
