"""Command line: ``python -m e4d fit|render|export|demo|run``.

* ``fit --views DIR [--holdout 16,17,18,19] [--iterations N] [--preset recommended|paper|official-release] [--device cpu|cuda]
  --out FILE.safetensors``: fit a view-matrix folder (the ``shared/data/cesium_man_walk`` layout), report PSNR/SSIM
  (on white) on the held-out views, write the native 4D file.
* ``render --model FILE --out VIDEO.mp4|.gif``: orbit video of a native file.
* ``export --model FILE --out DIR``: per-time 3DGS PLY sequence of a native file.
* ``demo [--out DIR]``: fit the bundled example and write all of the above (see :mod:`e4d.demo`).
* ``run --video FILE|DIR | --image FILE --models DIR --out DIR``: the whole chain (:mod:`e4d.pipeline`) from a video
  or one image, with weights from a ComfyUI-style ``models`` folder; writes the native file, orbit video and PLYs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from .render.backends import BACKENDS


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is visible; use --device cpu")
    return dev


def _int_list(text: str) -> List[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 16,17,18,19, got {text!r}") from e


def _float_list(text: str) -> List[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0,0.5,1, got {text!r}") from e


# ------------------------------------------------------------------------------------------------ fit
def cmd_fit(args: argparse.Namespace) -> int:
    import dataclasses

    from .export import save_native
    from .fit import evaluate, fit, preset
    from .viewmatrix import load_view_matrix

    folder = Path(args.views)
    if not folder.is_dir():
        raise FileNotFoundError(f"--views {folder}: folder not found; it must hold cameras.json and views/vVV/tTT.png")
    dev = _device(args.device)
    vm = load_view_matrix(folder)
    holdout = args.holdout or []
    bad = [v for v in holdout if not 0 <= v < vm.V]
    if bad:
        raise ValueError(f"--holdout {bad}: the folder has views 0..{vm.V - 1}")
    train_ids = [v for v in range(vm.V) if v not in holdout]
    if not train_ids:
        raise ValueError(f"--holdout {holdout} leaves no training view (the folder has {vm.V})")
    overrides = {k: v for k, v in {"iterations": args.iterations, "num_points": args.points, "seed": args.seed,
                                   "backend": args.backend}.items() if v is not None}
    if args.no_input:
        overrides["use_input_view"] = False
    cfg = preset(args.preset, **overrides)
    vm = vm.to(dev)
    train = vm.select_views(train_ids)
    print(f"[e4d fit] {folder}: {train.T} times x {len(train_ids)} train views at {vm.W}x{vm.H} "
          f"(input view: {train.has_input and cfg.use_input_view}), held out {holdout}; preset {args.preset}, "
          f"{cfg.num_points} Gaussians, {cfg.iterations} iterations, device {dev}", file=sys.stderr)

    def progress(step: int, total: int, info: dict) -> None:
        if "loss" in info and not args.quiet:
            print(f"[e4d fit] step {step}/{total} loss {info['loss']:.3f}", file=sys.stderr)

    res = fit(train, config=cfg, callback=progress)
    summary = {"fit_seconds": round(res.seconds, 3), "num_gaussians": res.gaussians.num, "out": str(args.out)}
    if holdout:
        test = dataclasses.replace(vm.select_views(holdout), input_images=None, input_alpha=None, input_camera=None)
        ev = evaluate(res.gaussians, test, backend=cfg.backend, view_ids=holdout)
        summary.update(heldout_psnr=round(ev["psnr"], 3), heldout_ssim=round(ev["ssim"], 4),
                       per_view=[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()}
                                 for p in ev["per_view"]])
        for p in ev["per_view"]:
            print(f"[e4d fit] view {p['view']:>3}: PSNR {p['psnr']:.2f} dB  SSIM {p['ssim']:.4f}", file=sys.stderr)
        print(f"[e4d fit] held-out mean: PSNR {ev['psnr']:.2f} dB  SSIM {ev['ssim']:.4f} (on white)", file=sys.stderr)
    tr = (float(train.times.min()), float(train.times.max()))
    save_native(res.gaussians, args.out, time_range=tr,
                meta={"source": str(folder), "times": train.times.tolist(), "train_views": train_ids,
                      "holdout": holdout, "fit": cfg.to_dict(), **{k: summary[k] for k in summary if "heldout" in k}})
    print(json.dumps(summary))
    return 0


# --------------------------------------------------------------------------------------------- render
def cmd_render(args: argparse.Namespace) -> int:
    from .export import load_native, read_native_meta
    from .orbit import OrbitConfig, orbit_render
    from .video_io import write_video

    dev = _device(args.device)
    g = load_native(args.model, device=dev)
    t0, t1 = read_native_meta(args.model)["time_range"]
    cfg = OrbitConfig(mode=args.mode, frames=args.frames, elevation=args.elevation, radius=args.radius,
                      resolution=args.size, time_start=t0, time_end=t1, fixed_time=args.fixed_time if
                      args.fixed_time is not None else t0)
    res = orbit_render(g, cfg, backend=args.backend)
    path = write_video(res.frames, args.out, fps=args.fps)
    print(json.dumps({"video": str(path), "frames": args.frames, "size": args.size}))
    return 0


# --------------------------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    from .atomic import atomic_dir
    from .export import fitted_times, load_native, save_ply_sequence

    g = load_native(args.model)
    times = args.times if args.times else fitted_times(args.model, args.count)
    with atomic_dir(args.out, overwrite=True) as tmp:  # a re-export replaces the old sequence as a whole
        paths = save_ply_sequence(g, times, tmp, prefix=args.prefix, sh_degree_out=args.sh_degree_out)
    paths = [Path(args.out) / p.name for p in paths]
    summary = {"folder": str(args.out), "files": len(paths), "times": times}
    if args.mesh:  # after the PLY folder swap, which replaces --out as a whole
        from .mesh import MeshConfig, cli_export

        over = {k: v for k, v in dict(resolution=args.mesh_resolution, views=args.mesh_views,
                                      decimate_faces=args.mesh_decimate,
                                      texture_size=args.mesh_texture).items() if v is not None}
        summary["mesh"] = cli_export(args.model, args.out, times=times,
                                     config=MeshConfig(fixed_topology=not args.mesh_independent, **over),
                                     sequence_formats=tuple(x for x in args.mesh_formats.split(",") if x))
    print(json.dumps(summary, default=str))
    return 0


# ----------------------------------------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DEMO_DATA, run_demo

    summary = run_demo(args.out, device=args.device, data=args.data or DEMO_DATA, iterations=args.iterations,
                       orbit_frames=args.orbit_frames, orbit_size=args.orbit_size, points=args.points,
                       print_fn=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(summary))
    return 0


# ------------------------------------------------------------------------------------------------ run
def _run_config(args: argparse.Namespace, dev: torch.device):
    """PipelineConfig with the flags that were given (every other field keeps its dataclass default)."""
    import dataclasses

    from .pipeline import PipelineConfig

    cfg = PipelineConfig(white_background_masks=args.white_background)
    if args.size is not None:  # object size keeps the official 200/256 ratio
        cfg.prepare = dataclasses.replace(cfg.prepare, size=args.size, crop_size=round(args.size * 200 / 256))
    if args.keyframes is not None:
        cfg.keyframes = args.keyframes
    samp = {k: v for k, v in {"steps": args.steps, "view_batch": args.view_batch, "seed": args.seed}.items()
            if v is not None}
    cfg.sampler = dataclasses.replace(cfg.sampler, **samp)
    fit = {k: v for k, v in {"iterations": args.iterations, "num_points": args.points, "seed": args.seed}.items()
           if v is not None}
    if dev.type == "cpu":  # the reference rasterizer on the CPU: a small fit, stated in the log
        from .fit import reduced_for_cpu

        cfg.fit = reduced_for_cpu(cfg.fit, **fit)
    elif fit:
        cfg.fit = cfg.fit.replace(**fit)
    orbit = {k: v for k, v in {"frames": args.orbit_frames, "resolution": args.orbit_size}.items() if v is not None}
    cfg.orbit = dataclasses.replace(cfg.orbit, **orbit)
    if args.sds_every is not None:
        cfg.sds = cfg.sds.with_every(args.sds_every)
    return cfg


def _read_image(path: Path) -> torch.Tensor:
    """``[H, W, 4]`` RGBA in [0, 1] through the video loader's checks (pixel limit, 16-bit, damaged files)."""
    import numpy as np

    from .image_read import read_image

    if not path.is_file():
        raise FileNotFoundError(f"--image {path}: file not found")
    rgb, alpha = read_image(path)
    alpha = np.ones(rgb.shape[:2], np.float32) if alpha is None else alpha
    return torch.from_numpy(np.concatenate([rgb, alpha[..., None]], axis=-1))


