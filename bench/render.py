"""Benchmark: slice + render of 50k native 4D Gaussians at 512^2 on CUDA, per backend (gsplat, triton).

Measurement: ``torch.cuda.synchronize()`` around each timed block, ``--warmup`` untimed calls first, then
``--iters`` timed calls; each call slices the 4D Gaussians at B times (eq. (4)-(6)) and renders B times x C
views in ONE rasterizer call (inference, ``torch.no_grad``). frames/s = B * C * iters / seconds. Also reported:
slicing alone, an unbatched 1 x 1 call, gsplat's packed vs unpacked layout, and a training step (forward +
backward) of 16 images at 256^2, the fit's shape. Prints one JSON line per backend.

    python bench/render.py                          # defaults: gsplat, 50k Gaussians, 512^2, 4 times x 16 views
    python bench/render.py --backend gsplat,triton  # both, same scene, one line each
    python bench/render.py --backend triton --launch-sweep   # also time Triton launch shapes (chunk x warps)
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e4d.cameras import syncdreamer16  # noqa: E402
from e4d.gaussians4d import init_random  # noqa: E402
from e4d.render import make_backgrounds, render  # noqa: E402
from e4d.slicing import slice_at  # noqa: E402

TARGET_FPS = 5000


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


def launch_sweep(g, times, w2c, K, S, gt, t4, w2c_t, K_t, args) -> list:
    """Forward fps at the render shape per forward launch shape (chunk x warps), and train-step ms at the fit
    shape per backward chunk (the backward is one warp per tile)."""
    from e4d.render.triton_backend import TritonLaunch, render_triton

    def fwd(launch):
        g3 = slice_at(g, times)
        render_triton(g3.means, g3.covs, g3.opacities, g3.sh, g3.sh_degree, w2c, K, S, S,
                      make_backgrounds(1.0, *w2c.shape[:2], g3.means), launch=launch)

    def step(launch):
        g3 = slice_at(gt, t4)
        rgb, alpha = render_triton(g3.means, g3.covs, g3.opacities, g3.sh, g3.sh_degree, w2c_t, K_t, 256, 256,
                                   make_backgrounds(1.0, 4, 4, g3.means), launch=launch)
        (rgb.mean() + alpha.mean()).backward()

    n = max(3, args.iters // 4)
    out = []
    for chunk, warps in itertools.product((4, 8, 16), (1, 2, 4, 8)):
        with torch.no_grad():
            fps = w2c.shape[0] * w2c.shape[1] / timed(lambda: fwd(TritonLaunch(chunk, warps)), 2, n)
        out.append({"chunk": chunk, "warps": warps, "fps": round(fps, 1)})
    for chunk in (1, 2, 4):
        ms = 1e3 * timed(lambda: step(TritonLaunch(backward_chunk=chunk)), 2, n)
        out.append({"backward_chunk": chunk, "train_step_16x256_ms": round(ms, 3)})
    return out


def bench_backend(backend: str, args: argparse.Namespace) -> dict:
    dev = torch.device("cuda")
    g = init_random(args.num, seed=0, opacity=args.opacity, sigma_t=0.2, device=dev)
    cams = syncdreamer16(args.size)
    B, C, S = args.times, args.views, args.size
    v = torch.arange(C) % len(cams)
    w2c = cams.w2c[v][None].expand(B, -1, -1, -1).contiguous().to(dev)
    K = cams.K[v][None].expand(B, -1, -1, -1).contiguous().to(dev)
    times = torch.linspace(0.0, 1.0, B, device=dev)
    res = {"bench": "render", "backend": backend, "device": torch.cuda.get_device_name(), "num": args.num,
           "size": S, "times_per_call": B, "views_per_call": C, "iters": args.iters, "warmup": args.warmup,
           "torch": torch.__version__}
    try:
        if backend == "gsplat":
            import gsplat
            res["gsplat"] = gsplat.__version__
        else:
            import triton
            res["triton"] = triton.__version__
    except Exception as e:  # report rather than crash: the JSON says why
        res["error"] = f"{backend} import failed: {e!r}"
        return res
    layouts = (True, False) if backend == "gsplat" else (False,)
    with torch.no_grad():
        res["slice_ms"] = 1e3 * timed(lambda: slice_at(g, times), args.warmup, args.iters)
        for packed in layouts:
            key = "packed" if packed else "unpacked"
            sec = timed(lambda: render(g, times, w2c, K, S, S, backend=backend, packed=packed),
                        args.warmup, args.iters)
            res[f"fps_{key}"] = B * C / sec
            res[f"ms_per_call_{key}"] = 1e3 * sec
        sec1 = timed(lambda: render(g, times[:1], w2c[:1, :1], K[:1, :1], S, S, backend=backend),
                     args.warmup, args.iters)
        res["fps_unbatched_1x1"] = 1.0 / sec1
        out = render(g, times, w2c, K, S, S, backend=backend)
        res["mean_alpha"] = float(out.alpha.mean())
    res["fps"] = max(res.get("fps_packed", 0.0), res["fps_unpacked"])
    res["best_layout"] = "packed" if res.get("fps_packed", 0.0) >= res["fps_unpacked"] else "unpacked"
    # training step at the fit's shape: 16 images (4 times x 4 views) at 256^2, forward + backward
    gt = g.clone().requires_grad_()
    cams256 = syncdreamer16(256)
    w2c_t = cams256.w2c[:4][None].expand(4, -1, -1, -1).contiguous().to(dev)
    K_t = cams256.K[:4][None].expand(4, -1, -1, -1).contiguous().to(dev)
    t4 = torch.linspace(0.0, 1.0, 4, device=dev)

    def step():
        o = render(gt, t4, w2c_t, K_t, 256, 256, backend=backend)
        (o.rgb.mean() + o.alpha.mean()).backward()

    torch.cuda.reset_peak_memory_stats()
    res["train_step_16x256_ms"] = 1e3 * timed(step, args.warmup, args.iters)
    res["train_peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
    if backend == "triton":  # the launch shapes the autotuner chose, per (height, width, dtypes) key
        from e4d.render import triton_kernels as tk
        tuned = (("forward", tk.composite_forward_tuned), ("backward", tk.composite_backward_tuned))
        res["triton_tuned"] = {name: {str(key[:2]): str(cfg) for key, cfg in fn.cache.items()} for name, fn in tuned}
        # the autotuner's last timings (ms per launch shape; Triton keeps those of the last size it tuned)
        first = lambda ms: float(ms[0] if isinstance(ms, (list, tuple)) else ms)  # noqa: E731  (median, or one)
        res["triton_tuning_ms"] = {name: {f"{cfg.kwargs} w{cfg.num_warps} r{cfg.maxnreg}": round(first(ms), 4)
                                          for cfg, ms in getattr(fn, "configs_timings", {}).items()}
                                   for name, fn in tuned}
    if backend == "triton" and args.launch_sweep:
        res["launch_sweep"] = launch_sweep(g, times, w2c, K, S, gt, t4, w2c_t, K_t, args)
    res["target_fps"] = TARGET_FPS
    res["meets_target"] = res["fps"] >= TARGET_FPS
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="gsplat", help="comma list of gsplat, triton (default gsplat)")
    ap.add_argument("--num", type=int, default=50_000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--times", type=int, default=4, help="B: time slices per call")
    ap.add_argument("--views", type=int, default=16, help="C: cameras per time slice")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--opacity", type=float, default=0.1, help="init opacity (paper init: 0.1)")
    ap.add_argument("--launch-sweep", action="store_true", help="triton: time every launch shape too")
    args = ap.parse_args()
    backends = args.backend.split(",")
    bad = [b for b in backends if b not in ("gsplat", "triton")]
    if bad:
        raise SystemExit(f"--backend {args.backend}: unknown {bad}; choose from gsplat, triton")
    if not torch.cuda.is_available():
        raise SystemExit("bench/render.py needs a CUDA (or ROCm) GPU")
    for backend in backends:
        res = bench_backend(backend, args)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}), flush=True)


if __name__ == "__main__":
    main()
