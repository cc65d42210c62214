"""Benchmark of SVD image-to-video with full-size random weights (SVD-XT architecture), fp16 on CUDA.

Cases: 25 frames at 576x1024 (the model's native setting) and the 256x256 case the image-to-4D chain needs.
Each prints one JSON line: wall time of ``e4d.svd.pipeline.image_to_video`` (denoising + decode + masks) and
peak VRAM. Random weights give the cost, not the quality.

Usage (repo root)::

    python bench/svd.py                                  # both cases, 25 steps, decode chunk 8
    python bench/svd.py --steps 25 --decode-chunk 4 --cases 576x1024x25
    python bench/svd.py --device cpu --tiny --cases 64x64x4 --steps 2      # CPU smoke run of this script
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, env_info, peak_vram_gb, pick_device, print_json, reset_peak, sync  # noqa: E402


def random_svd(device: torch.device, dtype: torch.dtype, tiny: bool = False):
    """A StableVideoDiffusionPipeline with random weights built directly on ``device``."""
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline,
                           UNetSpatioTemporalConditionModel)
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from e4d.ldm.convert import default_image_processor
    from e4d.svd.convert import REAL_SVD_CLIP, REAL_SVD_UNET, REAL_SVD_VAE, SVD_SCHEDULER

    if tiny:
        sys.path.insert(0, str(REPO / "tests"))
        import tiny_svd as ts

        u, v, c = ts.UNET, ts.VAE, ts.CLIP
    else:
        u, v, c = REAL_SVD_UNET, REAL_SVD_VAE, REAL_SVD_CLIP
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNetSpatioTemporalConditionModel(**u)
        vae = AutoencoderKLTemporalDecoder(**v)
        enc = CLIPVisionModelWithProjection(CLIPVisionConfig(**c))
    for m in (unet, vae, enc):
        # .to(device) too: diffusers' AlphaBlender builds its buffer with the legacy torch.Tensor([...]) constructor,
        # which ignores the torch.device context and would stay on the CPU.
        m.to(device=device, dtype=dtype).eval().requires_grad_(False)
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=enc, unet=unet,
                                        scheduler=EulerDiscreteScheduler.from_config(SVD_SCHEDULER),
                                        feature_extractor=default_image_processor())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main(argv: Optional[List[str]] = None) -> int:
    from e4d.svd.pipeline import SVDConfig, image_to_video

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--cases", default="576x1024x25,256x256x25", help="HxWxFRAMES list")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--decode-chunk", type=int, default=8)
    ap.add_argument("--keep", type=int, default=16, help="frames kept after subsampling")
    ap.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke run of the script)")
    args = ap.parse_args(argv)
    dev = pick_device(args.device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    pipe = random_svd(dev, dtype, args.tiny)
    build_s = time.perf_counter() - t0
    img = torch.ones(320, 320, 4)
    img[80:240, 100:220, :3] = torch.tensor([0.8, 0.3, 0.2])
    img[..., 3] = 0
    img[80:240, 100:220, 3] = 1
    image_to_video(pipe, img, config=SVDConfig(num_frames=2 if args.tiny else 4, width=64, height=64, steps=1))  # warm-up
    for case in args.cases.split(","):
        h, w, f = (int(x) for x in case.split("x"))
        cfg = SVDConfig(num_frames=f, width=w, height=h, steps=args.steps, decode_chunk_size=args.decode_chunk,
                        keep_frames=args.keep)
        reset_peak(dev)
        sync(dev)
        t0 = time.perf_counter()
        res = image_to_video(pipe, img, config=cfg)
        sync(dev)
        sec = time.perf_counter() - t0
        print_json({"bench": "svd", "height": h, "width": w, "frames": f, "steps": args.steps,
                    "decode_chunk": args.decode_chunk, "seconds": round(sec, 2), "s_per_step": round(sec / args.steps, 3),
                    "peak_vram_gb": peak_vram_gb(dev), "kept": len(res.indices), "dtype": str(dtype),
                    "build_s": round(build_s, 1), "env": env_info(dev), "note": "random weights: time/VRAM only"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
