"""Key names: diffusers / transformers parameter names -> original (ldm / SGM / OpenCLIP) checkpoint names.

The mapping is computed *from the diffusers model's own key list*, so one function serves Stable Diffusion
UNets (zero123) and the spatio-temporal SVD UNet, the KL VAE and SVD's temporal-decoder VAE. Loading a single
file then means: instantiate the diffusers model from its config, ask for the original name of each of its keys
and read that tensor. Facts used (names only; read from Stability-AI/generative-models ``sgm/modules``
(``openaimodel.py``, ``video_model.py``, ``autoencoding/temporal_ae.py``), diffusers
``scripts/convert_svd_to_diffusers.py`` and the OpenCLIP / OpenAI CLIP ``VisionTransformer`` attribute names):

* UNet: ``input_blocks.{1 + b(L+1) + l}.0`` = resnet l of down block b, ``.1`` = its transformer,
  ``input_blocks.{(b+1)(L+1)}.0.op`` = downsampler; ``middle_block.0/1/2``; ``output_blocks.{b(L+1) + l}.0/.1``,
  upsampler at ``output_blocks.{b(L+1) + L}.{1 or 2}.conv``; resnet ``in_layers.0/2``, ``emb_layers.1``,
  ``out_layers.0/3``, ``skip_connection``; video parts ``time_stack`` (temporal resnet / transformer),
  ``time_mixer.mix_factor``, ``time_pos_embed.0/2``; ``time_embed.0/2``, ``label_emb.0.0/2``, ``out.0/2``.
* VAE: ``encoder.down.{i}.block.{l}``, ``.downsample.conv``, ``mid.block_1 / attn_1 / block_2``, ``norm_out``,
  ``nin_shortcut``, attention ``norm, q, k, v, proj_out`` (1x1 convs); decoder ``up.{n-1-j}`` (reversed order);
  SVD's VideoDecoder adds ``time_stack`` + ``mix_factor`` to each resnet and ``conv_out.time_mix_conv``.
* CLIP vision tower: ``conv1``, ``class_embedding``, ``positional_embedding``, ``ln_pre``,
  ``transformer.resblocks.{i}.{ln_1, attn.in_proj_weight/bias (q,k,v stacked), attn.out_proj, ln_2, mlp.c_fc,
  mlp.c_proj}``, ``ln_post``, ``proj`` (``[width, out]``, applied as ``x @ proj``).
"""
from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import Tensor

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SVD_CLIP_PREFIX = "conditioner.embedders.0.open_clip.model.visual."
ZERO123_CLIP_PREFIX = "cond_stage_model.model.visual."

