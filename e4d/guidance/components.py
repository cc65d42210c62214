"""Zero123 data types shared by the folder loader, the single-file converter and the guidance: the frozen
components bundle, our camera-projection module and the released architectures' configs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

WHERE_TO_GET = ("download a diffusers copy into ComfyUI/models/diffusers/<name>/ (Hugging Face ids "
                "'ashawkey/zero123-xl-diffusers' or 'ashawkey/stable-zero123-diffusers'), or put "
                "'stable_zero123.ckpt' from 'stabilityai/stable-zero123' into ComfyUI/models/checkpoints/")
SD_SCHEDULER = {"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
                "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading"}
"""zero123-xl's scheduler_config.json (same beta schedule as the zero123 training yaml)."""
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
        """Move/cast every module that is not there yet, each checked on its own: the loaders build the camera
        projection in float32 beside half-precision diffusers modules, so the UNet's dtype says nothing about it
        (diffusers also warns on every ``.to(dtype)``, hence no blanket call)."""
        for m in (self.unet, self.vae, self.image_encoder, self.camera_projection):
            p = next(m.parameters())
            if (device is None or torch.device(device) == p.device) and (dtype is None or dtype == p.dtype):
                continue
            m.to(device=device, dtype=dtype)
        return self

    def alphas_cumprod(self) -> Tensor:
        """``ᾱ_t`` for t = 0..999 (float32, CPU), from the scheduler's beta schedule."""
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config(self.scheduler_config).alphas_cumprod.float()


def freeze(*mods: nn.Module) -> None:
    for m in mods:
        m.eval()
        m.requires_grad_(False)


def check_zero123_shapes(unet, image_encoder, proj: CameraProjection, source: str) -> None:
    """The three components must agree: 8-channel UNet, CLIP projection dim == camera projection dim == UNet context."""
    if unet.config.in_channels != 8:
        raise ValueError(f"{source}: zero123 UNet must take 8 input channels (latent + reference latent), got "
                         f"{unet.config.in_channels}; this is not a zero123 model")
    d = proj.proj.out_features
    if image_encoder.config.projection_dim != d or unet.config.cross_attention_dim != d:
        raise ValueError(f"{source}: CLIP projection_dim {image_encoder.config.projection_dim}, camera projection "
                         f"{d} and UNet cross_attention_dim {unet.config.cross_attention_dim} must be equal")
