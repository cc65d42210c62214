"""Single-file (SGM / ldm layout) checkpoints <-> diffusers / transformers components, as pure functions.

``svd_xt.safetensors`` / ``svd.safetensors`` (Stability's SGM release, the files ComfyUI loads from
``models/checkpoints``) hold three models under fixed prefixes (see :mod:`e4d.svd.keymap`):
``model.diffusion_model.*`` (spatio-temporal UNet), ``first_stage_model.*`` (VAE with the temporal decoder) and
``conditioner.embedders.0.open_clip.model.visual.*`` (OpenCLIP ViT-H image tower). diffusers 0.42 has no
``from_single_file`` for these classes, so we build each diffusers model from a config (the real one from the
HF repo when the shapes say it is the real model, else inferred from tensor shapes), and fill it by renaming.
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Callable, Mapping, Optional

import torch
from torch import Tensor

from .keymap import (SVD_CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX, clip_vision_to_openclip, is_vae_attention_matrix,
                     openclip_to_clip_vision, unet_key_map, vae_key_map)

log = logging.getLogger(__name__)

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


def read_state_dict(path, keep: Optional[Callable[[str], bool]] = None,
                    dtype: Optional[torch.dtype] = None) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` (lazily, only keys passing ``keep``) or ``.ckpt``/``.pt`` (weights_only) file.

    ``dtype`` casts floating tensors while reading (the released ``svd_xt.safetensors`` is fp32, 9.6 GB: casting
    tensor by tensor keeps the CPU peak at the fp16 size).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    cast = (lambda t: t.to(dtype) if dtype is not None and t.is_floating_point() else t)  # noqa: E731
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: cast(f.get_tensor(k)) for k in f.keys() if keep is None or keep(k)}
    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors have many types; weights_only refuses arbitrary objects
        raise ValueError(f"cannot read {path} with torch.load(weights_only=True): {e}; convert it to .safetensors") from e
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise TypeError(f"{path} holds {type(obj).__name__}, not a state dict")
    return {k: cast(v) for k, v in sd.items() if isinstance(v, Tensor) and (keep is None or keep(k))}
