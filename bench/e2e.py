"""End-to-end benchmark of the whole Efficient4D chain through the Python API (no ComfyUI), stage by stage.

video-to-4D: 32 RGBA input frames -> preprocess (alpha box, 256² on white) -> K = 16 key frames -> SyncDreamer-T
(16 views, 50 DDIM steps, decomposed guidance) -> RIFE 4.7 x4 in time (61 frames) -> confidence maps -> 500-step
4DGS fit with Zero123 SDS -> orbit render (60 frames, 512²) -> export (native + PLY sequence + mp4).
``--image`` = image-to-4D: one input frame -> SVD-XT image-to-video (256², 25 frames, 16 kept) -> the same chain.

All models are FULL-SIZE with RANDOM weights (real shapes and FLOPs; no real weights can be downloaded here), fp16 on
CUDA. Each stage prints one JSON line (wall time, CUDA-synchronized; peak ``max_memory_allocated`` /
``max_memory_reserved`` since the stage began, resident weights included); the last line is the summary. Model
creation (random init, standing in for loading a checkpoint) is timed apart as ``load_s``.

    python bench/e2e.py                      # video-to-4D, all models resident on the GPU (offloading off)
    python bench/e2e.py --offload            # each stage's models live on the GPU only during that stage
    python bench/e2e.py --image --offload    # image-to-4D (adds SVD)
    python bench/e2e.py --warmup --view-batch 32 --compile --vae-dtype bf16 --sds-every 2   # fastest measured
    python bench/e2e.py --quick              # few steps / iterations: smoke run of the whole chain on a GPU
    python bench/e2e.py --tiny               # tiny random models on the CPU (CI smoke, tests/test_e2e_smoke.py)

Targets (issue 8, one H100, video-to-4D): <= 60 s and <= 20 GB peak; the chain must fit 24 GB with offloading.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # siblings by plain name (also when loaded by file path, as the tests do)
    sys.path.insert(0, str(BENCH))
from common import DTYPES, cesium_data  # noqa: E402  (common also puts the repo on sys.path)
from e2e_stages import Run, StageFailed, StageUnavailable, need  # noqa: E402


@dataclass
class Settings:
    """Sizes of one run (full, --quick or --tiny)."""

    keyframes: int = 16
    size: int = 256
    crop: int = 200
    steps: int = 50
    view_batch: int = 16
    multiplier: int = 4
    rife_batch: int = 256
    iterations: int = 500
    points: int = 50_000
    sds: bool = True
    sds_size: int = 256
    orbit_frames: int = 60
    orbit_res: int = 512
    ply_frames: int = 16
    svd_size: int = 256
    svd_frames: int = 25
    svd_steps: int = 25
    sds_every: int = 1


def settings(args: argparse.Namespace) -> Settings:
    if args.tiny:
        s = Settings(keyframes=3, size=64, crop=50, steps=2, view_batch=16, multiplier=2, rife_batch=16, iterations=3,
                     points=300, sds_size=64, orbit_frames=2, orbit_res=32, ply_frames=2, svd_size=64, svd_frames=4,
                     svd_steps=2)
    elif args.quick:
        s = Settings(steps=5, iterations=50, orbit_frames=12, orbit_res=256, ply_frames=4, svd_steps=3)
    else:
        s = Settings()
    for k in ("keyframes", "steps", "view_batch", "iterations", "points", "orbit_frames", "orbit_res"):
        v = getattr(args, k, None)
        if v is not None:
            setattr(s, k, v)
    if args.no_sds:
        s.sds = False
    s.sds_every = args.sds_every
    return s


# ------------------------------------------------------------------------------------------------------------------
# models (random weights, real shapes)
# ------------------------------------------------------------------------------------------------------------------
def bench_module(name: str):
    """Another bench script as a module (their random full-size model builders are reused, not copied)."""
    import importlib

    return importlib.import_module(name)


def build_syncdreamer(dev: torch.device, dtype: torch.dtype, tiny: bool, vae_dtype: Optional[str] = None,
                      compile_mode: Optional[str] = None):
    """SyncDreamer with random weights; ``compile_mode`` as the loader node's ``compile`` (lazy: the first sampling
    step of each view-chunk size compiles, which ``--warmup`` absorbs)."""
    bsd = need("syncdreamer", "bench/syncdreamer.py build_model", lambda: bench_module("syncdreamer").build_model)
    model = bsd(dev, dtype, tiny, DTYPES[vae_dtype] if vae_dtype else None)
    if compile_mode is not None:
        from e4d.syncdreamer.speed import accelerate

        accelerate(model, compile_mode=compile_mode)
    return model


def build_rife(dev: torch.device, dtype: torch.dtype):
    def make():
        from e4d.interp import RifeInterpolator
        from e4d.rife.loader import random_model

        return RifeInterpolator(random_model("4.7", seed=0), "random 4.7").to(dev, dtype)
    return need("interpolate", "e4d.rife random 4.7 model", make)


def build_zero123(dev: torch.device, dtype: torch.dtype, tiny: bool):
    rz = need("fit", "bench/sds.py random_zero123 (zero123-xl shapes)", lambda: bench_module("sds").random_zero123)
    return rz(dev, dtype, tiny)


def build_svd(dev: torch.device, dtype: torch.dtype, tiny: bool):
    """SVD-XT (UNet 1.5 B, temporal VAE, OpenCLIP ViT-H) with random weights, as a diffusers pipeline."""
    rs = need("svd", "bench/svd.py random_svd (SVD-XT shapes)", lambda: bench_module("svd").random_svd)
    return rs(dev, dtype, tiny)


# ------------------------------------------------------------------------------------------------------------------
# the chain
# ------------------------------------------------------------------------------------------------------------------
def load_frames(data: Path):
    """``[N, H, W, 4]`` uint8 RGBA frames of ``data/input/*.png`` (sorted)."""
    import numpy as np
    from PIL import Image

    files = sorted((data / "input").glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no input frames in {data / 'input'}; pass --data DIR with DIR/input/*.png (RGBA), "
                                f"or run tools/device_comfy_prepare.sh, which copies them into .devcomfy/data")
    return np.stack([np.asarray(Image.open(f).convert("RGBA")) for f in files])


def syncdreamer_views(pipe_mod, samp_mod, model, frames: torch.Tensor, alpha: Optional[torch.Tensor], k: int,
                      config, notes: List[str]):
    """K key frames of prepared ``frames [N, S, S, 3]`` -> ViewMatrix ``[K, 16, S, S, 3]``.

    The same public steps as ``syncdreamer_t(..., prepare="none")`` (frame selection, ``sample_latents``,
    ``decode_views``), split so that non-finite images from random weights are replaced by white (noted) instead
    of failing the ViewMatrix check: the cost, which is what is measured, does not change.
    """
    from e4d.cameras import input_view, syncdreamer16
    from e4d.viewmatrix import ViewMatrix

    n, size = frames.shape[0], frames.shape[1]
    idx = pipe_mod.select_frames(n, k)
    f = frames[idx.to(frames.device)].float()
    lat = samp_mod.sample_latents(model, f.permute(0, 3, 1, 2) * 2 - 1, config)
    views = samp_mod.decode_views(model, lat, batch=config.view_batch).cpu()
    if not bool(torch.isfinite(views).all()):
        notes.append("SyncDreamer-T output had non-finite values (random weights); replaced by white")
        views = torch.nan_to_num(views, nan=1.0, posinf=1.0, neginf=0.0).clamp(0, 1)
    times = idx.float() / max(n - 1, 1)
    a = None if alpha is None else alpha[idx.to(alpha.device)].float().cpu()
    return ViewMatrix(images=views, cameras=syncdreamer16(views.shape[-2]), times=times, input_images=f.cpu(),
                      input_alpha=a, input_camera=input_view(config.elevation, size=size))


def run_chain(args: argparse.Namespace, s: Settings, run: Run, out_dir: Path) -> Dict[str, Any]:
    dev = run.dev
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    prep_mod = need("preprocess", "e4d.preprocess", lambda: __import__("e4d.preprocess", fromlist=["x"]))
    pipe_mod = need("syncdreamer", "e4d.syncdreamer.pipeline", lambda: __import__("e4d.syncdreamer.pipeline",
                                                                                    fromlist=["x"]))
    samp_mod = need("syncdreamer", "e4d.syncdreamer.sampler", lambda: __import__("e4d.syncdreamer.sampler",
                                                                                   fromlist=["x"]))
    builders = {"syncdreamer": lambda: build_syncdreamer(dev, dtype, args.tiny, args.vae_dtype, args.compile),
                "rife": lambda: build_rife(dev, dtype),
                "zero123": lambda: build_zero123(dev, dtype, args.tiny),
                "svd": lambda: build_svd(dev, dtype, args.tiny)}
    wanted = (["svd"] if args.image else []) + ["syncdreamer", "rife"] + (["zero123"] if s.sds else [])
    load = {n: 0.0 for n in wanted}
    if not run.offload:  # everything resident from the start: the no-offload peak holds all weights at once
        for n in wanted:
            load[n] = run.model(n, builders[n])[1]
    notes: List[str] = []
    rgba = load_frames(args.data)

    pcfg = prep_mod.PrepareConfig(size=s.size, crop_size=s.crop, box="clip")
    if args.image:
        first = run.stage("preprocess", lambda: prep_mod.prepare_object_frames(rgba[:1], config=pcfg), frames=1)
        svd, t = run.model("svd", builders["svd"])
        svd_mod = need("svd", "e4d.svd.pipeline", lambda: __import__("e4d.svd.pipeline", fromlist=["x"]))
        scfg = svd_mod.SVDConfig(num_frames=s.svd_frames, width=s.svd_size, height=s.svd_size, steps=s.svd_steps,
                                 keep_frames=s.keyframes, decode_chunk_size=8)
        res = run.stage("svd", lambda: svd_mod.image_to_video(svd, first.images[0].to(dev), first.alpha[0].to(dev),
                                                              scfg), load_s=load["svd"] + t, release=("svd",),
                        frames=s.svd_frames, size=s.svd_size, steps=s.svd_steps, kept=s.keyframes)
        try:  # the workflow re-prepares SVD's frames with its masks; random weights may give unusable masks
            prep = prep_mod.prepare_object_frames(res.frames, res.masks, pcfg)
            frames, alpha = prep.images, prep.alpha
        except ValueError as e:
            notes.append(f"SVD masks unusable with random weights ({str(e)[:80]}...): its frames go to SyncDreamer "
                         "as they are (256² on white)")
            frames = torch.nn.functional.interpolate(res.frames.permute(0, 3, 1, 2), size=(s.size, s.size),
                                                     mode="area").permute(0, 2, 3, 1)
            alpha = None
        n_in = frames.shape[0]
    else:
        prep = run.stage("preprocess", lambda: prep_mod.prepare_object_frames(rgba, config=pcfg), frames=len(rgba))
        frames, alpha = prep.images, prep.alpha
        n_in = frames.shape[0]

    sd, t = run.model("syncdreamer", builders["syncdreamer"])
    scfg = samp_mod.SamplerConfig(steps=s.steps, view_batch=s.view_batch, guidance="decomposed", scales=(2.0, 1.0))
    vm = run.stage("syncdreamer", lambda: syncdreamer_views(pipe_mod, samp_mod, sd, frames.to(dev), alpha, s.keyframes,
                                                            scfg, notes),
                   load_s=load["syncdreamer"] + t, release=("syncdreamer",), frames_in=n_in, keyframes=s.keyframes,
                   views=16, steps=s.steps, view_batch=s.view_batch, guidance="decomposed",
                   compile=args.compile, vae_dtype=args.vae_dtype or "fp32")

    interp_mod = need("interpolate", "e4d.interp.sequences", lambda: __import__("e4d.interp.sequences", fromlist=["x"]))
    rife, t = run.model("rife", builders["rife"])
    vm_dev = vm.to(dev)
    vm61 = run.stage("interpolate", lambda: interp_mod.interpolate_view_matrix(vm_dev, rife, multiplier=s.multiplier,
                                                                               batch=s.rife_batch),
                     load_s=load["rife"] + t, model="rife 4.7 (random)", multiplier=s.multiplier)
    conf_mod = need("confidence", "e4d.confidence_maps", lambda: __import__("e4d.confidence_maps", fromlist=["x"]))
    conf = run.stage("confidence", lambda: conf_mod.compute_confidence(vm61.images, rife,
                                                                      conf_mod.ConfidenceConfig(batch=s.rife_batch)),
                     release=("rife",), frames=vm61.T, views=vm61.V)
    vm_dev = None  # noqa: F841 -- frees the 16-frame copy (the lambdas above already ran)

    fit_mod = need("fit", "e4d.fit", lambda: __import__("e4d.fit", fromlist=["x"]))
    guidance, t = None, 0.0
    if s.sds:
        comps, t = run.model("zero123", builders["zero123"])
        z_mod = need("fit", "e4d.guidance.zero123", lambda: __import__("e4d.guidance.zero123", fromlist=["x"]))
        guidance = z_mod.Zero123Guidance(comps, z_mod.SDSConfig(render_size=s.sds_size,
                                                                         every=s.sds_every), device=dev)
    if args.tiny:
        fcfg = fit_mod.reduced_for_cpu(iterations=s.iterations, num_points=s.points)
    else:
        fcfg = fit_mod.preset("recommended", iterations=s.iterations, num_points=s.points)
    fres = run.stage("fit", lambda: fit_mod.fit(vm61, conf, config=fcfg, guidance=guidance),
                     load_s=(load["zero123"] if s.sds else 0.0) + t, release=("zero123",) if s.sds else (),
                     iterations=s.iterations, points=s.points, sds=s.sds, sds_every=s.sds_every, T=vm61.T,
                     V=vm61.V)
    if guidance is not None:
        guidance.cache = None  # per-frame CLIP/VAE references of the SDS (small) go with the fit
    vm61 = conf = None  # noqa: F841 -- the 61-frame matrix and its confidence are not needed past the fit
    g = fres.gaussians

    orbit_mod = need("orbit", "e4d.orbit", lambda: __import__("e4d.orbit", fromlist=["x"]))
    orbit = run.stage("orbit", lambda: orbit_mod.orbit_render(g, orbit_mod.OrbitConfig(
        frames=s.orbit_frames, resolution=s.orbit_res)), frames=s.orbit_frames, resolution=s.orbit_res)

    exp_mod = need("export", "e4d.export", lambda: __import__("e4d.export", fromlist=["x"]))

    def export() -> Dict[str, Any]:
        out_dir.mkdir(parents=True, exist_ok=True)
        files = {"native": str(exp_mod.save_native(g, out_dir / "object.e4d.safetensors"))}
        seq = exp_mod.save_ply_sequence(g, torch.linspace(0, 1, s.ply_frames), out_dir / "ply")
        files["ply"] = len(seq) if isinstance(seq, (list, tuple)) else str(seq)
        try:  # a video writer missing on the machine must not fail the benchmark
            from e4d.video_io import write_video

            files["video"] = str(write_video(orbit.frames, out_dir / "orbit.mp4", fps=24.0))
        except Exception as e:  # noqa: BLE001
            notes.append(f"orbit video not written: {type(e).__name__}: {str(e)[:120]}")
        return files
    files = run.stage("export", export, ply_frames=s.ply_frames)
    return {"files": files, "notes": notes, "gaussians": int(g.means.shape[0]), "vm_T": vm.T}


def summary(run: Run, args: argparse.Namespace, s: Settings, extra: Dict[str, Any]) -> Dict[str, Any]:
    recs = run.records
    total = round(sum(r["s"] for r in recs), 3)
    loads = round(sum(r["load_s"] + r.get("offload_s", 0.0) for r in recs), 3)
    out: Dict[str, Any] = {"bench": "e2e", "summary": True, "mode": "image" if args.image else "video",
                           "offload": run.offload, "quick": args.quick, "tiny": args.tiny, "total_s": total,
                           "load_and_offload_s": loads, "total_with_loads_s": round(total + loads, 3),
                           "stages_s": {r["stage"]: r["s"] for r in recs}, "settings": s.__dict__}
    if run.dev.type == "cuda":
        out["peak_alloc_gb"] = max(r["peak_alloc_gb"] for r in recs)
        out["peak_reserved_gb"] = max(r["peak_reserved_gb"] for r in recs)
        out["stages_peak_alloc_gb"] = {r["stage"]: r["peak_alloc_gb"] for r in recs}
        out["gpu"] = torch.cuda.get_device_name(run.dev)
        if not args.image and not args.quick:
            out["target_60s_met"] = total <= 60.0
            out["target_20gb_met"] = out["peak_alloc_gb"] <= 20.0
        out["fits_24gb"] = out["peak_reserved_gb"] <= 22.0  # leave ~2 GB for the CUDA context and other processes
    try:  # versions of torch / gsplat and the GPU name, as the other benches record them
        out["env"] = bench_module("common").env_info(run.dev)
    except Exception as e:  # noqa: BLE001 -- the environment line must never fail the benchmark
        out["env"] = {"torch": torch.__version__, "device": str(run.dev), "error": repr(e)[:200]}
    out.update(**extra)
    return out


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="folder with input/*.png (default: cesium_man_walk)")
    ap.add_argument("--image", action="store_true", help="image-to-4D: SVD on the first input frame first")
    ap.add_argument("--offload", action="store_true", help="models on the GPU only during their stage")
    ap.add_argument("--quick", action="store_true", help="few steps/iterations (GPU smoke run)")
    ap.add_argument("--tiny", action="store_true", help="tiny random models on the CPU (CI smoke)")
    ap.add_argument("--no-sds", action="store_true", help="fit without the Zero123 SDS guidance")
    ap.add_argument("--warmup", action="store_true", help="run the chain once with --quick-like sizes first")
    ap.add_argument("--compile", nargs="?", const="default", default=None,
                    help="torch.compile SyncDreamer's UNet + frustum net (mode, default 'default'); use with --warmup, "
                         "which absorbs the one-off compile")
    ap.add_argument("--vae-dtype", default=None, choices=["fp16", "bf16", "fp32"],
                    help="SyncDreamer VAE dtype (default fp32 under fp16 weights, as the loader)")
    ap.add_argument("--sds-every", type=int, default=1, help="SDS on every k-th fit step only (SDSConfig.every)")
    for k in ("keyframes", "steps", "view_batch", "iterations", "points", "orbit_frames", "orbit_res"):
        ap.add_argument("--" + k.replace("_", "-"), dest=k, type=int, default=None)
    ap.add_argument("--device", default=None, help="default: cuda when available (cpu with --tiny)")
    ap.add_argument("--out", type=Path, default=None, help="export folder (default: a temporary folder)")
    ap.add_argument("--json-out", type=Path, default=None, help="also append every JSON line to this file")
    args = ap.parse_args(argv)
    if args.data is None:
        args.data = cesium_data("input")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(argv)
    name = args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device; run on the GPU machine or use --tiny (CPU)")
    if dev.type == "cpu" and not args.tiny:
        raise SystemExit("full-size models need a GPU; use --tiny on a CPU machine")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    s = settings(args)
    run = Run(dev, args.offload, json_out=args.json_out)
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="e4d_e2e_") as tmp:
            if args.warmup:  # kernels, cuDNN autotune, allocator: on the same (already built) models
                ws = Settings(**{**s.__dict__, "steps": 2, "iterations": 5, "orbit_frames": 4, "svd_steps": 1})
                warm = Run(dev, args.offload, models=run.models)
                warm.emit = lambda rec: None  # type: ignore[method-assign]
                run_chain(args, ws, warm, Path(tmp) / "warmup")
                run.models = warm.models
            out_dir = args.out or Path(tmp) / "export"
            out_dir.mkdir(parents=True, exist_ok=True)
            extra = run_chain(args, s, run, out_dir)
    except (StageUnavailable, StageFailed) as e:
        import traceback

        traceback.print_exc()
        run.emit({"bench": "e2e", "summary": True, "error": str(e)[:1000], "stages_s": {r["stage"]: r["s"]
                                                                                      for r in run.records}})
        print(f"e2e: {e}", file=sys.stderr)
        return 2
    extra["wall_s"] = round(time.perf_counter() - t0, 2)
    run.emit(summary(run, args, s, extra))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
