"""End-to-end benchmark of the product's Python path: ``e4d.pipeline.video_to_4d`` / ``image_to_4d`` +
``save_outputs``, stage by stage (no ComfyUI).

video-to-4D: 32 RGBA input frames -> prepare (256² on white) -> SyncDreamer-T (K = 16 x 16 views, 50 DDIM steps)
-> RIFE 4.7 x4 in time (61 frames) -> confidence maps -> 500-step fit with Zero123 SDS -> orbit (60 frames, 512²)
-> export (native + PLY sequence + video). ``--image``: SVD-XT (256², 25 frames, 16 kept) on the first frame first.
Every setting is the pipeline's default (``PipelineConfig()``) unless a flag says otherwise.

Models are FULL-SIZE with RANDOM weights built in memory (real shapes and FLOPs), SyncDreamer in the loader's
``auto`` dtype (bf16 where the card supports it), or, with ``--models DIR``, official-format files loaded through
``e4d.model_folder.load_models`` (e.g. the folder ``bench/e2e_comfy.py`` writes). Per stage one JSON line (the
pipeline's ``StageTimer`` hook: CUDA-synchronized wall time, peak ``max_memory_allocated`` / ``reserved`` since the
stage began, resident weights included); model building is timed apart (``load`` lines); the last line is the
summary.

    python bench/e2e.py                      # video-to-4D, all models resident on the GPU
    python bench/e2e.py --offload            # each stage's models on the GPU only during that stage
    python bench/e2e.py --image --offload    # image-to-4D (adds SVD)
    python bench/e2e.py --warmup --view-batch 32 --compile --vae-dtype bf16 --sds-every 2   # fastest measured
    python bench/e2e.py --cudnn-benchmark    # with cuDNN autotuning (its workspace trials raise the peak)
    python bench/e2e.py --quick              # few steps / iterations: smoke run of the whole chain on a GPU
    python bench/e2e.py --repeat 2           # the chain twice on the same models: run 2 = a warm session
    python bench/e2e.py --tiny               # tiny random models on the CPU (CI smoke, tests/test_e2e_smoke.py)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # siblings by plain name (also when loaded by file path, as the tests do)
    sys.path.insert(0, str(BENCH))
from common import DTYPES, REPO, cesium_data, env_info  # noqa: E402  (common also puts the repo on sys.path)

from e4d.fit import reduced_for_cpu  # noqa: E402
from e4d.pipeline import (InterpolationConfig, PipelineConfig, PipelineModels, image_to_4d,  # noqa: E402
                          save_outputs, video_to_4d)
from e4d.pipeline_hooks import Offload, StageTimer, move_model  # noqa: E402


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The pipeline's defaults, sized down by --quick / --tiny, then the explicit flags."""
    c = PipelineConfig()
    c.orbit = dataclasses.replace(c.orbit, frames=60, resolution=512)
    c.export = dataclasses.replace(c.export, ply_times=16)
    c.svd = dataclasses.replace(c.svd, width=256, height=256, num_frames=25)
    if args.tiny:
        c.prepare = dataclasses.replace(c.prepare, size=64, crop_size=50)
        c.keyframes = 3
        c.sampler = dataclasses.replace(c.sampler, steps=2)
        c.interpolation = InterpolationConfig(multiplier=2, batch=16)
        c.fit = reduced_for_cpu(c.fit, iterations=3, num_points=300)
        c.sds = dataclasses.replace(c.sds, render_size=64)
        c.orbit = dataclasses.replace(c.orbit, frames=2, resolution=32)
        c.export = dataclasses.replace(c.export, ply_times=2)
        c.svd = dataclasses.replace(c.svd, width=64, height=64, num_frames=4, steps=2)
    elif args.quick:
        c.sampler = dataclasses.replace(c.sampler, steps=5)
        c.fit = c.fit.replace(iterations=50)
        c.orbit = dataclasses.replace(c.orbit, frames=12, resolution=256)
        c.export = dataclasses.replace(c.export, ply_times=4)
        c.svd = dataclasses.replace(c.svd, steps=3)
    flags = lambda **kv: {k: v for k, v in kv.items() if v is not None}  # noqa: E731
    c.keyframes = args.keyframes if args.keyframes is not None else c.keyframes
    c.sampler = dataclasses.replace(c.sampler, **flags(steps=args.steps, view_batch=args.view_batch))
    c.fit = c.fit.replace(**flags(iterations=args.iterations, num_points=args.points, backend=args.backend))
    if args.sds_every is not None:
        c.sds = c.sds.with_every(args.sds_every)
    c.orbit = dataclasses.replace(c.orbit, **flags(frames=args.orbit_frames, resolution=args.orbit_res))
    return c


