"""Benchmark of the Zero123 SDS guidance with full-size random weights (zero123-xl architecture), fp16 on CUDA.

Random weights give the real cost but no real guidance: they cannot show SDS's quality gain (with them the SDS
term only adds noise, so held-out PSNR with SDS is expected to be *lower*). Quality needs the real zero123-xl.

Usage (repo root)::

    python bench/sds.py                    # ms per SDS step (render-sized leaf -> VAE encoder -> UNet CFG -> backward), B = 1..4
    python bench/sds.py --fit              # + 500-iteration CesiumMan fit without / with SDS every 1st, 2nd step
    python bench/sds.py --fit --every 1,2,2-,2x2    # also every 2nd step without carry_skipped; every 2nd with 2 views per time
    python bench/sds.py --no-cuda-graphs   # eager guided UNet call (the SDSConfig.cuda_graphs=False path)
    python bench/sds.py --batches 4 --encoder-graph both   # VAE encoder fwd/bwd eager, then from CUDA graphs
    python bench/sds.py --steps 0 --fit --every 1 --encoder-graph both --skip-no-sds   # the PSNR guard
    python bench/sds.py --batches 4 --no-cuda-graphs --encoder-graph off --profile   # where an SDS step's time goes
    python bench/sds.py --batches 4 --channels-last off,vae,on,on+bench   # NCHW, channels_last VAE encoder only,
                                                   # both models, both + cuDNN autotuning
    python bench/sds.py --device cpu --tiny --steps 2 --batches 1     # CPU smoke run of this script

Each measurement prints one JSON line. Issue 6 target: a 500-iteration fit with SDS <= 30 s on an H100.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, cesium_data, env_info, peak_vram_gb, pick_device, print_json, reset_peak, sync  # noqa: E402

from e4d.guidance.components import REAL_CLIP_VIT_L as CLIP  # noqa: E402  (zero123-xl architecture)
from e4d.guidance.components import REAL_SD_VAE as VAE  # noqa: E402
from e4d.guidance.components import REAL_ZERO123_UNET as UNET  # noqa: E402


def random_zero123(device: torch.device, dtype: torch.dtype, tiny: bool = False):
    """Zero123 components with random weights, built directly on ``device``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from e4d.guidance.components import SD_SCHEDULER, CameraProjection, Zero123Components
    from e4d.ldm.convert import default_image_processor

    if tiny:
        sys.path.insert(0, str(REPO / "tests"))
        import tiny_zero123 as tz

        unet_cfg, vae_cfg, clip_cfg, d = tz.UNET, tz.VAE, tz.CLIP, 32
    else:
        unet_cfg, vae_cfg, clip_cfg, d = UNET, VAE, CLIP, 768
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        enc = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_cfg))
        proj = CameraProjection(d, 4)
    for m in (unet, vae, enc, proj):
        m.to(dtype=dtype).eval().requires_grad_(False)
    return Zero123Components(unet, vae, enc, proj, dict(SD_SCHEDULER), default_image_processor(), "random weights")


def synthetic_vm(T: int, size: int = 256):
    from e4d.cameras import input_view, syncdreamer16
    from e4d.viewmatrix import ViewMatrix

    g = torch.Generator().manual_seed(0)
    return ViewMatrix(torch.rand(T, 1, size, size, 3, generator=g), syncdreamer16(size)[[0]], torch.linspace(0, 1, T),
                      input_images=torch.rand(T, size, size, 3, generator=g), input_camera=input_view(0.0, size))


def is_channels_last(comps) -> dict:
    """Which models already run the channels_last layers (the switch is in place and one-way)."""
    from e4d.guidance.fast_layers import ChannelsLastGroupNorm

    return {name: any(isinstance(m, ChannelsLastGroupNorm) for m in model.modules())
            for name, model in (("vae", comps.vae), ("unet", comps.unet))}


