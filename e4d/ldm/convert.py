"""Original single-file layouts (ldm / SGM / OpenCLIP) <-> diffusers / transformers modules, as pure functions.

Shared by the SVD loader (:mod:`e4d.svd.convert`) and the zero123 loader (:mod:`e4d.guidance.convert`): renaming
by the key maps of :mod:`e4d.ldm.keymap`, config inference from tensor shapes, and building modules without
allocating their weights twice.
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Callable, Mapping, Optional

import torch
from torch import Tensor

from .keymap import VAE_PREFIX, is_vae_attention_matrix, openclip_to_clip_vision

log = logging.getLogger(__name__)

CLIP_PROCESSOR = {"crop_size": {"height": 224, "width": 224}, "size": {"shortest_edge": 224}, "resample": 3,
                  "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True, "do_rescale": True,
                  "do_resize": True, "rescale_factor": 1 / 255,
                  "image_mean": [0.48145466, 0.4578275, 0.40821073],
                  "image_std": [0.26862954, 0.26130258, 0.27577711]}
"""The CLIPImageProcessor config shipped with every zero123 / SVD diffusers repo (OpenAI CLIP statistics)."""
_KNOWN_CLIP_HEADS = {1280: 16, 1024: 16, 768: 12}  # ViT-H/14, ViT-L/14, ViT-B (head dims 80, 64, 64)


# -- generic renaming --------------------------------------------------------------------------------
def to_single_file(model_sd: Mapping[str, Tensor], key_map: Mapping[str, str], prefix: str) -> dict[str, Tensor]:
    """diffusers state dict -> original names under ``prefix`` (VAE attention matrices become 1x1 convs)."""
    out = {}
    for k, v in model_sd.items():
        if is_vae_attention_matrix(k) and prefix == VAE_PREFIX and v.ndim == 2:
            v = v[:, :, None, None]
        out[prefix + key_map[k]] = v
    return out


def from_single_file(sd: Mapping[str, Tensor], shapes: Mapping[str, torch.Size], key_map: Mapping[str, str],
                     prefix: str, source: str, optional: Optional[Mapping[str, Callable[[torch.Size], Tensor]]] = None
                     ) -> dict[str, Tensor]:
    """Original-layout tensors -> diffusers state dict for a model whose keys/shapes are ``shapes``.

    Tensors with the same number of elements are reshaped (1x1 conv <-> linear). ``optional`` gives a factory for
    diffusers keys that a release legitimately lacks. Raises ValueError listing missing keys / bad shapes.
    """
    out, missing, bad = {}, [], []
    optional = optional or {}
    for k, shape in shapes.items():
        name = prefix + key_map[k]
        if name not in sd:
            if k in optional:
                out[k] = optional[k](shape)
                continue
            missing.append(name)
            continue
        v = sd[name]
        if v.shape != shape:
            if v.numel() != math.prod(shape):
                bad.append(f"{name} {tuple(v.shape)} (model expects {tuple(shape)})")
                continue
            v = v.reshape(shape)
        out[k] = v
    if missing or bad:
        raise ValueError(f"{source} does not match the expected {prefix!r} layout: {len(missing)} missing keys "
                         f"(e.g. {missing[:3]}), {len(bad)} wrong shapes (e.g. {bad[:3]}); the file is not this model or is "
                         "truncated")
    return out


def strip(sd: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


# -- config inference from tensor shapes ---------------------------------------------------------------
def infer_unet_config(sd: Mapping[str, Tensor], video: bool) -> dict:
    """diffusers UNet config from an original-layout UNet state dict (keys without ``model.diffusion_model.``).

    Head counts are not stored in weights: real SVD/SD use 64-dim heads (SVD) / 8 heads (SD-1); tiny models
    get the same rule (weights, and therefore conversion, do not depend on it).
    """
    if "input_blocks.0.0.weight" not in sd:
        raise ValueError("not an ldm/SGM UNet: input_blocks.0.0.weight is missing")
    ops = sorted(int(m.group(1)) for k in sd if (m := re.match(r"input_blocks\.(\d+)\.0\.op\.weight$", k)))
    L = ops[0] - 1 if ops else 1
    n_out = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"output_blocks\.(\d+)\.", k)))
    nb = n_out // (L + 1)
    ch = [int(sd[f"input_blocks.{1 + b * (L + 1)}.0.in_layers.2.weight"].shape[0]) for b in range(nb)]
    has = lambda p: any(k.startswith(p) for k in sd)  # noqa: E731
    down_attn = [has(f"input_blocks.{1 + b * (L + 1)}.1.") for b in range(nb)]
    up_attn = [any(k.startswith(f"output_blocks.{b * (L + 1)}.1.") and ".1.conv." not in k for k in sd) for b in range(nb)]
    ctx = next(int(v.shape[1]) for k, v in sd.items() if k.endswith("attn2.to_k.weight"))
    cfg = {"in_channels": int(sd["input_blocks.0.0.weight"].shape[1]), "out_channels": int(sd["out.2.weight"].shape[0]),
           "block_out_channels": ch, "layers_per_block": L, "cross_attention_dim": ctx}
    if video:
        adm = int(sd["label_emb.0.0.weight"].shape[1])
        cfg.update(down_block_types=["CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in down_attn],
                   up_block_types=["CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in up_attn],
                   addition_time_embed_dim=adm // 3, projection_class_embeddings_input_dim=adm,
                   num_attention_heads=[max(1, c // 64) for c in ch], transformer_layers_per_block=1,
                   sample_size=96 if ch[0] == 320 else 8, num_frames=14)
    else:
        proj_in = next(v for k, v in sd.items() if k.endswith(".proj_in.weight"))
        cfg.update(down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in down_attn],
                   up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attn],
                   attention_head_dim=8, use_linear_projection=proj_in.ndim == 2, norm_num_groups=32,
                   sample_size=32 if ch[0] == 320 else 8)
    return cfg


def infer_vae_config(sd: Mapping[str, Tensor], temporal: bool) -> dict:
    """diffusers VAE config from original-layout VAE keys (without ``first_stage_model.``)."""
    if "encoder.conv_in.weight" not in sd:
        raise ValueError("not an ldm/SGM VAE: encoder.conv_in.weight is missing")
    nb = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.(\d+)\.", k)))
    L = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k)))
    ch = [int(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(nb)]
    cfg = {"in_channels": int(sd["encoder.conv_in.weight"].shape[1]), "out_channels": int(sd["decoder.conv_out.weight"].shape[0]),
           "down_block_types": ["DownEncoderBlock2D"] * nb, "block_out_channels": ch, "layers_per_block": L,
           "latent_channels": int(sd["encoder.conv_out.weight"].shape[0]) // 2, "scaling_factor": 0.18215}
    if temporal:
        cfg.update(force_upcast=True, sample_size=768 if ch[0] == 128 else 64)
    else:
        # GroupNorm group count is not stored: real SD VAEs use 32; tiny test VAEs use min(channels) // 2
        cfg.update(up_block_types=["UpDecoderBlock2D"] * nb, norm_num_groups=min(32, min(ch) // 2),
                   sample_size=256 if ch[0] == 128 else 64)
    return cfg


def infer_clip_config(sd: Mapping[str, Tensor], hidden_act: str) -> dict:
    """transformers CLIPVisionConfig kwargs from an OpenCLIP/OpenAI ``visual.*`` state dict (no prefix)."""
    if "conv1.weight" not in sd or "proj" not in sd:
        raise ValueError("not a CLIP vision tower: conv1.weight / proj missing")
    w = sd["conv1.weight"]
    hidden, patch = int(w.shape[0]), int(w.shape[-1])
    n_tok = int(sd["positional_embedding"].shape[0]) - 1
    n_layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k)))
    return {"hidden_size": hidden, "intermediate_size": int(sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "num_hidden_layers": n_layers, "num_attention_heads": _KNOWN_CLIP_HEADS.get(hidden, max(1, hidden // 8)),
            "image_size": patch * int(round(math.sqrt(n_tok))), "patch_size": patch,
            "projection_dim": int(sd["proj"].shape[1]), "hidden_act": hidden_act, "layer_norm_eps": 1e-5}


# -- building modules ------------------------------------------------------------------------------------
def build_empty(factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Instantiate without allocating parameters (the weights come from the file).

    Uses accelerate's ``init_empty_weights`` (parameters on the meta device, buffers real) when accelerate is
    installed; otherwise builds normally on the CPU (slower and a transient extra copy, same result).
    """
    try:
        from accelerate import init_empty_weights
    except ImportError:
        log.info("accelerate not installed: building the model with random weights before loading the file")
        return factory()
    with init_empty_weights():
        return factory()


