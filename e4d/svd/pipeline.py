"""Stable Video Diffusion image-to-video (diffusers ``StableVideoDiffusionPipeline``) for the image-to-4D entry.

The object must stay on a clean background for the next stages, so the input is composited on white (padded to
the output aspect ratio), and every output frame gets a mask from the white background (or from a
user-supplied segmentation); the clip is then subsampled to the K frames SyncDreamer-T / the fit want.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from ..checkpoints import read_checkpoint
from ..ldm.convert import default_image_processor, from_pretrained_dtype, weights_variant
from ..ldm.keymap import SVD_CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX
from ..limits import check_finite_fields
from ..masks import composite_on_white, masks_from_white, pad_to_aspect, subsample_indices
from ..progress import ProgressCallback, report
from .convert import SVD_SCHEDULER, SVD_WHERE, svd_from_single_file

log = logging.getLogger(__name__)


@dataclass
class SVDConfig:
    """Sampling settings (defaults: diffusers' ``StableVideoDiffusionPipeline.__call__`` for SVD-XT)."""

    num_frames: int = 0
    """Frames to generate; 0 = the UNet's trained length (25 for SVD-XT, 14 for SVD)."""
    width: int = 1024
    """Output width in pixels (multiple of 8; SVD was trained at 1024x576)."""
    height: int = 576
    """Output height in pixels (multiple of 8)."""
    steps: int = 25
    """Euler (EDM, Karras sigmas) denoising steps."""
    fps: int = 7
    """Frame-rate conditioning (the pipeline passes fps - 1 to the model, like SGM's fps_id 6)."""
    motion_bucket_id: int = 127
    """Amount of motion (0..255)."""
    noise_aug_strength: float = 0.02
    """Noise added to the conditioning image (more = more freedom from the input)."""
    min_guidance_scale: float = 1.0
    """Classifier-free guidance at the first frame (linearly increased over the frames)."""
    max_guidance_scale: float = 3.0
    """Classifier-free guidance at the last frame."""
    decode_chunk_size: int = 8
    """Frames decoded by the temporal VAE at once (lower = less VRAM)."""
    seed: int = 0
    """Seed of the initial noise (CPU generator: identical clip on any device)."""
    keep_frames: int = 0
    """Frames returned, evenly subsampled with first and last kept; 0 = all."""
    mask_threshold: float = 0.04
    """A pixel is object when a channel is darker than 1 - threshold (white background)."""
    mask_kernel: int = 3
    """Morphological open/close kernel size in pixels (1 = none)."""

    def validate(self) -> None:
        """Raise ValueError naming the field, its rule, the value and the fix."""
        check_finite_fields(self)  # NaN passes every range check below
        if self.width % 8 or self.height % 8 or self.width <= 0 or self.height <= 0:
            raise ValueError(f"SVDConfig.width and height must be positive multiples of 8, got "
                             f"{self.width}x{self.height}; use e.g. 1024x576 or 256x256")
        if self.steps < 1:
            raise ValueError(f"SVDConfig.steps must be >= 1, got {self.steps}; use 25")
        if not 0 <= self.motion_bucket_id <= 255:
            raise ValueError(f"SVDConfig.motion_bucket_id must be in [0, 255], got {self.motion_bucket_id}")
        if self.min_guidance_scale > self.max_guidance_scale:
            raise ValueError(f"SVDConfig.min_guidance_scale {self.min_guidance_scale} > max_guidance_scale "
                             f"{self.max_guidance_scale}; swap them")


@dataclass
class SVDResult:
    frames: Tensor  # [K, H, W, 3] in [0, 1]
    masks: Tensor  # [K, H, W] in {0, 1}
    indices: list[int]  # which generated frames were kept


def _is_svd_folder(folder: Path) -> bool:
    mi = folder / "model_index.json"
    try:
        return mi.is_file() and json.loads(mi.read_text()).get("_class_name") == "StableVideoDiffusionPipeline"
    except json.JSONDecodeError:
        return False


def _svd_from_folder(p: Path, dtype: torch.dtype):
    """The pipeline of an SVD diffusers folder, built component by component from the classes SVD uses, from
    safetensors weights only: ``model_index.json`` may name any module (diffusers before 0.38 imports a local
    ``unet/<name>.py`` without asking), so it is never followed, and no pickle is ever read."""
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline,
                           UNetSpatioTemporalConditionModel)
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    missing = [c for c in ("unet", "vae", "image_encoder") if not (p / c / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{p} lacks {missing} (each needs config.json + .safetensors weights); {SVD_WHERE}")
    kw = from_pretrained_dtype(dtype)
    try:
        unet = UNetSpatioTemporalConditionModel.from_pretrained(
            p, subfolder="unet", use_safetensors=True, variant=weights_variant(p / "unet", dtype), **kw)
        vae = AutoencoderKLTemporalDecoder.from_pretrained(
            p, subfolder="vae", use_safetensors=True, variant=weights_variant(p / "vae", dtype), **kw)
        enc = CLIPVisionModelWithProjection.from_pretrained(
            p, subfolder="image_encoder", use_safetensors=True, dtype=dtype,
            variant=weights_variant(p / "image_encoder", dtype))
    except OSError as e:
        raise FileNotFoundError(f"cannot load SVD from {p} (safetensors weights are required): {e}; {SVD_WHERE}") from e
    scheduler = (EulerDiscreteScheduler.from_pretrained(p, subfolder="scheduler")
                 if (p / "scheduler" / "scheduler_config.json").is_file()
                 else EulerDiscreteScheduler.from_config(SVD_SCHEDULER))
    proc = (CLIPImageProcessor.from_pretrained(p, subfolder="feature_extractor")
            if (p / "feature_extractor" / "preprocessor_config.json").is_file() else default_image_processor())
    return StableVideoDiffusionPipeline(vae=vae, image_encoder=enc, unet=unet, scheduler=scheduler,
                                        feature_extractor=proc)


def load_svd(path, dtype: torch.dtype = torch.float32, device=None):
    """A ``StableVideoDiffusionPipeline`` from a diffusers folder (built component by component, safetensors only;
    see :func:`_svd_from_folder`) or an SGM single file (``svd_xt.safetensors``).

    Raises FileNotFoundError / ValueError naming the path and where to get the model.
    """
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline

    p = Path(path)
    if p.is_dir():
        if not _is_svd_folder(p):
            raise FileNotFoundError(f"{p} is not a Stable Video Diffusion diffusers folder (model_index.json with "
                                    f"_class_name StableVideoDiffusionPipeline is missing); {SVD_WHERE}")
        pipe = _svd_from_folder(p, dtype)
    elif p.is_file():
        sd = read_checkpoint(p, keep=lambda k: k.startswith((UNET_PREFIX, VAE_PREFIX, SVD_CLIP_PREFIX)), dtype=dtype,
                             where=SVD_WHERE)
        frames = 25 if "xt" in p.name.lower() else 14
        unet, vae, enc = svd_from_single_file(sd, str(p), dtype, num_frames=frames)
        del sd
        pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=enc, unet=unet,
                                            scheduler=EulerDiscreteScheduler.from_config(SVD_SCHEDULER),
                                            feature_extractor=default_image_processor())
    else:
        raise FileNotFoundError(f"SVD model {p} not found; {SVD_WHERE}")
    pipe.set_progress_bar_config(disable=True)
    if device is not None:
        pipe.to(device)
    return pipe


def image_to_video(pipe, image: Tensor, mask: Optional[Tensor] = None, config: Optional[SVDConfig] = None,
                   callback: Optional[ProgressCallback] = None, segmentation: Optional[Tensor] = None) -> SVDResult:
    """Animate one image with SVD and return clean frames + masks.

    Args:
        pipe: a ``StableVideoDiffusionPipeline`` (see :func:`load_svd`).
        image: ``[H, W, 3]`` or RGBA ``[H, W, 4]`` in [0, 1].
        mask: optional ``[H, W]`` object mask (1 = object) used to composite the input on white.
        config: :class:`SVDConfig`.
        callback: ``callback(step, total, info)`` after each denoising step; raise from it to cancel.
        segmentation: optional ``[F, H', W']`` user masks of the generated frames (replaces the white-background masks).
    Returns:
        :class:`SVDResult` with ``frames [K, height, width, 3]`` and ``masks [K, height, width]``.
    """
    from PIL import Image

    config = SVDConfig() if config is None else config
    config.validate()
    rgb = pad_to_aspect(composite_on_white(image, mask), config.width, config.height)
    pil = Image.fromarray((rgb.cpu().numpy() * 255).round().astype("uint8"))
    n = int(config.num_frames or pipe.unet.config.num_frames)
    total = config.steps

    def on_step(_pipe, i, _t, kwargs):
        report(callback, i + 1, total, stage="svd")
        return {}

    out = pipe(pil, height=config.height, width=config.width, num_frames=n, num_inference_steps=config.steps,
               min_guidance_scale=config.min_guidance_scale, max_guidance_scale=config.max_guidance_scale,
               fps=config.fps, motion_bucket_id=config.motion_bucket_id, noise_aug_strength=config.noise_aug_strength,
               decode_chunk_size=max(1, config.decode_chunk_size),
               generator=torch.Generator("cpu").manual_seed(int(config.seed)), output_type="pt",
               callback_on_step_end=on_step)
    frames = out.frames[0].permute(0, 2, 3, 1).float().clamp(0, 1)  # [F, H, W, 3]
    idx = subsample_indices(frames.shape[0], config.keep_frames)
    frames = frames[idx]
    if segmentation is not None:
        if segmentation.ndim != 3 or segmentation.shape[0] not in (len(idx), n):
            raise ValueError(f"segmentation must be [F, H, W] with F = {n} (all frames) or {len(idx)} (kept), "
                             f"got {tuple(segmentation.shape)}")
        seg = segmentation[idx] if segmentation.shape[0] == n and n != len(idx) else segmentation
        masks = torch.nn.functional.interpolate(seg[:, None].float(), frames.shape[1:3], mode="nearest")[:, 0]
        masks = (masks > 0.5).float().to(frames.device)
        frames = frames * masks[..., None] + (1 - masks[..., None])  # keep the object on white
    else:
        masks = masks_from_white(frames, config.mask_threshold, config.mask_kernel)
    return SVDResult(frames.cpu(), masks.cpu(), idx)
