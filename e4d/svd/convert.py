"""SVD single file (SGM layout) <-> diffusers / transformers components.

``svd_xt.safetensors`` / ``svd.safetensors`` (Stability's SGM release, the files ComfyUI loads from
``models/checkpoints``) hold three models under fixed prefixes (see :mod:`e4d.ldm.keymap`):
``model.diffusion_model.*`` (spatio-temporal UNet), ``first_stage_model.*`` (VAE with the temporal decoder) and
``conditioner.embedders.0.open_clip.model.visual.*`` (OpenCLIP ViT-H image tower). diffusers 0.42 has no
``from_single_file`` for these classes, so we build each diffusers model from a config (the real one from the
HF repo when the shapes say it is the real model, else inferred from tensor shapes), and fill it by renaming
(:mod:`e4d.ldm.convert`).
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor

from ..ldm.convert import (build_empty, clip_from_openclip, fill, from_single_file, infer_unet_config, infer_vae_config,
                           strip, to_single_file)
from ..ldm.keymap import SVD_CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX, clip_vision_to_openclip, unet_key_map, vae_key_map

SVD_WHERE = ("get 'svd_xt.safetensors' (stabilityai/stable-video-diffusion-img2vid-xt) or 'svd.safetensors' "
             "(stabilityai/stable-video-diffusion-img2vid) into ComfyUI/models/checkpoints/, or the diffusers folder of "
             "the same repos into ComfyUI/models/diffusers/")

# Real configs (REAL_CONFIGS.md; HF stabilityai/stable-video-diffusion-img2vid-xt unet/vae/image_encoder config.json)
REAL_SVD_UNET = {"sample_size": 96, "in_channels": 8, "out_channels": 4,
                 "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
                 "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
                 "block_out_channels": [320, 640, 1280, 1280], "addition_time_embed_dim": 256,
                 "projection_class_embeddings_input_dim": 768, "layers_per_block": 2, "cross_attention_dim": 1024,
                 "transformer_layers_per_block": 1, "num_attention_heads": [5, 10, 20, 20], "num_frames": 25}
REAL_SVD_VAE = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
                "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
                "sample_size": 768, "scaling_factor": 0.18215, "force_upcast": True}
REAL_SVD_CLIP = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
                 "image_size": 224, "patch_size": 14, "projection_dim": 1024, "hidden_act": "gelu",
                 "layer_norm_eps": 1e-5}
SVD_SCHEDULER = {"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                 "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "prediction_type": "v_prediction",
                 "interpolation_type": "linear", "sigma_min": 0.002, "sigma_max": 700.0, "use_karras_sigmas": True,
                 "timestep_type": "continuous", "timestep_spacing": "leading", "steps_offset": 1,
                 "clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True}


# -- SVD ---------------------------------------------------------------------------------------------------
def svd_to_single_file(unet, vae, image_encoder) -> dict[str, Tensor]:
    """diffusers SVD components -> one SGM-layout state dict (inverse of :func:`svd_from_single_file`).

    The SGM autoencoder has no ``quant_conv`` (``AutoencodingEngine`` feeds the encoder output straight to the
    Gaussian regulariser), so the VAE's quant_conv must be the identity and is not written.
    """
    usd, vsd = unet.state_dict(), dict(vae.state_dict())
    q_w, q_b = vsd.pop("quant_conv.weight"), vsd.pop("quant_conv.bias")
    if not (torch.equal(q_w[:, :, 0, 0], torch.eye(q_w.shape[0], dtype=q_w.dtype)) and not q_b.any()):
        raise ValueError("SGM's SVD VAE has no quant_conv: set vae.quant_conv to identity before writing a single file")
    out = to_single_file(usd, unet_key_map(usd, unet.config.layers_per_block), UNET_PREFIX)
    out.update(to_single_file(vsd, vae_key_map(vsd), VAE_PREFIX))
    out.update({SVD_CLIP_PREFIX + k: v for k, v in clip_vision_to_openclip(image_encoder.state_dict()).items()})
    return out


def _identity_conv(shape: torch.Size) -> Tensor:
    if len(shape) == 4:
        return torch.eye(shape[0])[:, :, None, None]
    return torch.zeros(shape)


def svd_from_single_file(sd: Mapping[str, Tensor], source: str = "checkpoint", dtype: Optional[torch.dtype] = None,
                         num_frames: Optional[int] = None):
    """(unet, vae, image_encoder) diffusers/transformers modules from an SGM SVD state dict.

    Configs: the real SVD(-XT) configs when the tensor shapes are those of the released model (``num_frames``
    then says 25 for XT, 14 for SVD, as the file does not record it), else inferred from the shapes.
    """
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    u_sd, v_sd, c_sd = strip(sd, UNET_PREFIX), strip(sd, VAE_PREFIX), strip(sd, SVD_CLIP_PREFIX)
    for name, part in (("model.diffusion_model.*", u_sd), ("first_stage_model.*", v_sd),
                       ("conditioner.embedders.0.open_clip.model.visual.*", c_sd)):
        if not part:
            raise ValueError(f"{source} has no {name} tensors, so it is not an SVD single-file checkpoint; {SVD_WHERE}")
    if "decoder.mid.block_1.mix_factor" not in v_sd:
        raise ValueError(f"{source}: first_stage_model has no temporal decoder (decoder.mid.block_1.mix_factor); "
                         f"this is an image model, not SVD; {SVD_WHERE}")
    ucfg = infer_unet_config(u_sd, video=True)
    real = ucfg["block_out_channels"] == REAL_SVD_UNET["block_out_channels"] and ucfg["cross_attention_dim"] == 1024
    if real:
        ucfg = dict(REAL_SVD_UNET)
    if num_frames is not None and real:  # the file does not record it: svd_xt* -> 25, svd* -> 14
        ucfg["num_frames"] = int(num_frames)
    vcfg = dict(REAL_SVD_VAE) if real else infer_vae_config(v_sd, temporal=True)
    unet = build_empty(lambda: UNetSpatioTemporalConditionModel(**ucfg))
    ushapes = {k: v.shape for k, v in unet.state_dict().items()}
    unet = fill(unet, from_single_file(sd, ushapes, unet_key_map(ushapes, ucfg["layers_per_block"]), UNET_PREFIX, source), dtype)
    vae = build_empty(lambda: AutoencoderKLTemporalDecoder(**vcfg))
    vshapes = {k: v.shape for k, v in vae.state_dict().items()}
    optional = {"quant_conv.weight": _identity_conv, "quant_conv.bias": _identity_conv}
    vae = fill(vae, from_single_file(sd, vshapes, vae_key_map(vshapes), VAE_PREFIX, source, optional), dtype)
    enc = clip_from_openclip(c_sd, "gelu", dtype, source, dict(REAL_SVD_CLIP) if real else None)
    return unet, vae, enc