def bench_steps(comps, dev: torch.device, batches: List[int], steps: int, warmup: int,
                cuda_graphs: bool = True, graph_encoder: bool = True, profile: bool = False,
                channels_last: str = "on") -> None:
    from e4d.guidance.fast_layers import fast_sds_layers
    from e4d.guidance.zero123 import SDSConfig, Zero123Guidance

    if channels_last == "vae" and dev.type == "cuda":  # the VAE encoder only (the UNet stays NCHW)
        fast_sds_layers(comps, unet=False)
    cfg = SDSConfig(every=1, cuda_graphs=cuda_graphs, graph_encoder=graph_encoder,
                    channels_last=channels_last in ("on", "on+bench"), cudnn_benchmark=channels_last == "on+bench")
    guid = Zero123Guidance(comps, cfg, device=dev)
    vm = synthetic_vm(16).to(dev)
    t0 = time.perf_counter()
    guid.prepare(vm)
    sync(dev)
    prep = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    for B in batches:
        tidx = torch.arange(B) % vm.T
        reset_peak(dev)
        finite: List[bool] = []

        def one(step: int, B: int = B, tidx: torch.Tensor = tidx, finite: List[bool] = finite) -> None:
            guid.sample_cameras(tidx, step, 500, gen)
            rgb = torch.rand(B, 3, 256, 256, device=dev, requires_grad=True)
            loss = guid.loss(rgb, tidx, step, 500)
            loss.backward()
            finite.append(bool(torch.isfinite(rgb.grad).all()))

        for s in range(warmup):
            one(s)
        sync(dev)
        t0 = time.perf_counter()
        for s in range(steps):
            one(s)
        sync(dev)
        ms = (time.perf_counter() - t0) / steps * 1000
        if profile:
            print_profile(lambda: [one(s) for s in range(5)], dev, f"5 SDS steps, B={B}")
        print_json({"bench": "sds_step", "B": B, "size": 256, "ms_per_step": round(ms, 2),
                    "sds_s_per_500_steps": round(ms * 0.5, 2), "peak_vram_gb": peak_vram_gb(dev),
                    "prepare_s_16_frames": round(prep, 3), "capture_s": round(guid.capture_s, 3),
                    "grad_finite": all(finite), "dtype": str(comps.dtype),
                    "cuda_graphs": cuda_graphs, "graph_encoder": graph_encoder and cuda_graphs,
                    "channels_last": channels_last, "cudnn_benchmark": cfg.cudnn_benchmark,
                    "layers_channels_last": is_channels_last(comps),
                    "env": env_info(dev),
                    "note": "random weights: cost only, no quality gain can be shown"})


NORM_SHAPES = ((4, 128, 256, 256), (4, 256, 128, 128), (4, 512, 64, 64), (8, 320, 32, 32), (8, 1280, 8, 8))
"""GroupNorm inputs of the SDS step (VAE encoder at 256², B = 4; UNet at 32² latents, 2B = 8)."""


def bench_norm(dev: torch.device, reps: int = 20) -> None:
    """GroupNorm(32) + SiLU forward and backward: PyTorch's kernels on NCHW vs the channels_last Triton kernels;
    eagerly (``*_ms``: launch overhead included, as in an SDS step without CUDA graphs) and, on CUDA, replayed from
    a CUDA graph (``*_graphed_ms``: device time, as in the default SDS step)."""
    import torch.nn.functional as F

    from e4d.guidance.fast_layers import _TritonGroupNorm

    def timed(fn) -> float:
        fn()
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(dev)
        return (time.perf_counter() - t0) / reps * 1000

    def graphed(fn) -> float:
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):  # warm-up on the capturing stream
            fn()
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            fn()
        return timed(graph.replay)

    dt = torch.float16 if dev.type == "cuda" else torch.float32
    for shape in NORM_SHAPES:
        x = torch.randn(*shape, device=dev, dtype=dt)
        w, b = torch.randn(shape[1], device=dev, dtype=dt), torch.randn(shape[1], device=dev, dtype=dt)
        dy = torch.randn_like(x)
        x_cl, dy_cl = x.contiguous(memory_format=torch.channels_last), dy.contiguous(memory_format=torch.channels_last)

        def native(x=x, w=w, b=b, dy=dy) -> None:
            xi = x.detach().requires_grad_(True)
            torch.autograd.grad(F.silu(F.group_norm(xi, 32, w, b, 1e-6)), xi, dy)

        def triton(x=x_cl, w=w, b=b, dy=dy_cl) -> None:
            xi = x.detach().requires_grad_(True)
            torch.autograd.grad(_TritonGroupNorm.apply(xi, 32, w, b, 1e-6, True), xi, dy)

        rec = {"bench": "groupnorm_silu_fwd_bwd", "shape": list(shape), "native_nchw_ms": round(timed(native), 4)}
        if dev.type == "cuda":
            rec["triton_channels_last_ms"] = round(timed(triton), 4)
            rec["native_nchw_graphed_ms"] = round(graphed(native), 4)
            rec["triton_channels_last_graphed_ms"] = round(graphed(triton), 4)
        print_json(rec)