def cmd_run(args: argparse.Namespace) -> int:
    import dataclasses

    from .model_folder import load_models, sds_variant
    from .pipeline import image_to_4d, save_outputs, video_to_4d
    from .pipeline_hooks import Offload, StageTimer

    dev = _device(args.device)
    need = ["syncdreamer"] + ([] if args.flow else ["interpolator"]) + ([] if args.no_sds else ["guidance"])
    if args.image is not None:
        need.insert(0, "svd")
    models = load_models(args.models, need=need, device=dev, to_device=not args.offload)
    cfg = _run_config(args, dev)
    if models.guidance is not None:
        cfg.sds = dataclasses.replace(cfg.sds, variant=sds_variant(models))

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[e4d run] {msg}", file=sys.stderr, flush=True)

    def progress(step: int, total: int, info: dict) -> None:
        if info.get("event") == "start":
            log(f"stage {step}/{total}: {info['stage']}")

    timer = StageTimer(dev, sink=lambda r: log(json.dumps(r)))
    hooks = [timer] + ([Offload(dev)] if args.offload else [])
    log(f"device {dev}; models: {json.dumps(models.sources)}; fit {cfg.fit.iterations} steps, "
        f"{cfg.fit.num_points} Gaussians{' (reduced CPU config)' if dev.type == 'cpu' else ''}")
    if args.image is not None:
        result = image_to_4d(_read_image(args.image), models, cfg, progress, hooks, device=dev)
    else:
        from .video_decode import DecodeConfig, decode_video

        video = decode_video(args.video, DecodeConfig(max_frames=args.max_frames))
        result = video_to_4d(video.frames, models, cfg, progress, hooks, alpha=video.alpha, device=dev)
    source = str(args.image if args.image is not None else args.video)
    files = save_outputs(result, args.out, cfg, progress, [timer], meta={"source": source, "models": models.sources})
    print(json.dumps({**files, "num_gaussians": result.gaussians.num, "stages": timer.records}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m e4d",
                                 description="Efficient4D core: run the chain, fit, render and export 4D Gaussians.")
    sub = ap.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit a view-matrix folder to 4D Gaussians")
    f.add_argument("--views", required=True, help="view-matrix folder (cameras.json + views/vVV/tTT.png)")
    f.add_argument("--holdout", type=_int_list, default=None, help="view ids to hold out and score, e.g. 16,17,18,19")
    f.add_argument("--iterations", type=int, default=None, help="Adam steps (default: the preset's, 500)")
    f.add_argument("--points", type=int, default=None, help="number of Gaussians (default 50000)")
    f.add_argument("--preset", default="recommended", choices=["recommended", "paper", "official-release"])
    f.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    f.add_argument("--backend", default=None, choices=list(BACKENDS))
    f.add_argument("--seed", type=int, default=None)
    f.add_argument("--no-input", action="store_true", help="do not train on the input-video view")
    f.add_argument("--quiet", action="store_true", help="no per-step loss lines")
    f.add_argument("--out", required=True, type=Path, help="output native file (.safetensors)")
    f.set_defaults(func=cmd_fit)

    r = sub.add_parser("render", help="orbit video (.mp4/.gif) of a native 4D file")
    r.add_argument("--model", required=True, type=Path)
    r.add_argument("--out", required=True, type=Path, help="video path ending in .mp4 or .gif")
    r.add_argument("--mode", default="orbit", choices=["orbit", "fixed_time", "fixed_view"])
    r.add_argument("--frames", type=int, default=60)
    r.add_argument("--size", type=int, default=256)
    r.add_argument("--elevation", type=float, default=30.0)
    r.add_argument("--radius", type=float, default=1.5)
    r.add_argument("--fixed-time", type=float, default=None)
    r.add_argument("--fps", type=float, default=24.0)
    r.add_argument("--device", default="auto")
    r.add_argument("--backend", default="auto", choices=list(BACKENDS))
    r.set_defaults(func=cmd_render)

    e = sub.add_parser("export", help="per-time 3DGS PLY sequence of a native 4D file")
    e.add_argument("--model", required=True, type=Path)
    e.add_argument("--out", required=True, type=Path, help="output folder")
    e.add_argument("--times", type=_float_list, default=None, help="normalized times (default: the fitted ones)")
    e.add_argument("--count", type=int, default=None, help="evenly spaced times over the model's time range")
    e.add_argument("--prefix", default="frame")
    e.add_argument("--sh-degree-out", type=int, default=None, help="pad/truncate SH (3 for viewers expecting 45 f_rest)")
    e.add_argument("--mesh", action="store_true", help="also write mesh_animated.glb (one tracked mesh, morph-target "
                   "animation) and mesh_frames/ (one mesh per time)")
    e.add_argument("--mesh-resolution", type=int, default=None, help="fusion grid voxels per side (MeshConfig)")
    e.add_argument("--mesh-views", type=int, default=None, help="depth cameras around the object (MeshConfig)")
    e.add_argument("--mesh-decimate", type=int, default=None, help="target faces, 0 = off (MeshConfig)")
    e.add_argument("--mesh-independent", action="store_true", help="one mesh per time instead of one tracked mesh")
    e.add_argument("--mesh-texture", type=int, default=None, help="bake a UV colour texture of about N texels a side "
                   "into the animated GLB (needs xatlas; MeshConfig.texture_size)")
    e.add_argument("--mesh-formats", default="glb", help="per-time files: comma list of glb, ply, obj ('' = none)")
    e.set_defaults(func=cmd_export)

    d = sub.add_parser("demo", help="fit the bundled example; write video, PLYs and the native file")
    d.add_argument("--out", type=Path, default=Path("e4d_demo_out"))
    d.add_argument("--device", default="auto")
    d.add_argument("--iterations", type=int, default=None, help="override the step count (tests)")
    d.add_argument("--points", type=int, default=None, help="override the number of Gaussians (tests)")
    d.add_argument("--orbit-frames", type=int, default=None, help="frames of the orbit video (default 96 GPU / 24 CPU)")
    d.add_argument("--orbit-size", type=int, default=None, help="orbit video size (default 256 GPU / 64 CPU)")
    d.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    d.set_defaults(func=cmd_demo)

    from .fit import FitConfig
    from .guidance.zero123 import SDSConfig
    from .orbit import OrbitConfig
    from .pipeline import PipelineConfig
    from .preprocess import PrepareConfig
    from .syncdreamer.sampler import SamplerConfig

    u = sub.add_parser("run", help="the whole chain: video or image -> 4D Gaussians, orbit video and PLYs",
                       description="Efficient4D end to end (e4d.pipeline): prepare -> SyncDreamer-T -> RIFE -> "
                                   "confidence -> fit (+ Zero123 SDS). Weights come from --models, a folder laid "
                                   "out like ComfyUI's models/ (syncdreamer/, rife/, diffusers/, checkpoints/).")
    src = u.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", type=Path, help="video file (mp4, webm with alpha, gif ...) or a folder of frames")
    src.add_argument("--image", type=Path, help="one image (RGBA or on white): image-to-4D through SVD")
    u.add_argument("--models", required=True, type=Path, help="models folder (e.g. ComfyUI/models)")
    u.add_argument("--out", required=True, type=Path, help="output folder (replaced as a whole when the run ends)")
    u.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    u.add_argument("--offload", action="store_true", help="keep each model on the GPU only during its stage")
    u.add_argument("--flow", action="store_true", help="interpolate with the OpenCV flow fallback (no RIFE weights)")
    u.add_argument("--no-sds", action="store_true", help="fit without Zero123 SDS (no Zero123 weights)")
    u.add_argument("--white-background", action="store_true",
                   help="input without alpha: take the object mask from its white background")
    u.add_argument("--max-frames", type=int, default=0, help="frames decoded from the video (default 0 = all)")
    u.add_argument("--size", type=int, default=None,
                   help=f"prepared frame size (default {PrepareConfig.size}, the model's; smaller only for tests)")
    u.add_argument("--keyframes", type=int, default=None,
                   help=f"K frames given to SyncDreamer-T (default {PipelineConfig().keyframes})")
    u.add_argument("--steps", type=int, default=None, help=f"DDIM steps (default {SamplerConfig.steps})")
    u.add_argument("--view-batch", type=int, default=None,
                   help=f"(frame, view) pairs per UNet call (default {SamplerConfig.view_batch})")
    u.add_argument("--iterations", type=int, default=None, help=f"fit steps (default {FitConfig.iterations})")
    u.add_argument("--points", type=int, default=None, help=f"Gaussians (default {FitConfig.num_points})")
    u.add_argument("--sds-every", type=int, default=None,
                   help=f"SDS on every k-th fit step, k views per sampled time, loss times k: the statistics of "
                        f"every step in k times fewer steps (default {SDSConfig.every})")
    u.add_argument("--seed", type=int, default=None,
                   help=f"seed of the sampler and the fit (default {SamplerConfig.seed})")
    u.add_argument("--orbit-frames", type=int, default=None, help=f"orbit video frames (default {OrbitConfig.frames})")
    u.add_argument("--orbit-size", type=int, default=None,
                   help=f"orbit video size in pixels (default {OrbitConfig.resolution})")
    u.add_argument("--quiet", action="store_true", help="no stage lines on stderr")
    u.set_defaults(func=cmd_run)
    return ap


OUT_KINDS = {"fit": "file", "render": "file"}
"""What each command's --out is; every other command writes a folder."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code: 0, 2 for user errors (one line naming the file, the rule and the fix; see
    :mod:`e4d.cli_errors`), 130 on Ctrl-C (atomic outputs: nothing partial left)."""
    import logging

    from .cli_errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, check_out_target, user_error_message

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        check_out_target(args.command, getattr(args, "out", None), OUT_KINDS.get(args.command, "folder"))
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # outputs are atomic: nothing partial is left under the final names
        print(f"e4d {args.command}: interrupted; nothing was written under the final names", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        msg = user_error_message(e)
        if msg is None:
            raise
        print(f"e4d {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR


__all__ = ["main", "build_parser"]
