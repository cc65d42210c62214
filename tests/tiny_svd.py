"""Tiny random Stable Video Diffusion models in the official layouts (diffusers folder and SGM single file).

Configs are those of ``shared/reference/guidance/tiny_svd`` (copied so this works without the shared folder).
"""
from __future__ import annotations

from pathlib import Path

import torch

from tiny_zero123 import hide_torchvision_stub

UNET = {"sample_size": 8, "in_channels": 8, "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
        "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"], "block_out_channels": [32, 64],
        "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 24, "layers_per_block": 1,
        "cross_attention_dim": 32, "transformer_layers_per_block": 1, "num_attention_heads": [2, 4], "num_frames": 4}
VAE = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
       "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "latent_channels": 4, "sample_size": 64,
       "scaling_factor": 0.18215, "force_upcast": True}
CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
        "image_size": 224, "patch_size": 32, "num_channels": 3, "projection_dim": 32, "hidden_act": "gelu",
        "layer_norm_eps": 1e-05}


def tiny_svd_modules(seed: int = 0):
    """(unet, vae, image_encoder); the VAE's quant_conv is the identity, as in SGM's autoencoder (which has none)."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    hide_torchvision_stub()
    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel.from_config(UNET)
    vae = AutoencoderKLTemporalDecoder.from_config(VAE)
    with torch.no_grad():
        c = vae.quant_conv.weight.shape[0]
        vae.quant_conv.weight.copy_(torch.eye(c)[:, :, None, None])
        vae.quant_conv.bias.zero_()
    enc = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP))
    return unet, vae, enc


def write_tiny_svd(folder, seed: int = 0) -> Path:
    """A diffusers folder laid out like ``stabilityai/stable-video-diffusion-img2vid-xt`` (random weights)."""
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline

    from e4d.ldm.convert import default_image_processor
    from e4d.svd.convert import SVD_SCHEDULER

    unet, vae, enc = tiny_svd_modules(seed)
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=enc, unet=unet,
                                        scheduler=EulerDiscreteScheduler.from_config(SVD_SCHEDULER),
                                        feature_extractor=default_image_processor())
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder


def write_tiny_svd_single_file(path, seed: int = 0) -> Path:
    """An SGM-layout ``svd_xt.safetensors``-style file with the same weights as :func:`write_tiny_svd`."""
    from safetensors.torch import save_file

    from e4d.svd.convert import svd_to_single_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = svd_to_single_file(*tiny_svd_modules(seed))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


class WhiteBorder:
    """An SVD pipeline whose output frames get a white border (a quarter of each side) painted on.

    Random weights (tiny or full-size) draw noise with no white background, so the masks-from-white and the object
    crop after SVD have nothing to cut out; with the border the image-to-4D chain runs its real code path on random
    models (tests, ``bench/e2e.py --image``). Non-finite values (random fp16 weights can overflow) become white.
    The wrapped pipeline still does all of its work.
    """

    def __init__(self, pipe) -> None:
        self.pipe = pipe

    def __getattr__(self, name):  # unet, to(), ... of the wrapped pipeline
        return getattr(self.pipe, name)

    def __call__(self, *args, **kwargs):
        out = self.pipe(*args, **kwargs)
        f = out.frames[0]  # [F, 3, H, W] (output_type="pt")
        h, w = f.shape[-2:]
        keep = torch.zeros(h, w, dtype=torch.bool, device=f.device)
        keep[h // 4:h - h // 4, w // 4:w - w // 4] = True
        out.frames[0] = torch.where(keep, torch.nan_to_num(f, nan=1.0, posinf=1.0, neginf=0.0), torch.ones_like(f))
        return out