def random_models(args: argparse.Namespace, dev: torch.device, timed: Callable) -> PipelineModels:
    """Full-size (or --tiny) random models, built on ``dev`` by the other benches' builders."""
    import syncdreamer as bsd  # bench/syncdreamer.py
    from sds import random_zero123
    from svd import random_svd

    from e4d.interp import RifeInterpolator
    from e4d.model_folder import auto_dtype
    from e4d.rife.loader import random_model

    half = torch.float16 if dev.type == "cuda" else torch.float32
    sd_dtype = DTYPES[args.dtype] if args.dtype != "auto" else auto_dtype(dev)

    def syncdreamer():
        if args.tiny:  # the tests' tiny weights: scaled so a random tiny UNet stays finite over the steps
            sys.path.insert(0, str(REPO / "tests"))
            from tiny_syncdreamer import tiny_dims, tiny_state_dict

            from e4d.syncdreamer.model import SyncDreamer

            m = SyncDreamer(tiny_dims())
            m.load_state_dict(tiny_state_dict())
            return m.to(dev).eval().requires_grad_(False)
        m = bsd.build_model(dev, sd_dtype, False, DTYPES[args.vae_dtype] if args.vae_dtype else None)
        if args.compile:  # as the loader node's ``compile``: compiles lazily at the first step (--warmup absorbs it)
            from e4d.syncdreamer.speed import accelerate

            accelerate(m, compile_mode=args.compile)
        return m

    models = PipelineModels(sources={"all": "random weights"})
    if args.image:  # random SVD draws noise without a white background: WhiteBorder paints one for the crop
        sys.path.insert(0, str(REPO / "tests"))
        from tiny_svd import WhiteBorder

        models.svd = timed("svd", lambda: WhiteBorder(random_svd(dev, half, args.tiny)))
    models.syncdreamer = timed("syncdreamer", syncdreamer)
    models.interpolator = timed("rife", lambda: RifeInterpolator(random_model("4.7", seed=0), "random 4.7")
                                .to(dev, half))
    if not args.no_sds:
        models.guidance = timed("zero123", lambda: random_zero123(dev, half, args.tiny))
    return models