def fill(model: torch.nn.Module, sd: dict[str, Tensor], dtype: Optional[torch.dtype]) -> torch.nn.Module:
    model.load_state_dict(sd, strict=True, assign=True)
    if dtype is not None:
        model.to(dtype=dtype)
    return model.eval().requires_grad_(False)


def clip_from_openclip(visual: Mapping[str, Tensor], hidden_act: str, dtype, source: str, config: Optional[dict] = None):
    """transformers ``CLIPVisionModelWithProjection`` from an OpenCLIP ``visual.*`` state dict (no prefix)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = config or infer_clip_config(visual, hidden_act)
    model = build_empty(lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg)))
    try:
        sd = openclip_to_clip_vision(visual, cfg["num_hidden_layers"])
    except KeyError as e:
        raise ValueError(f"{source}: CLIP vision tower lacks {e}; the file is truncated or not this model") from e
    return fill(model, sd, dtype)


def default_image_processor():
    """transformers ``CLIPImageProcessor`` with :data:`CLIP_PROCESSOR` (224 px, CLIP mean/std)."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(**CLIP_PROCESSOR)


def weights_variant(component_dir: Path, dtype: torch.dtype) -> Optional[str]:
    """``"fp16"`` to read diffusers' ``*.fp16.safetensors`` files: when they are the only weights, or when both
    exist and fp16 is wanted (half the download read, no fp32 copy in RAM); else None (the plain files)."""
    has_fp16 = any(component_dir.glob("*.fp16.safetensors"))
    has_plain = any(f for f in component_dir.glob("*.safetensors") if ".fp16." not in f.name)
    if has_fp16 and (not has_plain or dtype == torch.float16):
        return "fp16"
    return None


def from_pretrained_dtype(dtype: torch.dtype) -> dict:
    """The dtype keyword of diffusers' ``from_pretrained`` for the installed diffusers: ``dtype=`` where it is
    understood (diffusers deprecated ``torch_dtype`` with a FutureWarning when it added ``dtype``), else
    ``torch_dtype=`` (older releases do not know ``dtype``)."""
    from diffusers.utils import deprecation_utils

    knows_dtype = hasattr(deprecation_utils, "_resolve_dtype")  # the resolver that came with ``dtype=``
    return {"dtype": dtype} if knows_dtype else {"torch_dtype": dtype}
