"""Load SyncDreamer weights: the official Lightning ``syncdreamer-pretrain.ckpt`` (``ckpt['state_dict']``), a bare
state dict, or a .safetensors file -- all through one path, sizes inferred from the shapes (real, reduced, tiny).

Optional CLIP override: OpenAI ``ViT-L-14.pt`` (``visual.*``) or Hugging Face ``clip-vit-large-patch14``
(``vision_model.*`` + ``visual_projection``); the SyncDreamer checkpoint already contains CLIP, so it is never needed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Union

import torch
from torch import Tensor

from ..checkpoints import read_checkpoint
from .dims import infer_dims
from .model import SyncDreamer

WHERE = ("download syncdreamer-pretrain.ckpt from https://huggingface.co/liuyuan-pal/SyncDreamer and put it in "
         "ComfyUI/models/syncdreamer/")
CLIP_WHERE = "use OpenAI ViT-L-14.pt or the Hugging Face clip-vit-large-patch14 vision weights"
SENTINELS = ("cc_projection.weight", "spatial_volume.spatial_volume_feats.init_conv.weight",
             "model.diffusion_model.middle_conditions.proj_in.0.weight", "first_stage_model.decoder.conv_in.weight",
             "clip_image_encoder.model.visual.conv1.weight", "poses")


def check_syncdreamer_keys(sd: Dict[str, Tensor], path: Union[str, Path] = "<state dict>") -> None:
    """Raise ValueError unless the sentinel keys of a SyncDreamer checkpoint are present."""
    missing = [k for k in SENTINELS if k not in sd]
    if missing:
        sample = ", ".join(list(sd)[:5])
        raise ValueError(f"{path} is not a SyncDreamer checkpoint: missing {missing} (found {len(sd)} tensors, e.g. "
                         f"{sample}); {WHERE}")


def clip_override_to_syncdreamer(sd: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """OpenAI ``ViT-L-14.pt`` or HF ``CLIPVisionModelWithProjection`` tensors -> ``clip_image_encoder.model.visual.*``."""
    pre = "clip_image_encoder.model.visual."
    if any(k.startswith("visual.") for k in sd):
        return {pre + k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    hf = {k[len("vision_model."):] if k.startswith("vision_model.") else k: v for k, v in sd.items()}
    if "embeddings.patch_embedding.weight" not in hf:
        raise ValueError("CLIP override not recognised: expected OpenAI 'visual.*' or Hugging Face "
                         "'vision_model.*' keys (clip-vit-large-patch14)")
    out = {pre + "conv1.weight": hf["embeddings.patch_embedding.weight"],
           pre + "class_embedding": hf["embeddings.class_embedding"],
           pre + "positional_embedding": hf["embeddings.position_embedding.weight"],
           pre + "ln_pre.weight": hf["pre_layrnorm.weight"], pre + "ln_pre.bias": hf["pre_layrnorm.bias"],
           pre + "ln_post.weight": hf["post_layernorm.weight"], pre + "ln_post.bias": hf["post_layernorm.bias"],
           pre + "proj": sd["visual_projection.weight"].t().contiguous()}
    i = 0
    while f"encoder.layers.{i}.self_attn.q_proj.weight" in hf:
        a, r = f"encoder.layers.{i}.", f"{pre}transformer.resblocks.{i}."
        out[r + "attn.in_proj_weight"] = torch.cat([hf[a + f"self_attn.{n}_proj.weight"] for n in "qkv"])
        out[r + "attn.in_proj_bias"] = torch.cat([hf[a + f"self_attn.{n}_proj.bias"] for n in "qkv"])
        for src, dst in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                         ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
            out[r + dst + ".weight"], out[r + dst + ".bias"] = hf[a + src + ".weight"], hf[a + src + ".bias"]
        i += 1
    return out


def load_syncdreamer(path: Union[str, Path], dtype: torch.dtype = torch.float16,
                     device: Union[str, torch.device] = "cpu",
                     clip_override: Optional[Union[str, Path]] = None,
                     vae_dtype: Optional[torch.dtype] = None) -> SyncDreamer:
    """Build :class:`SyncDreamer` from a checkpoint and load it with ``strict=True``.

    Args:
        path: ``syncdreamer-pretrain.ckpt`` (Lightning), a bare state dict ``.pt``, or ``.safetensors``.
        dtype: working dtype of the weights (fp16/bf16 for GPU, fp32 for CPU parity); the 10 buffers (schedule,
            cameras) stay float32.
        device: where the model goes.
        clip_override: optional OpenAI ``ViT-L-14.pt`` or HF CLIP vision weights replacing the checkpoint's CLIP.
        vae_dtype: dtype of the VAE (``first_stage_model``); default float32 when ``dtype`` is float16, because the
            SD-1.x VAE can overflow in fp16 (diffusers upcasts it for the same reason), else ``dtype``.

    Raises:
        FileNotFoundError: missing file. ValueError: unreadable file, not a SyncDreamer checkpoint, missing or
            mis-shaped keys (the message names the file and where to get the real one).
    """
    sd = read_checkpoint(path, where=WHERE)
    check_syncdreamer_keys(sd, path)
    if clip_override is not None:
        sd.update(clip_override_to_syncdreamer(read_checkpoint(clip_override, where=CLIP_WHERE)))
    try:
        dims = infer_dims(sd)
    except KeyError as e:
        raise ValueError(f"{path} looks like SyncDreamer but misses key {e}; the file is incomplete; {WHERE}") from e
    with torch.device("meta"):
        model = SyncDreamer(dims)
    buffers = {n for n, _ in model.named_buffers()}
    vdt = vae_dtype or (torch.float32 if dtype == torch.float16 else dtype)
    dev = torch.device(device)  # each memory-mapped tensor goes to the target device first, then is cast there:
    # no full-size CPU copy of the cast weights (and no CPU cast of 1.4 B values) when loading straight to the GPU
    cast = {k: v.to(dev).to(torch.float32 if k in buffers else vdt if k.startswith("first_stage_model.") else dtype)
            for k, v in sd.items()}
    try:
        model.load_state_dict(cast, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: the tensors do not fit SyncDreamer's layout ({str(e)[:600]}); {WHERE}") from e
    return model.eval().requires_grad_(False).to(device)
