"""Benchmark SyncDreamer-T at full size with random weights (same FLOPs as the real model).

One JSON line per configuration: wall time of the sampling loop (and of the whole frames -> view matrix call),
peak allocated / reserved GPU memory. Targets (issue 4, one H100): K=16 x 16 views, 50 steps, decomposed
guidance <= 30 s and <= 16 GB; a view_batch that fits a 12 GB card.

    python bench/syncdreamer.py                       # K=16 vb=16/32/4, K=4 vb=16; 50 steps, fp16
    python bench/syncdreamer.py --steps 5             # quick smoke check
    python bench/syncdreamer.py --configs 16:8 --dtype bf16
    python bench/syncdreamer.py --tiny --device cpu --steps 1 --configs 2:8   # script check without a GPU
    python bench/syncdreamer.py --configs 16:16 --profile   # top-25 CUDA kernels + per-stage GPU time, 2 steps
    # the product's call (generate_view_matrix: condition, capture, sampling, decode, host copy, alpha masks) twice
    # on one model, under ComfyUI's conditions (inference mode, no TF32 matmuls): where a node's seconds go
    python bench/syncdreamer.py --configs 16:16 --product --repeat 2 --inference-mode --no-tf32 --dtype bf16
    # defaults (CUDA-graph replay, no compile), H200: 40.5 s, 7.4 GB alloc / 11.5 GB reserved at view_batch 16
    # fastest measured (H100, 27.1 s, 7.1 GB alloc / 11.3 GB reserved; ~2.3 min compile warm-up, not timed):
    python bench/syncdreamer.py --configs 16:32 --compile --vae-dtype bf16
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DTYPES, REPO  # noqa: E402  (common also puts the repo on sys.path)


def build_model(device: torch.device, dtype: torch.dtype, tiny: bool, vae_dtype: torch.dtype = None):
    """Random-weight model with the real shapes (or the CI tiny ones), initialised directly on ``device``."""
    import math

    from e4d.cameras import syncdreamer16
    from e4d.syncdreamer.dims import SyncDreamerDims
    from e4d.syncdreamer.model import SyncDreamer

    if tiny:
        sys.path.insert(0, str(REPO / "tests"))
        from tiny_syncdreamer import tiny_dims

        dims = tiny_dims()
    else:
        dims = SyncDreamerDims()  # defaults = the real checkpoint (checked against keys.tsv in the tests)
    torch.manual_seed(0)
    with torch.device(device):
        model = SyncDreamer(dims)
    buffers = {n for n, _ in model.named_buffers()}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n not in buffers:  # VAE kept in fp32 under fp16, as load_syncdreamer does (unless vae_dtype)
                vdt = vae_dtype or (torch.float32 if dtype == torch.float16 else dtype)
                p.data = p.data.to(vdt if n.startswith("first_stage_model.") else dtype)
        cams = syncdreamer16(256)
        model.poses.copy_(cams.w2c[:, :3, :4])
        model.Ks.copy_(cams.K)
        az = torch.arange(16, dtype=torch.float64) * (2 * math.pi / 16)
        model.azimuth.copy_(((az + math.pi) % (2 * math.pi) - math.pi).float())
    return model.eval().requires_grad_(False)


def frames(k: int, size: int = 256) -> torch.Tensor:
    """K synthetic object frames on white ``[K, S, S, 3]`` (a moving coloured square)."""
    x = torch.ones(k, size, size, 3)
    for i in range(k):
        o = size // 4 + (i * size // (4 * max(k, 1)))
        x[i, size // 4:3 * size // 4, o:o + size // 3] = torch.tensor([0.8, 0.3, 0.2])
    return x


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_config(model, device, k: int, view_batch: int, steps: int, guidance: str, size: int,
               tags: dict = None, cuda_graphs: bool = True, channels_last: bool = True) -> dict:
    from e4d.syncdreamer.sampler import SamplerConfig, decode_views, sample_latents

    cfg = SamplerConfig(steps=steps, view_batch=view_batch, guidance=guidance,
                        scales=(2.0, 1.0) if guidance == "decomposed" else (2.0,), cuda_graphs=cuda_graphs,
                        channels_last=channels_last)
    imgs = frames(k, size).permute(0, 3, 1, 2).to(device) * 2 - 1
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step_times = []
    last = [time.perf_counter()]

    def cb(step, total, info):
        sync(device)
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now

    sync(device)
    t0 = time.perf_counter()
    last[0] = t0
    lat = sample_latents(model, imgs, cfg, callback=cb)
    sync(device)
    t1 = time.perf_counter()
    views = decode_views(model, lat, batch=view_batch)
    sync(device)
    t2 = time.perf_counter()
    out = {"bench": "syncdreamer", "frames": k, "views": model.num_views, "steps": steps, "guidance": guidance,
           "view_batch": view_batch, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "sample_s": round(t1 - t0, 3), "decode_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3),
           "first_step_s": round(step_times[0], 3) if step_times else None,
           "median_step_s": round(sorted(step_times)[len(step_times) // 2], 4) if step_times else None,
           "finite": bool(torch.isfinite(views).all()), **(tags or {})}
    out["s_per_50_steps"] = round(out["sample_s"] * 50 / max(steps, 1), 2)
    if device.type == "cuda":
        out["peak_alloc_gb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
        out["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved(device) / 2 ** 30, 2)
        out["fits_12gb"] = out["peak_reserved_gb"] <= 12.0
        if k == 16 and steps == 50:
            out["meets_target_30s_16gb"] = out["total_s"] <= 30.0 and out["peak_alloc_gb"] <= 16.0
    return out


def run_product(model, device, k: int, view_batch: int, steps: int, guidance: str, size: int, call: int,
                tags: dict = None, cuda_graphs: bool = True, synced: bool = False) -> dict:
    """One ``generate_view_matrix`` call (the nodes' and the pipeline's path) with its sub-stage clock.

    ``synced``: a progress callback that waits for the device at every step, as the loop did before it stopped
    waiting (the host then queues each step's eager part while the GPU idles)."""
    from e4d.pipeline_hooks import SubstageClock
    from e4d.syncdreamer.sampler import SamplerConfig, generate_view_matrix

    cfg = SamplerConfig(steps=steps, view_batch=view_batch, guidance=guidance,
                        scales=(2.0, 1.0) if guidance == "decomposed" else (2.0,), cuda_graphs=cuda_graphs)
    clock = SubstageClock(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    vm = generate_view_matrix(model, frames(k, size), config=cfg, clock=clock,
                              callback=(lambda *_: sync(device)) if synced else None)
    sync(device)
    total = time.perf_counter() - t0
    out = {"bench": "syncdreamer", "mode": "product", "call": call, "frames": k, "view_batch": view_batch,
           "steps": steps, "total_s": round(total, 3), "parts_s": clock.seconds,
           "sampling_per_step_s": round(clock.seconds.get("sampling", 0.0) / max(steps, 1), 4),
           "finite": bool(torch.isfinite(vm.images).all()), "cuda_graphs": cuda_graphs, "synced_steps": synced,
           **(tags or {})}
    if device.type == "cuda":
        out["peak_alloc_gb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
        out["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved(device) / 2 ** 30, 2)
    return out


def profile_config(model, device, k: int, view_batch: int, guidance: str, size: int, steps: int = 2) -> None:
    """Print where the GPU time of ``steps`` DDIM steps goes (after a 1-step warm-up with the same shapes)."""
    from torch.profiler import ProfilerActivity, profile

    run_config(model, device, k, view_batch, 1, guidance, size)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        res = run_config(model, device, k, view_batch, steps, guidance, size)
    print(json.dumps({"bench": "syncdreamer", "event": "profile", **res}), flush=True)
    avg = prof.key_averages()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    ranges = [e for e in avg if e.key.startswith("sd/")]
    kernels = [e for e in avg if not e.key.startswith("sd/")]
    print(f"== top-25 ops/kernels by {key} ({steps} steps, K={k}, view_batch={view_batch}) ==")
    try:
        print(avg.table(sort_by=key, row_limit=25, max_name_column_width=70))
    except Exception:  # noqa: BLE001  (renamed sort keys across torch versions)
        print(avg.table(sort_by=key.replace("cuda", "device"), row_limit=25, max_name_column_width=70))
    print("== stages (record_function ranges) ==")
    for e in sorted(ranges, key=lambda e: e.key):
        dev_us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        print(f"{e.key:28s} calls={e.count:6d} cpu_ms={e.cpu_time_total / 1e3:10.1f} gpu_ms={dev_us / 1e3:10.1f}")
    del kernels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="16:16,16:32,16:4,4:16", help="comma list of FRAMES:VIEW_BATCH")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", default="decomposed", choices=["decomposed", "cfg", "none"])
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--vae-dtype", default=None, choices=["fp16", "bf16", "fp32"],
                    help="VAE dtype (default: fp32 under fp16 weights, as load_syncdreamer)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny CI model (script check on CPU)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the 1-step warm-up run")
    ap.add_argument("--no-channels-last", action="store_true",
                    help="contiguous (NCHW) convolutions instead of the sampler's default channels_last")
    ap.add_argument("--no-fused-norm", action="store_true",
                    help="PyTorch's GroupNorm + activation kernels instead of the fused Triton kernel (the default)")
    ap.add_argument("--no-fused-geglu", action="store_true",
                    help="PyTorch's two GEGLU kernels instead of the one-kernel Triton GEGLU (the default)")
    ap.add_argument("--compile", nargs="?", const="default", default=None,
                    help="torch.compile the UNet with this mode (default 'default'; e.g. max-autotune-no-cudagraphs);"
                         " compile time is reported as compile_s (the untimed warm-up step)")
    ap.add_argument("--no-cuda-graphs", action="store_true",
                    help="eager chunks (SamplerConfig.cuda_graphs=False) instead of the default graph replay")
    ap.add_argument("--cache-dir", default=None,
                    help="with --compile: folder of the compile cache file (read if present, written after step 1)")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="torch.backends.cudnn.benchmark = True (off in the product and in ComfyUI by default)")
    ap.add_argument("--literal-depth-attn", action="store_true",
                    help="official-order depth attention (materialised k/v, chunked fp32 softmax) instead of fused")
    ap.add_argument("--product", action="store_true",
                    help="time the product's call (generate_view_matrix) --repeat times on the same model, with its "
                         "sub-stage figures (condition, graph capture, sampling, decode, to host, alpha masks)")
    ap.add_argument("--repeat", type=int, default=2, help="with --product: calls per configuration (1 = cold only)")
    ap.add_argument("--inference-mode", action="store_true",
                    help="run under torch.inference_mode(), as ComfyUI runs every node")
    ap.add_argument("--no-tf32", action="store_true",
                    help="leave float32 matmuls in full precision (PyTorch's and ComfyUI's default) instead of TF32")
    ap.add_argument("--eager-after", action="store_true",
                    help="with --product: one more call with cuda_graphs=False (eager chunks) on the same model")
    ap.add_argument("--synced-after", action="store_true",
                    help="with --product: one more call whose progress callback waits for the device every step "
                         "(how exposed the host's per-step work is)")
    ap.add_argument("--profile", action="store_true",
                    help="instead of timing: torch.profiler over 2 steps of each config; prints the top-25 CUDA "
                         "kernels by total time and the per-stage ranges (volume / frustum / unet / ddim)")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    dtype = DTYPES[a.dtype]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = a.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = not a.no_tf32
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions (ComfyUI keeps it)
    size = 64 if a.tiny else 256
    t0 = time.perf_counter()
    model = build_model(device, dtype, a.tiny, DTYPES[a.vae_dtype] if a.vae_dtype else None)
    from e4d.syncdreamer.speed import accelerate

    accelerate(model, compile_mode=a.compile,
               literal_depth_attention=a.literal_depth_attn, cache_dir=a.cache_dir, fused_norm=not a.no_fused_norm)
    if a.no_fused_geglu:
        from e4d.syncdreamer.attention import use_fused_geglu

        use_fused_geglu(model, False)
    sync(device)
    params = sum(p.numel() for p in model.parameters())
    weights_gb = (torch.cuda.memory_allocated(device) / 2 ** 30) if device.type == "cuda" else None
    print(json.dumps({"bench": "syncdreamer", "event": "model", "params": params, "build_s":
                      round(time.perf_counter() - t0, 2), "weights_gb": weights_gb and round(weights_gb, 2)}),
          flush=True)
    configs = [tuple(int(v) for v in c.split(":")) for c in a.configs.split(",") if c.strip()]
    rc = 0
    mode = torch.inference_mode() if a.inference_mode else contextlib.nullcontext()
    for k, vb in configs:
        if a.profile:
            profile_config(model, device, k, vb, a.guidance, size)
            continue
        if a.product:
            env = {"inference_mode": a.inference_mode, "tf32_matmul": not a.no_tf32, "fused_geglu": not a.no_fused_geglu,
                   "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
                   "dtype": str(next(model.unet.parameters()).dtype).replace("torch.", "")}
            calls = [(True, False)] * max(1, a.repeat) + ([(False, False)] if a.eager_after else []) \
                + ([(True, True)] if a.synced_after else [])
            for i, (graphs, synced) in enumerate(calls):
                with mode:
                    print(json.dumps(run_product(model, device, k, vb, a.steps, a.guidance, size, i + 1, env,
                                                 graphs, synced)), flush=True)
            continue
        try:
            tw = time.perf_counter()
            graphs = not a.no_cuda_graphs
            if not a.no_warmup:  # 1 step with the same shapes: cudnn autotuning / compilation is not timed
                run_config(model, device, k, vb, 1, a.guidance, size, cuda_graphs=graphs,
                           channels_last=not a.no_channels_last)
            tags = {"channels_last": not a.no_channels_last, "compile": a.compile,
                    "warmup_s": round(time.perf_counter() - tw, 1),
                    "fused_norm": not a.no_fused_norm, "fused_geglu": not a.no_fused_geglu,
                    "depth_attn": "literal" if a.literal_depth_attn else "fused", "cuda_graphs": graphs,
                    "cudnn_benchmark": a.cudnn_benchmark,
                    "vae_dtype": str(model.first_stage_model.post_quant_conv.weight.dtype).replace("torch.", "")}
            print(json.dumps(run_config(model, device, k, vb, a.steps, a.guidance, size, tags, graphs,
                                        not a.no_channels_last)), flush=True)
        except torch.cuda.OutOfMemoryError as e:
            print(json.dumps({"bench": "syncdreamer", "frames": k, "view_batch": vb, "error": "OOM",
                              "detail": str(e)[:300]}), flush=True)
            rc = 1
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            print(json.dumps({"bench": "syncdreamer", "frames": k, "view_batch": vb, "error": repr(e)[:300]}),
                  flush=True)
            rc = 1
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
