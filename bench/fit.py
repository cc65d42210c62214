"""Benchmark of the 4D Gaussian fit on the CesiumMan view matrix (issue 2's target: >= 32.0 dB held-out PSNR in
<= 10 s on an H100, 500 iterations, 50k Gaussians, 256^2; also a 61-time x 16-view matrix; peak VRAM <= 4 GB).

Protocol: train on ring views 0-15 at all 16 times (+ the input view), test on held-out views 16-19 at all 16
times; images on white; PSNR = mean of per-image PSNRs. Fit time is the optimisation loop only
(CUDA-synchronized, after a short warm-up fit that loads the kernels), excluding data load and upload.
Peak VRAM = ``torch.cuda.max_memory_allocated`` during the fit (data included).

Usage (repo root)::

    python bench/fit.py                       # the paper preset, one JSON line
    python bench/fit.py --times 61            # 61-time x 16-view matrix (frames linearly interpolated)
    python bench/fit.py --sweep               # several batch sizes / learning rates, one JSON line each
    python bench/fit.py --trace               # also held-out PSNR every 100 steps (eval time excluded)
    python bench/fit.py --profile             # torch.profiler table of 30 steps (stderr)
    python bench/fit.py --set backend=triton --log-compiles   # Triton compiles, and which fell inside the timed fit
    python bench/fit.py --variants paper,paper_8x8 --set lr_color=0.02   # any FitConfig field
    python bench/fit.py --device cpu --size 32 --points 500 --iterations 5 --no-warmup   # CPU smoke
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Stopwatch, cesium_data, env_info, peak_vram_gb, pick_device, print_json, reset_peak, sync  # noqa: E402

from e4d.demo import downscale_view_matrix  # noqa: E402
from e4d.fit import FitConfig, evaluate, fit, preset  # noqa: E402
from e4d.render import describe_backend  # noqa: E402
from e4d.viewmatrix import ViewMatrix, load_view_matrix  # noqa: E402

START = time.perf_counter()
TRAIN_VIEWS = list(range(16))
TEST_VIEWS = [16, 17, 18, 19]

# Sweep variants: name -> (preset, overrides). One GPU run compares them all on the same data.
VARIANTS: Dict[str, Tuple[str, dict]] = {
    "recommended": ("recommended", {}),
    "paper": ("paper", {}),
    "paper_4x4": ("paper", dict(times_per_batch=4, views_per_batch=4)),
    "paper_8x8": ("paper", dict(times_per_batch=8, views_per_batch=8)),
    "paper_4x17": ("paper", dict(times_per_batch=4, views_per_batch=17)),
    "paper_alpha": ("paper", dict(w_alpha=2000.0)),
    "paper_lr_hi": ("paper", dict(lr_xyz=0.02, lr_color=0.025, lr_scale=0.01, lr_rotation=0.01)),
    "paper_lr_lo": ("paper", dict(lr_xyz=0.005, lr_xyz_final=0.0001, lr_color=0.005, lr_opacity=0.025)),
    "paper_alpha_densify": ("paper", dict(w_alpha=2000.0, densify=True, densify_fraction=0.05, max_points=100_000)),
    "paper_densify": ("paper", dict(densify=True, densify_fraction=0.05, max_points=100_000)),
    "paper_it1000": ("paper", dict(iterations=1000, lr_xyz_steps=600)),
    "official-release": ("official-release", {}),
}
SWEEP = list(VARIANTS)


def densify_times(vm: ViewMatrix, n: int) -> ViewMatrix:
    """``n`` times spanning the same interval, frames linearly interpolated (for n = 61 and 16 GT times, every
    4th frame is an exact GT frame). Good for timing; the held-out test stays on the real GT times."""
    T = vm.T
    pos = torch.linspace(0, T - 1, n, device=vm.times.device)
    lo = pos.floor().long().clamp(max=T - 1)
    hi = (lo + 1).clamp(max=T - 1)
    w = (pos - lo.float())

    def lerp(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if x is None:
            return None
        ww = w.view(-1, *([1] * (x.ndim - 1))).to(x)
        return x[lo] * (1 - ww) + x[hi] * ww

    times = vm.times[lo] * (1 - w) + vm.times[hi] * w
    return ViewMatrix(lerp(vm.images), vm.cameras, times, lerp(vm.alpha), lerp(vm.input_images),
                      lerp(vm.input_alpha), vm.input_camera)


def make_config(args: argparse.Namespace, variant: str) -> FitConfig:
    base, overrides = VARIANTS[variant]
    cfg = preset(base, **overrides)
    cli = {"iterations": args.iterations, "num_points": args.points, "seed": args.seed,
           "times_per_batch": args.times_per_batch, "views_per_batch": args.views_per_batch}
    cfg = cfg.replace(**{k: v for k, v in cli.items() if v is not None})
    if args.no_input:
        cfg = cfg.replace(use_input_view=False)
    return cfg.replace(**parse_sets(args.set, cfg)) if args.set else cfg


def parse_sets(items: List[str], cfg: FitConfig) -> dict:
    """``["lr_xyz=0.02", "packed=true"]`` -> typed FitConfig overrides (fails early on unknown fields)."""
    out = {}
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}")
        cur = getattr(cfg, key)
        if isinstance(cur, bool):
            out[key] = text.lower() in ("1", "true", "yes")
        elif isinstance(cur, int):
            out[key] = int(text)
        elif isinstance(cur, float) or cur is None:
            out[key] = None if text.lower() == "none" else float(text)
        else:
            out[key] = text
    return out


def step_breakdown(train: ViewMatrix, cfg: FitConfig, dev: torch.device, steps: int = 50) -> dict:
    """Mean milliseconds per stage of a training step (slice+render forward, loss, backward, Adam), measured with
    a device sync after each stage over ``steps`` steps of the trainer's own pieces (syncs make it slower than
    the real loop; the shares are what matter)."""
    import time as _t

    from e4d.fit.losses import image_terms, weighted_sum
    from e4d.fit.trainer import (_gather, _optimizer, _Params, _prepare_data, frame_spacing, initial_gaussians,
                                 loss_weights, xyz_learning_rate)
    from e4d.fit.sampler import plan_batches
    from e4d.render import render

    gen = torch.Generator().manual_seed(0)
    params = _Params(initial_gaussians(train, cfg, gen))
    data = _prepare_data(train, None, cfg)
    opt = _optimizer(params, cfg, frame_spacing(train.times), dev)
    plan = plan_batches(train.T, data.targets.shape[1], steps, cfg.times_per_batch, cfg.views_per_batch, gen).to(dev)
    acc = {"render_fwd": 0.0, "loss_fwd": 0.0, "backward": 0.0, "adam": 0.0}
    for i in range(steps):
        t0 = _t.perf_counter()
        ti, vi = plan.time_idx[i], plan.view_idx[i]
        g = params.gaussians()
        out = render(g, data.times[ti], data.w2c[vi], data.K[vi], data.width, data.height, background=1.0,
                     backend=cfg.backend, packed=cfg.packed)
        sync(dev)
        t1 = _t.perf_counter()
        pred = out.rgb.flatten(0, 1).permute(0, 3, 1, 2)
        loss = weighted_sum(image_terms(cfg.loss, pred, _gather(data.targets, ti, vi), None, None, cfg.w_ssim > 0),
                            loss_weights(cfg))
        sync(dev)
        t2 = _t.perf_counter()
        loss.backward()
        sync(dev)
        t3 = _t.perf_counter()
        opt.param_groups[0]["lr"] = xyz_learning_rate(i, cfg)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(dev)
        t4 = _t.perf_counter()
        if i >= 5:  # skip the first steps (allocator warm-up)
            for k, dt in zip(acc, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                acc[k] += dt
    n = max(steps - 5, 1)
    return {k: round(1000 * v / n, 3) for k, v in acc.items()}


def run_variant(name: str, cfg: FitConfig, train: ViewMatrix, test: ViewMatrix, dev: torch.device,
                args: argparse.Namespace, extra: dict) -> dict:
    sw = Stopwatch(dev)
    reset_peak(dev)
    if args.trace:  # the loss is logged every 100 steps (held-out PSNR needs the Gaussians: final only)
        cfg = cfg.replace(log_every=min(cfg.log_every, 100))
    with sw("fit_total"):
        res = fit(train, config=cfg)
    peak = peak_vram_gb(dev)
    with sw("eval"):
        held = evaluate(res.gaussians, test, backend=cfg.backend, view_ids=TEST_VIEWS)
        ring = evaluate(res.gaussians, train, backend=cfg.backend, include_input=True) if not args.fast_eval else {}
    rec = {
        "bench": "fit", "variant": name, "psnr_heldout": round(held["psnr"], 3), "ssim_heldout": round(held["ssim"], 4),
        "psnr_ring": round(ring["psnr"], 3) if ring else None,
        "psnr_input": round(ring["input_psnr"], 3) if ring.get("input_psnr") is not None else None,
        "fit_s": round(res.seconds, 3), "s_per_it": round(res.seconds / cfg.iterations, 5), "peak_vram_gb": peak,
        "iterations": cfg.iterations, "points": cfg.num_points, "renders_per_step":
            min(cfg.times_per_batch, train.T) * min(cfg.views_per_batch, train.V + int(cfg.use_input_view and train.has_input)),
        "backend": describe_backend(cfg.backend, dev), "T": train.T, "V_train": train.V, "size": train.W, "input_view": cfg.use_input_view and train.has_input,
        "per_view_heldout": {str(p["view"]): round(p["psnr"], 2) for p in held["per_view"]},
        "stages_s": sw.rounded(), "loss_history": [(h["step"], round(h["loss"], 3)) for h in res.history],
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k.startswith(("lr_", "w_", "times_", "views_",
                                                                                    "loss", "packed", "sigma"))},
        "target_met": bool(held["psnr"] >= 32.0 and res.seconds <= 10.0 and (peak is None or peak <= 4.0)),
    }
    rec.update(extra)
    return rec


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None,
                    help="view-matrix folder (default: cesium_man_walk of $E4D_SHARED or ../shared)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cpu or auto")
    ap.add_argument("--times", type=int, default=16, help="16 = the GT times; 61 = interpolated 61-time matrix")
    ap.add_argument("--variant", default="paper", choices=SWEEP, help="config variant (default paper)")
    ap.add_argument("--sweep", action="store_true", help="run every variant (one JSON line each)")
    ap.add_argument("--variants", default=None, help="comma list of variants to run (overrides --variant)")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--points", type=int, default=None)
    ap.add_argument("--times-per-batch", type=int, default=None)
    ap.add_argument("--views-per-batch", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override any FitConfig field (repeatable), e.g. --set lr_xyz=0.02 --set packed=true")
    ap.add_argument("--size", type=int, default=None, help="downscale images (CPU smoke runs)")
    ap.add_argument("--no-input", action="store_true", help="do not train on the input view")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up fit")
    ap.add_argument("--fast-eval", action="store_true", help="held-out evaluation only (skip ring/input)")
    ap.add_argument("--trace", action="store_true", help="record the loss every 100 steps")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of 30 steps to stderr")
    ap.add_argument("--breakdown", action="store_true", help="add per-stage ms of a training step to each record")
    ap.add_argument("--log-compiles", action="store_true",
                    help="print every Triton kernel compile (or cache load) and count those inside each timed fit")
    ap.add_argument("--budget-s", type=float, default=540.0,
                    help="skip the remaining variants once this many seconds have passed (default 540)")
    args = ap.parse_args(argv)

    dev = pick_device(args.device)
    args.data = args.data or cesium_data("cameras.json")
    if not (args.data / "cameras.json").is_file():
        raise SystemExit(f"--data {args.data}: no cameras.json there; pass the cesium_man_walk folder")
    names = args.variants.split(",") if args.variants else (SWEEP if args.sweep else [args.variant])
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variants {bad}; choose from {SWEEP}")
    configs = {n: make_config(args, n) for n in names}  # validate every config before any work

    sw = Stopwatch(dev)
    with sw("load"):
        vm = load_view_matrix(args.data, views=TRAIN_VIEWS + TEST_VIEWS)
        if args.size:
            vm = downscale_view_matrix(vm, args.size)
    with sw("upload"):
        vm = vm.to(dev)
        train = vm.select_views(range(16))
        test = vm.select_views(range(16, 20))
        test = dataclasses.replace(test, input_images=None, input_alpha=None, input_camera=None)
        if args.times != train.T:
            train = densify_times(train, args.times)
    extra = {"env": env_info(dev), "data": str(args.data), "times_mode": args.times}
    if args.times != 16:  # ring/input PSNR of an interpolated matrix is against interpolated frames, not GT
        extra["note"] = "held-out PSNR at the 16 GT times; ring/input PSNR against linearly interpolated frames"
    print(f"# data {tuple(train.images.shape)} train, {tuple(test.images.shape)} test, input={train.has_input}, "
          f"load {sw.times['load']:.2f}s upload {sw.times['upload']:.2f}s", file=sys.stderr, flush=True)

    compiles: List[str] = []
    if args.log_compiles:
        log_triton_compiles(compiles)
    if not args.no_warmup:
        with sw("warmup"):
            fit(train, config=configs[names[0]].replace(iterations=20, log_every=20))
        print(f"# warm-up fit (20 its) {sw.times['warmup']:.2f}s", file=sys.stderr, flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=acts) as prof:
            fit(train, config=configs[names[0]].replace(iterations=30, log_every=30))
        key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25), file=sys.stderr, flush=True)

    failed = 0
    for n in names:
        if time.perf_counter() - START > args.budget_s:
            print_json({"bench": "fit", "variant": n, "skipped": f"time budget {args.budget_s:.0f}s spent"})
            continue
        t0 = time.perf_counter()
        before = len(compiles)
        try:
            rec = run_variant(n, configs[n], train, test, dev, args,
                              dict(extra, load_s=round(sw.times["load"], 3), upload_s=round(sw.times["upload"], 3),
                                   warmup_s=round(sw.times.get("warmup", 0.0), 3)))
            if args.breakdown:
                rec["step_breakdown_ms"] = step_breakdown(train, configs[n], dev)
        except (RuntimeError, ValueError) as e:  # e.g. CUDA OOM in one variant: report it, run the others
            failed += 1
            rec = {"bench": "fit", "variant": n, "error": f"{type(e).__name__}: {e}"[:2000]}
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        rec["wall_s"] = round(time.perf_counter() - t0, 3)
        if args.log_compiles:
            rec["triton_compiles_in_fit_and_eval"] = compiles[before:]
        print_json(rec)
        sync(dev)
    return 1 if failed else 0


def log_triton_compiles(names: List[str]) -> None:
    """Print each Triton kernel compile (or load from Triton's disk cache) with its time, appending its kernel name
    to ``names`` (Triton's ``jit_cache_hook``: called on every in-memory kernel-cache miss)."""
    from triton import knobs

    def hook(*args, **kwargs) -> bool:
        name = getattr(kwargs.get("fn"), "name", "?")
        names.append(name)
        print(f"# triton compile t={time.perf_counter() - START:.2f}s {name}", file=sys.stderr, flush=True)
        return False  # False: go on and compile

    knobs.runtime.jit_cache_hook = hook


if __name__ == "__main__":
    raise SystemExit(main())
