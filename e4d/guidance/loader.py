"""Load Zero123 / Stable Zero123 as frozen torch modules, without running any third-party code.

Two layouts are accepted:

* a **diffusers folder** (``ashawkey/zero123-xl-diffusers``, ``ashawkey/stable-zero123-diffusers``,
  ``bennyguo/zero123-xl-diffusers``, ``kxic/zero123-xl``): each component is loaded with ``subfolder=``; the
  repo's custom ``clip_camera_projection`` class (``zero123.py``, which ``DiffusionPipeline`` would execute under
  ``trust_remote_code=True``) is replaced by our own :class:`CameraProjection` loaded from its weight file;
* the **single file** ``stable_zero123.ckpt`` (``stabilityai/stable-zero123``) that ComfyUI users keep in
  ``models/checkpoints``: converted in memory by :mod:`e4d.guidance.convert`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

WHERE_TO_GET = ("download a diffusers copy into ComfyUI/models/diffusers/<name>/ (Hugging Face ids "
                "'ashawkey/zero123-xl-diffusers' or 'ashawkey/stable-zero123-diffusers'), or put "
                "'stable_zero123.ckpt' from 'stabilityai/stable-zero123' into ComfyUI/models/checkpoints/")
COMPONENTS = ("unet", "vae", "image_encoder", "clip_camera_projection", "scheduler")
SD_SCHEDULER = {"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
                "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading"}
"""zero123-xl's scheduler_config.json (same beta schedule as the zero123 training yaml)."""
CLIP_PROCESSOR = {"crop_size": {"height": 224, "width": 224}, "size": {"shortest_edge": 224}, "resample": 3,
                  "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True, "do_rescale": True,
                  "do_resize": True, "rescale_factor": 1 / 255,
                  "image_mean": [0.48145466, 0.4578275, 0.40821073],
                  "image_std": [0.26862954, 0.26130258, 0.27577711]}
"""The CLIPImageProcessor config shipped with every zero123 / SVD diffusers repo (OpenAI CLIP statistics)."""
# zero123-xl / stable-zero123 architecture (shared/reference/guidance/REAL_CONFIGS.md §2; HF ashawkey/*-diffusers)
REAL_ZERO123_UNET = dict(sample_size=32, in_channels=8, out_channels=4, block_out_channels=[320, 640, 1280, 1280],
                         down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                         up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, layers_per_block=2,
                         cross_attention_dim=768, attention_head_dim=8, use_linear_projection=False)
REAL_SD_VAE = dict(in_channels=3, out_channels=3, block_out_channels=[128, 256, 512, 512],
                   down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                   layers_per_block=2, latent_channels=4, sample_size=256, scaling_factor=0.18215)
REAL_CLIP_VIT_L = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                       image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5)


class CameraProjection(nn.Module):
    """Zero123's ``cc_projection``: ``Linear(D + 4, D)`` on ``[CLIP image embedding | camera 4-vector]``."""

    def __init__(self, embedding_dim: int = 768, additional_embeddings: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(embedding_dim + additional_embeddings, embedding_dim)

    def forward(self, x: Tensor) -> Tensor:  # [B, 1, D + 4] -> [B, 1, D]
        return self.proj(x)


def camera_projection_from_state_dict(sd: dict[str, Tensor], source: str) -> CameraProjection:
    """Build the projection from any of the key layouts in the wild: ``proj.*`` (ashawkey / bennyguo),
    ``projection.*`` (diffusers community pipeline, kxic), ``cc_projection.*`` (original ldm checkpoint)."""
    for prefix in ("proj.", "projection.", "cc_projection."):
        if prefix + "weight" in sd:
            w, b = sd[prefix + "weight"], sd.get(prefix + "bias")
            break
    else:
        raise ValueError(f"{source} has no camera projection weights (looked for proj.weight, projection.weight, "
                         f"cc_projection.weight; found {sorted(sd)[:6]}...); {WHERE_TO_GET}")
    out_dim, in_dim = w.shape
    if in_dim != out_dim + 4:
        raise ValueError(f"{source}: camera projection must be Linear(D+4 -> D), got weight {tuple(w.shape)}")
    m = CameraProjection(out_dim, 4)
    bias = b if b is not None else torch.zeros(out_dim, dtype=w.dtype, device=w.device)
    m.load_state_dict({"proj.weight": w.float(), "proj.bias": bias.float()}, assign=True)
    return m


@dataclass
class Zero123Components:
    """The frozen modules SDS needs (all in eval mode, ``requires_grad=False``)."""

    unet: Any
    """diffusers ``UNet2DConditionModel`` (8 input channels: noisy latent + reference latent)."""
    vae: Any
    """diffusers ``AutoencoderKL`` (SD KL-f8)."""
    image_encoder: Any
    """transformers ``CLIPVisionModelWithProjection`` (ViT-L/14, 768-d ``image_embeds``)."""
    camera_projection: CameraProjection
    """``Linear(772 -> 768)`` mixing the CLIP embedding with the camera 4-vector."""
    scheduler_config: dict
    """DDIM scheduler config (beta schedule for ᾱ_t; DDIM steps for the refine guidance)."""
    image_processor: Any
    """transformers ``CLIPImageProcessor`` (224 px, CLIP mean/std)."""
    source: str = ""
    """Where the weights came from (for messages)."""

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device=None, dtype=None) -> "Zero123Components":
        if (device is None or torch.device(device) == self.device) and (dtype is None or dtype == self.dtype):
            return self  # nothing to do (and diffusers warns on every .to(dtype))
        for m in (self.unet, self.vae, self.image_encoder, self.camera_projection):
            m.to(device=device, dtype=dtype)
        return self

    def alphas_cumprod(self) -> Tensor:
        """``ᾱ_t`` for t = 0..999 (float32, CPU), from the scheduler's beta schedule."""
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config(self.scheduler_config).alphas_cumprod.float()