def print_profile(work, dev: torch.device, title: str) -> None:
    """torch.profiler table (top 25 by device time) of ``work()`` on stdout."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        work()
        sync(dev)
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(f"== profile: {title}, sorted by {key} ==", flush=True)
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=70), flush=True)


def parse_every(spec: str) -> List[tuple]:
    """``"1,2,2-,2x2"`` -> [(1, True, 1), (2, True, 1), (2, False, 1), (2, True, 2)]: SDS every k-th step; a
    trailing ``-`` turns off ``SDSConfig.carry_skipped`` (applied steps not weighted by k); ``kxV`` renders V views
    per sampled time (``SDSConfig.views_per_time``)."""
    out = []
    for tok in (t.strip() for t in spec.split(",")):
        if tok:
            every, _, views = tok.rstrip("-").partition("x")
            out.append((int(every), not tok.endswith("-"), int(views or 1)))
    return out


def bench_fit(comps, dev: torch.device, data: Path, iterations: int, points: Optional[int] = None,
              every: List[tuple] = ((1, True),), preset_name: str = "recommended", graph_encoder: bool = True,
              no_sds: bool = True, channels_last: bool = True, cudnn_benchmark: bool = False) -> None:
    from e4d.fit import evaluate, fit, preset
    from e4d.guidance.zero123 import SDSConfig, Zero123Guidance
    from e4d.viewmatrix import load_view_matrix

    vm = load_view_matrix(data, views=list(range(20))).to(dev)
    train = vm.select_views(range(16))
    test = dataclasses.replace(vm.select_views(range(16, 20)), input_images=None, input_alpha=None, input_camera=None)
    cfg = preset(preset_name, iterations=iterations, **({"num_points": points} if points else {}))
    fit(train, config=cfg.replace(iterations=min(20, iterations)))  # warm-up (kernels)
    variants = [("no_sds", None)] if no_sds else []
    variants += [(f"sds_every{k}" + ("" if carry else "_nocarry") + (f"_views{v}" if v > 1 else ""),
                  Zero123Guidance(comps, SDSConfig(every=k, carry_skipped=carry, views_per_time=v,
                                                   graph_encoder=graph_encoder, channels_last=channels_last),
                                  device=dev)) for k, carry, v in every]
    for name, guid in variants:
        reset_peak(dev)
        try:  # fit.seconds is the loop only; guidance.prepare (16 frames encoded once) runs before it
            res = fit(train, config=cfg, guidance=guid)
        except ValueError as e:  # random fp16 weights can overflow; report instead of losing the other record
            print_json({"bench": "fit_sds", "variant": name, "error": str(e)})
            continue
        held = evaluate(res.gaussians, test, backend=cfg.backend)
        print_json({"bench": "fit_sds", "variant": name, "fit_s": round(res.seconds, 3), "iterations": iterations,
                    "preset": preset_name, "sds_every": guid.config.every if guid else None,
                    "carry_skipped": guid.config.carry_skipped if guid else None,
                    "views_per_time": guid.config.views_per_time if guid else None,
                    "cuda_graphs": guid.config.cuda_graphs if guid else None,
                    "graph_encoder": guid.config.graph_encoder if guid else None,
                    "channels_last": guid.config.channels_last if guid else None,
                    "cudnn_benchmark": guid.config.cudnn_benchmark if guid else None,
                    "layers_channels_last": is_channels_last(comps),
                    "gaussians": int(res.gaussians.means.shape[0]),
                    "sds_views_per_step": cfg.times_per_batch * guid.config.views_per_time if guid else 0, "psnr_heldout": round(held["psnr"], 3),
                    "peak_vram_gb": peak_vram_gb(dev), "target_30s_met": bool(res.seconds <= 30.0),
                    "note": "random zero123 weights: SDS adds noise here, PSNR with SDS is expected to drop"})


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="1,2,3,4", help="SDS views per step to time")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per batch size (0: no step timing)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke run of the script)")
    ap.add_argument("--fp32", action="store_true", help="fp32 weights (default fp16 on CUDA)")
    ap.add_argument("--fit", action="store_true", help="also time the 500-iteration CesiumMan fit with/without SDS")
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--points", type=int, default=None, help="Gaussians of the --fit runs (default: the preset's)")
    ap.add_argument("--every", default="1,2", help="SDSConfig.every values of the --fit runs; a trailing '-' "
                                                    "(e.g. '2-') runs that value without carry_skipped")
    ap.add_argument("--no-cuda-graphs", action="store_true", help="time the SDS steps eagerly (cuda_graphs=False)")
    ap.add_argument("--profile", action="store_true", help="also print a torch.profiler table of 5 steps per batch")
    ap.add_argument("--encoder-graph", default="on", choices=["on", "off", "both"],
                    help="SDSConfig.graph_encoder: VAE encoder forward/backward replayed from CUDA graphs (on), eager "
                         "(off; the guided UNet call stays graphed), or both one after the other")
    ap.add_argument("--channels-last", default="on",
                    help="comma list run in this order of SDSConfig.channels_last variants: 'off' (NCHW), 'vae' (VAE "
                         "encoder only), 'on' (VAE encoder and UNet), 'on+bench' (and SDSConfig.cudnn_benchmark); the "
                         "switch is one-way, so list 'off' first; --fit uses the last")
    ap.add_argument("--norm-bench", action="store_true",
                    help="also time GroupNorm+SiLU fwd+bwd at the SDS shapes, PyTorch NCHW vs Triton channels_last")
    ap.add_argument("--skip-no-sds", action="store_true", help="--fit: leave out the fit without SDS")
    ap.add_argument("--preset", default="recommended", help="fit preset of the --fit runs")
    ap.add_argument("--data", type=Path, default=None,
                    help="CesiumMan view-matrix folder (default: that of $E4D_SHARED or ../shared)")
    args = ap.parse_args(argv)
    dev = pick_device(args.device)
    dtype = torch.float16 if dev.type == "cuda" and not args.fp32 else torch.float32
    if args.norm_bench:
        bench_norm(dev, reps=2 if args.tiny else 20)
    comps = random_zero123(dev, dtype, args.tiny)
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.encoder_graph]
    layouts = [v.strip() for v in args.channels_last.split(",") if v.strip()]
    if not layouts or any(v not in ("off", "vae", "on", "on+bench") for v in layouts):
        ap.error(f"--channels-last takes a comma list of off, vae, on, on+bench; got {args.channels_last!r}")
    for i, graph_encoder in enumerate(modes):
        if args.steps > 0:
            for layout in layouts:
                bench_steps(comps, dev, [int(b) for b in args.batches.split(",")], args.steps, args.warmup,
                            cuda_graphs=not args.no_cuda_graphs, graph_encoder=graph_encoder, profile=args.profile,
                            channels_last=layout)
        if args.fit:
            bench_fit(comps, dev, args.data or cesium_data("cameras.json"), args.iterations, args.points,
                      parse_every(args.every), args.preset, graph_encoder=graph_encoder,
                      no_sds=not args.skip_no_sds and i == 0, channels_last=layouts[-1] != "off",
                      cudnn_benchmark=layouts[-1] == "on+bench")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