_RESNET = (("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("time_emb_proj.", "emb_layers.1."),
           ("norm2.", "out_layers.0."), ("conv2.", "out_layers.3."), ("conv_shortcut.", "skip_connection."))


def _rename_first(rest: str, table) -> str:
    for a, b in table:
        if rest.startswith(a):
            return b + rest[len(a):]
    return rest


def _unet_resnet(rest: str) -> str:
    if rest.startswith("spatial_res_block."):
        return _rename_first(rest[len("spatial_res_block."):], _RESNET)
    if rest.startswith("temporal_res_block."):
        return "time_stack." + _rename_first(rest[len("temporal_res_block."):], _RESNET)
    if rest.startswith("time_mixer."):
        return rest
    return _rename_first(rest, _RESNET)


def _unet_attention(rest: str) -> str:
    rest = rest.replace("temporal_transformer_blocks.", "time_stack.", 1)
    rest = rest.replace("time_pos_embed.linear_1.", "time_pos_embed.0.").replace("time_pos_embed.linear_2.", "time_pos_embed.2.")
    return rest


_UNET_TOP = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
             "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
             "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}


def unet_key_map(keys: Iterable[str], layers_per_block: int) -> dict[str, str]:
    """diffusers UNet key -> ldm/SGM key (without ``model.diffusion_model.``), for every key in ``keys``."""
    keys = list(keys)
    L = int(layers_per_block)
    up_attn = {int(m.group(1)) for k in keys if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
    out = {}
    for k in keys:
        for a, b in _UNET_TOP.items():
            if k.startswith(a):
                out[k] = b + k[len(a):]
                break
        else:
            out[k] = _unet_block_key(k, L, up_attn)
    return out


def _unet_block_key(k: str, L: int, up_attn: set[int]) -> str:
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", k)
    if m:
        b, kind, l, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        if kind == "downsamplers":
            return f"input_blocks.{(b + 1) * (L + 1)}.0.op." + rest[len("conv."):]
        i = 1 + b * (L + 1) + l
        return f"input_blocks.{i}.0." + _unet_resnet(rest) if kind == "resnets" else f"input_blocks.{i}.1." + _unet_attention(rest)
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", k)
    if m:
        kind, l, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "attentions":
            return "middle_block.1." + _unet_attention(rest)
        return f"middle_block.{2 * l}." + _unet_resnet(rest)
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", k)
    if m:
        b, kind, l, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        if kind == "upsamplers":
            return f"output_blocks.{b * (L + 1) + L}.{2 if b in up_attn else 1}." + rest
        i = b * (L + 1) + l
        return f"output_blocks.{i}.0." + _unet_resnet(rest) if kind == "resnets" else f"output_blocks.{i}.1." + _unet_attention(rest)
    raise ValueError(f"unexpected diffusers UNet key {k!r}; this UNet layout is not supported by the converter")


_VAE_RES = (("conv_shortcut.", "nin_shortcut."),)
_VAE_TIME_RES = (("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
                 ("conv2.", "out_layers.3."))
_VAE_ATTN = (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out."))


def _vae_resnet(rest: str) -> str:
    if rest.startswith("spatial_res_block."):
        return _rename_first(rest[len("spatial_res_block."):], _VAE_RES)
    if rest.startswith("temporal_res_block."):
        return "time_stack." + _rename_first(rest[len("temporal_res_block."):], _VAE_TIME_RES)
    if rest == "time_mixer.mix_factor":
        return "mix_factor"
    return _rename_first(rest, _VAE_RES)


def vae_key_map(keys: Iterable[str]) -> dict[str, str]:
    """diffusers AutoencoderKL / AutoencoderKLTemporalDecoder key -> ldm/SGM key (without ``first_stage_model.``)."""
    keys = list(keys)
    n_up = len({int(m.group(1)) for k in keys if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k))})
    out = {}
    for k in keys:
        out[k] = _vae_key(k, n_up)
    return out


def _vae_key(k: str, n_up: int) -> str:
    if k.startswith(("quant_conv.", "post_quant_conv.")):
        return k
    m = re.match(r"(encoder|decoder)\.(.*)", k)
    if not m:
        raise ValueError(f"unexpected diffusers VAE key {k!r}")
    part, rest = m.group(1), m.group(2)
    simple = {"conv_in.": "conv_in.", "conv_out.": "conv_out.", "conv_norm_out.": "norm_out.",
              "time_conv_out.": "conv_out.time_mix_conv."}
    for a, b in simple.items():
        if rest.startswith(a):
            return f"{part}.{b}{rest[len(a):]}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", rest)
    if m:
        kind, l, r = m.group(1), int(m.group(2)), m.group(3)
        if kind == "attentions":
            return f"{part}.mid.attn_1." + _rename_first(r, _VAE_ATTN)
        return f"{part}.mid.block_{l + 1}." + _vae_resnet(r)
    m = re.match(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", rest)
    if m:
        kind, i, sub, l, r = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        name, idx = ("down", i) if kind == "down_blocks" else ("up", n_up - 1 - i)
        if sub == "resnets":
            return f"{part}.{name}.{idx}.block.{l}." + _vae_resnet(r)
        return f"{part}.{name}.{idx}.{'downsample' if sub == 'downsamplers' else 'upsample'}." + r
    raise ValueError(f"unexpected diffusers VAE key {k!r}; this VAE layout is not supported by the converter")


def is_vae_attention_matrix(diffusers_key: str) -> bool:
    """VAE attention q/k/v/out are Linear in diffusers but 1x1 Conv2d in the original checkpoints."""
    return bool(re.search(r"attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$", diffusers_key))


# -- CLIP vision tower ---------------------------------------------------------------------------------
_CLIP_LAYER = (("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."),
               ("mlp.fc2.", "mlp.c_proj."), ("self_attn.out_proj.", "attn.out_proj."))


def clip_vision_to_openclip(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """transformers ``CLIPVisionModelWithProjection`` state dict -> OpenCLIP/OpenAI ``visual.*`` names (no prefix)."""
    out: dict[str, Tensor] = {}
    p = "vision_model."
    out["class_embedding"] = sd[p + "embeddings.class_embedding"]
    out["conv1.weight"] = sd[p + "embeddings.patch_embedding.weight"]
    out["positional_embedding"] = sd[p + "embeddings.position_embedding.weight"]
    for a, b in (("pre_layrnorm.", "ln_pre."), ("post_layernorm.", "ln_post.")):
        for s in ("weight", "bias"):
            out[b + s] = sd[p + a + s]
    out["proj"] = sd["visual_projection.weight"].t().contiguous()
    n = len({m.group(1) for k in sd if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k))})
    for i in range(n):
        src, dst = f"{p}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for s in ("weight", "bias"):
            out[dst + f"attn.in_proj_{s}"] = torch.cat([sd[src + f"self_attn.{x}_proj.{s}"] for x in "qkv"])
            for a, b in _CLIP_LAYER:
                out[dst + b + s] = sd[src + a + s]
    return out


def openclip_to_clip_vision(sd: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """Inverse of :func:`clip_vision_to_openclip` (``sd`` without prefix); raises KeyError naming a missing key."""
    out: dict[str, Tensor] = {}
    p = "vision_model."
    out[p + "embeddings.class_embedding"] = sd["class_embedding"]
    out[p + "embeddings.patch_embedding.weight"] = sd["conv1.weight"]
    out[p + "embeddings.position_embedding.weight"] = sd["positional_embedding"]
    for a, b in (("pre_layrnorm.", "ln_pre."), ("post_layernorm.", "ln_post.")):
        for s in ("weight", "bias"):
            out[p + a + s] = sd[b + s]
    out["visual_projection.weight"] = sd["proj"].t().contiguous()
    for i in range(num_layers):
        src, dst = f"transformer.resblocks.{i}.", f"{p}encoder.layers.{i}."
        for s in ("weight", "bias"):
            q, k, v = sd[src + f"attn.in_proj_{s}"].chunk(3, dim=0)
            out[dst + f"self_attn.q_proj.{s}"], out[dst + f"self_attn.k_proj.{s}"], out[dst + f"self_attn.v_proj.{s}"] = q, k, v
            for a, b in _CLIP_LAYER:
                out[dst + a + s] = sd[src + b + s]
    return out