def _freeze(*mods: nn.Module) -> None:
    for m in mods:
        m.eval()
        m.requires_grad_(False)


def default_image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(**CLIP_PROCESSOR)


def _variant(folder: Path, sub: str, dtype: torch.dtype) -> Optional[str]:
    """``"fp16"`` to read diffusers' ``*.fp16.safetensors`` variant: when it is the only one, or fp16 is wanted."""
    d = folder / sub
    has_fp16 = any(d.glob("*.fp16.safetensors"))
    has_plain = any(p for p in d.glob("*.safetensors") if ".fp16." not in p.name)
    return "fp16" if has_fp16 and (not has_plain or dtype == torch.float16) else None


def _read_tensor_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)


def load_camera_projection(folder: Path) -> CameraProjection:
    """Our own module from ``clip_camera_projection/`` (or ``cc_projection/``) weights; no remote code."""
    for sub in ("clip_camera_projection", "cc_projection"):
        d = folder / sub
        files = sorted(d.glob("*.safetensors")) or sorted(d.glob("*.bin"))
        if files:
            return camera_projection_from_state_dict(_read_tensor_file(files[0]), str(files[0]))
    raise FileNotFoundError(f"{folder} has no clip_camera_projection/ weights (diffusion_pytorch_model.safetensors); "
                            f"it does not look like a zero123 diffusers folder; {WHERE_TO_GET}")


def load_zero123_folder(folder, dtype: torch.dtype = torch.float32, device=None) -> Zero123Components:
    """Load a zero123 diffusers folder component by component (``subfolder=``; never ``trust_remote_code``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"zero123 folder {folder} does not exist; {WHERE_TO_GET}")
    missing = [c for c in ("unet", "vae", "image_encoder") if not (folder / c / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing} (each needs config.json + weights); {WHERE_TO_GET}")
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", variant=_variant(folder, "unet", dtype),
                                                    torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", variant=_variant(folder, "vae", dtype),
                                            torch_dtype=dtype)
        enc = CLIPVisionModelWithProjection.from_pretrained(folder, subfolder="image_encoder", dtype=dtype)
    except OSError as e:
        raise FileNotFoundError(f"cannot load zero123 weights from {folder}: {e}; {WHERE_TO_GET}") from e
    proj = load_camera_projection(folder)
    sched_file = folder / "scheduler" / "scheduler_config.json"
    sched = json.loads(sched_file.read_text()) if sched_file.is_file() else dict(SD_SCHEDULER)
    proc = (CLIPImageProcessor.from_pretrained(folder, subfolder="feature_extractor")
            if (folder / "feature_extractor").is_dir() else default_image_processor())
    check_zero123_shapes(unet, enc, proj, str(folder))
    _freeze(unet, vae, enc, proj)
    comps = Zero123Components(unet, vae, enc, proj, sched, proc, str(folder))
    return comps.to(device=device, dtype=dtype)


def check_zero123_shapes(unet, image_encoder, proj: CameraProjection, source: str) -> None:
    """The three components must agree: 8-channel UNet, CLIP projection dim == camera projection dim == UNet context."""
    if unet.config.in_channels != 8:
        raise ValueError(f"{source}: zero123 UNet must take 8 input channels (latent + reference latent), got "
                         f"{unet.config.in_channels}; this is not a zero123 model")
    d = proj.proj.out_features
    if image_encoder.config.projection_dim != d or unet.config.cross_attention_dim != d:
        raise ValueError(f"{source}: CLIP projection_dim {image_encoder.config.projection_dim}, camera projection "
                         f"{d} and UNet cross_attention_dim {unet.config.cross_attention_dim} must be equal")


def load_zero123(path, dtype: torch.dtype = torch.float32, device=None) -> Zero123Components:
    """Load zero123 from a diffusers folder or from a single ``.ckpt`` / ``.safetensors`` file (ldm layout).

    Raises:
        FileNotFoundError: the path does not exist or lacks a component (message says where to get the model).
        ValueError: the file is not a zero123 checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        return load_zero123_folder(p, dtype, device)
    if p.is_file():
        from .convert import load_zero123_single_file

        return load_zero123_single_file(p, dtype, device)
    raise FileNotFoundError(f"zero123 model {p} not found; {WHERE_TO_GET}")


def guess_variant(path) -> str:
    """``stable-zero123`` when the file or folder name says so, else ``zero123-xl`` (weights look identical)."""
    name = Path(path).name.lower().replace("_", "-")
    return "stable-zero123" if "stable" in name else "zero123-xl"
