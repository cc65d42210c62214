"""Benchmark: slice + render of 50k native 4D Gaussians at 512^2 on CUDA (gsplat backend).

Measurement: ``torch.cuda.synchronize()`` around each timed block, ``--warmup`` untimed calls first, then
``--iters`` timed calls; each call slices the 4D Gaussians at B times (eq. (4)-(6)) and renders B times x C
views in ONE gsplat call (inference, ``torch.no_grad``). frames/s = B * C * iters / seconds. Also reported:
slicing alone, an unbatched 1 x 1 call, packed vs unpacked layout, and a training step (forward + backward) of
16 images at 256^2, the fit's shape. Prints one JSON line.

    python bench/render.py                 # defaults: 50k Gaussians, 512^2, 4 times x 16 views
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
from e4d.gaussians4d import init_random  # noqa: E402
from e4d.render import render  # noqa: E402
from e4d.slicing import slice_at  # noqa: E402


def timed(fn, warmup: int, iters: int) -> float:
    """Seconds per call (CUDA-synchronized)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=50_000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--times", type=int, default=4, help="B: time slices per call")
    ap.add_argument("--views", type=int, default=16, help="C: cameras per time slice")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--opacity", type=float, default=0.1, help="init opacity (paper init: 0.1)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/render.py needs a CUDA GPU (and gsplat)")
    dev = torch.device("cuda")
    g = init_random(args.num, seed=0, opacity=args.opacity, sigma_t=0.2, device=dev)
    cams = syncdreamer16(args.size)
    B, C, S = args.times, args.views, args.size
    v = torch.arange(C) % len(cams)
    w2c = cams.w2c[v][None].expand(B, -1, -1, -1).contiguous().to(dev)
    K = cams.K[v][None].expand(B, -1, -1, -1).contiguous().to(dev)
    times = torch.linspace(0.0, 1.0, B, device=dev)
    res = {"bench": "render", "device": torch.cuda.get_device_name(), "num": args.num, "size": S,
           "times_per_call": B, "views_per_call": C, "iters": args.iters, "warmup": args.warmup,
           "torch": torch.__version__}
    try:
        import gsplat
        res["gsplat"] = gsplat.__version__
    except Exception as e:  # report rather than crash: the JSON says why
        res["error"] = f"gsplat import failed: {e!r}"
        print(json.dumps(res))
        return
    with torch.no_grad():
        res["slice_ms"] = 1e3 * timed(lambda: slice_at(g, times), args.warmup, args.iters)
        for packed in (True, False):
            key = "packed" if packed else "unpacked"
            sec = timed(lambda: render(g, times, w2c, K, S, S, backend="gsplat", packed=packed),
                        args.warmup, args.iters)
            res[f"fps_{key}"] = B * C / sec
            res[f"ms_per_call_{key}"] = 1e3 * sec
        sec1 = timed(lambda: render(g, times[:1], w2c[:1, :1], K[:1, :1], S, S, backend="gsplat"),
                     args.warmup, args.iters)
        res["fps_unbatched_1x1"] = 1.0 / sec1
        out = render(g, times, w2c, K, S, S, backend="gsplat")
        res["mean_alpha"] = float(out.alpha.mean())
    res["fps"] = max(res["fps_packed"], res["fps_unpacked"])
    res["best_layout"] = "packed" if res["fps_packed"] >= res["fps_unpacked"] else "unpacked"
    # training step at the fit's shape: 16 images (4 times x 4 views) at 256^2, forward + backward
    gt = g.clone().requires_grad_()
    cams256 = syncdreamer16(256)
    w2c_t = cams256.w2c[:4][None].expand(4, -1, -1, -1).contiguous().to(dev)
    K_t = cams256.K[:4][None].expand(4, -1, -1, -1).contiguous().to(dev)
    t4 = torch.linspace(0.0, 1.0, 4, device=dev)

    def step():
        o = render(gt, t4, w2c_t, K_t, 256, 256, backend="gsplat")
        (o.rgb.mean() + o.alpha.mean()).backward()

    torch.cuda.reset_peak_memory_stats()
    res["train_step_16x256_ms"] = 1e3 * timed(step, args.warmup, args.iters)
    res["train_peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
    res["target_fps"] = 2000
    res["meets_target"] = res["fps"] >= 2000
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}))


if __name__ == "__main__":
    main()