def load_frames(data: Path):
    """``[N, H, W, 4]`` uint8 RGBA frames of ``data/input/*.png`` (sorted)."""
    import numpy as np
    from PIL import Image

    files = sorted((data / "input").glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no input frames in {data / 'input'}; pass --data DIR with DIR/input/*.png (RGBA), "
                                f"or run tools/device_comfy_prepare.sh, which copies them into .devcomfy/data")
    return np.stack([np.asarray(Image.open(f).convert("RGBA")) for f in files])


def run_chain(args, cfg: PipelineConfig, models: PipelineModels, hooks: List, dev: torch.device, out: Path):
    rgba = load_frames(args.data)
    if args.image:
        res = image_to_4d(torch.from_numpy(rgba[0]).float() / 255, models, cfg, hooks=hooks, device=dev)
    else:
        res = video_to_4d(rgba, models, cfg, hooks=hooks, device=dev)
    files = save_outputs(res, out, cfg, hooks=hooks, models=models)
    return {"files": files, "gaussians": res.gaussians.num, "frames_in": len(rgba), "keyframes": res.view_matrix.T,
            "fit_loop_s": round(res.fit.seconds, 3),  # the fit stage minus its setup (SDS references, data)
            "substages_s": res.substages}


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="folder with input/*.png (default: cesium_man_walk)")
    ap.add_argument("--models", type=Path, default=None, help="load official-format files from this models folder "
                                                              "(e4d.model_folder layout) instead of random weights")
    ap.add_argument("--image", action="store_true", help="image-to-4D: SVD on the first input frame first")
    ap.add_argument("--offload", action="store_true", help="models on the GPU only during their stage")
    ap.add_argument("--quick", action="store_true", help="few steps/iterations (GPU smoke run)")
    ap.add_argument("--tiny", action="store_true", help="tiny random models on the CPU (CI smoke)")
    ap.add_argument("--no-sds", action="store_true", help="fit without the Zero123 SDS guidance")
    ap.add_argument("--warmup", action="store_true", help="run the chain once with few steps first (not reported)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the chain this many times on the same models (a summary line per run; run 2 onwards "
                         "shows a warm session, as a second queue in ComfyUI)")
    ap.add_argument("--compile", nargs="?", const="default", default=None,
                    help="torch.compile SyncDreamer's UNet + frustum net (mode, default 'default'); use with --warmup")
    ap.add_argument("--dtype", default="auto", choices=["auto", "fp16", "bf16", "fp32"],
                    help="SyncDreamer weights (auto: bf16 where supported, else fp16; as load_models)")
    ap.add_argument("--vae-dtype", default=None, choices=["fp16", "bf16", "fp32"],
                    help="SyncDreamer VAE dtype (default: as the loader, fp32 under fp16 weights)")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="torch.backends.cudnn.benchmark = True (off in the product and in ComfyUI by default)")
    ap.add_argument("--backend", default=None, choices=["auto", "gsplat", "triton", "reference"],
                    help="renderer of the fit, SDS and orbit (FitConfig.backend; default auto)")
    ap.add_argument("--sds-every", type=int, default=None,
                    help="SDS on every k-th fit step with k views per time (SDSConfig.with_every; default 2)")
    for k in ("keyframes", "steps", "view_batch", "iterations", "points", "orbit_frames", "orbit_res"):
        ap.add_argument("--" + k.replace("_", "-"), dest=k, type=int, default=None)
    ap.add_argument("--device", default=None, help="default: cuda when available (cpu with --tiny)")
    ap.add_argument("--out", type=Path, default=None, help="export folder (default: a temporary folder)")
    ap.add_argument("--json-out", type=Path, default=None, help="also append every JSON line to this file")
    args = ap.parse_args(argv)
    args.data = args.data or cesium_data("input")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(argv)
    dev = torch.device(args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device; run on the GPU machine or use --tiny (CPU)")
    if dev.type == "cpu" and not args.tiny:
        raise SystemExit("full-size models need a GPU; use --tiny on a CPU machine")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = args.cudnn_benchmark

    def emit(rec: Dict[str, Any]) -> None:
        line = json.dumps({"bench": "e2e", **rec}, default=str)
        print(line, flush=True)
        if args.json_out is not None:
            with open(args.json_out, "a") as f:
                f.write(line + "\n")

    loads: Dict[str, float] = {}

    def timed(name: str, build: Callable):
        t0 = time.perf_counter()
        m = build()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        loads[name] = round(time.perf_counter() - t0, 3)
        emit({"load": name, "s": loads[name]})
        return m

    t_start = time.perf_counter()
    cfg = pipeline_config(args)
    if args.models is not None:
        from e4d.model_folder import load_models

        need = (["svd"] if args.image else []) + ["syncdreamer", "interpolator"] + ([] if args.no_sds else ["guidance"])
        models = timed("all", lambda: load_models(args.models, need, dev, None if args.dtype == "auto"
                                                  else DTYPES[args.dtype], to_device=not args.offload))
    else:
        models = random_models(args, dev, timed)
        if args.offload:  # built on the GPU: start where offloading keeps them
            for name in ("svd", "syncdreamer", "interpolator", "guidance"):
                move_model(getattr(models, name), torch.device("cpu"))
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    offload = Offload(dev) if args.offload else None
    with tempfile.TemporaryDirectory(prefix="e4d_e2e_") as tmp:
        if args.warmup:  # kernels, cuDNN, allocator, compile: on the same models, nothing reported
            warm = argparse.Namespace(**{**vars(args), "quick": True})
            wcfg = pipeline_config(warm)
            wcfg.sampler = dataclasses.replace(wcfg.sampler, steps=2)
            wcfg.fit = wcfg.fit.replace(iterations=5)
            wcfg.orbit = dataclasses.replace(wcfg.orbit, frames=4)
            run_chain(args, wcfg, models, [offload] if offload else [], dev, Path(tmp) / "warmup")
        for run_i in range(max(1, args.repeat)):
            timer = StageTimer(dev, sink=lambda rec, i=run_i: emit({"run": i + 1, **rec}))
            hooks = [timer] + ([offload] if offload else [])
            moved0 = offload.seconds if offload else 0.0
            try:
                extra = run_chain(args, cfg, models, hooks, dev, args.out or Path(tmp) / f"export{run_i}")
            except Exception as e:  # noqa: BLE001 -- the stage line (with its error) is out; sum up and fail
                emit({"summary": True, "run": run_i + 1, "error": f"{type(e).__name__}: {str(e)[:1000]}",
                      "stages_s": {r["stage"]: r["s"] for r in timer.records}})
                raise
            recs = timer.records
            out: Dict[str, Any] = {"summary": True, "run": run_i + 1, "mode": "image" if args.image else "video",
                                   "offload": args.offload, "quick": args.quick, "tiny": args.tiny,
                                   "total_s": round(sum(r["s"] for r in recs), 3),
                                   "load_s": round(sum(loads.values()), 3),
                                   "offload_s": round((offload.seconds - moved0) if offload else 0.0, 3),
                                   "stages_s": {r["stage"]: r["s"] for r in recs},
                                   "wall_s": round(time.perf_counter() - t_start, 2),
                                   "cudnn_benchmark": args.cudnn_benchmark, "config": cfg.to_dict(), **extra}
            if dev.type == "cuda":
                out["peak_alloc_gb"] = max(r["peak_alloc_gb"] for r in recs)
                out["peak_reserved_gb"] = max(r["peak_reserved_gb"] for r in recs)
                out["stages_peak_alloc_gb"] = {r["stage"]: r["peak_alloc_gb"] for r in recs}
            out["env"] = env_info(dev)
            emit(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
