"""``stable_zero123.ckpt`` (original ldm layout, ``stabilityai/stable-zero123``) <-> zero123 components.

Key layout of the single file (ComfyUI ``comfy/supported_models.py`` ``Stable_Zero123``: required key
``cc_projection.weight``, ``clip_vision_prefix = "cond_stage_model.model.visual."``; zero123's yaml:
``FrozenCLIPImageEmbedder`` wrapping OpenAI CLIP ViT-L/14): ``model.diffusion_model.*`` (SD-1 UNet with 8 input
channels), ``first_stage_model.*`` (KL-f8 VAE), ``cond_stage_model.model.visual.*`` (CLIP image tower, QuickGELU),
``cc_projection.{weight,bias}`` (Linear 772 -> 768). EMA copies (``model_ema.*``) and the text tower are ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from ..checkpoints import read_checkpoint
from ..ldm.convert import (build_empty, clip_from_openclip, default_image_processor, fill, from_single_file,
                           infer_unet_config, infer_vae_config, strip, to_single_file)
from ..ldm.keymap import UNET_PREFIX, VAE_PREFIX, ZERO123_CLIP_PREFIX, clip_vision_to_openclip, unet_key_map, vae_key_map
from .components import (SD_SCHEDULER, WHERE_TO_GET, Zero123Components, camera_projection_from_state_dict,
                         check_zero123_shapes)

_PREFIXES = (UNET_PREFIX, VAE_PREFIX, ZERO123_CLIP_PREFIX, "cc_projection.")


def zero123_to_ldm_state_dict(unet, vae, image_encoder, camera_projection) -> dict[str, Tensor]:
    """diffusers zero123 components -> one ldm-layout state dict (inverse of :func:`zero123_from_ldm_state_dict`)."""
    usd, vsd = unet.state_dict(), vae.state_dict()
    out = to_single_file(usd, unet_key_map(usd, unet.config.layers_per_block), UNET_PREFIX)
    out.update(to_single_file(vsd, vae_key_map(vsd), VAE_PREFIX))
    out.update({ZERO123_CLIP_PREFIX + k: v for k, v in clip_vision_to_openclip(image_encoder.state_dict()).items()})
    out["cc_projection.weight"] = camera_projection.proj.weight.detach()
    out["cc_projection.bias"] = camera_projection.proj.bias.detach()
    return out


def zero123_from_ldm_state_dict(sd: dict[str, Tensor], source: str = "checkpoint",
                                dtype: Optional[torch.dtype] = None) -> Zero123Components:
    """Build :class:`Zero123Components` from an ldm-layout zero123 state dict (configs inferred from shapes;
    for the released file they equal the ``ashawkey/stable-zero123-diffusers`` configs)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if "cc_projection.weight" not in sd:
        hint = (" (it has SGM video keys: an SVD checkpoint - use the SVD loader)"
                if any(k.startswith("conditioner.") for k in sd) else "")
        raise ValueError(f"{source} has no cc_projection.weight, so it is not a zero123 checkpoint{hint}; {WHERE_TO_GET}")
    u_sd, v_sd, c_sd = strip(sd, UNET_PREFIX), strip(sd, VAE_PREFIX), strip(sd, ZERO123_CLIP_PREFIX)
    if not c_sd:
        raise ValueError(f"{source} lacks the CLIP image encoder ({ZERO123_CLIP_PREFIX}*); {WHERE_TO_GET}")
    ucfg = infer_unet_config(u_sd, video=False)
    unet = build_empty(lambda: UNet2DConditionModel(**ucfg))
    ushapes = {k: v.shape for k, v in unet.state_dict().items()}
    unet = fill(unet, from_single_file(sd, ushapes, unet_key_map(ushapes, ucfg["layers_per_block"]), UNET_PREFIX, source), dtype)
    vcfg = infer_vae_config(v_sd, temporal=False)
    vae = build_empty(lambda: AutoencoderKL(**vcfg))
    vshapes = {k: v.shape for k, v in vae.state_dict().items()}
    vae = fill(vae, from_single_file(sd, vshapes, vae_key_map(vshapes), VAE_PREFIX, source), dtype)
    enc = clip_from_openclip(c_sd, "quick_gelu", dtype, source)  # OpenAI CLIP uses QuickGELU
    proj = camera_projection_from_state_dict(sd, source)
    if dtype is not None:
        proj.to(dtype=dtype)
    proj.eval().requires_grad_(False)
    check_zero123_shapes(unet, enc, proj, source)
    return Zero123Components(unet, vae, enc, proj, dict(SD_SCHEDULER), default_image_processor(), source)


def load_zero123_single_file(path, dtype: torch.dtype = torch.float32, device=None) -> Zero123Components:
    """Load ``stable_zero123.ckpt`` (or a ``.safetensors`` with the same keys) without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"zero123 checkpoint {path} not found; {WHERE_TO_GET}")
    sd = read_checkpoint(path, keep=lambda k: k.startswith(_PREFIXES), dtype=dtype, where=WHERE_TO_GET)
    return zero123_from_ldm_state_dict(sd, str(path), dtype).to(device=device, dtype=dtype)
