"""Load SyncDreamer weights: the official Lightning ``syncdreamer-pretrain.ckpt`` (``ckpt['state_dict']``), a bare
state dict, or a .safetensors file -- all through one path, sizes inferred from the shapes (real, reduced, tiny).

Optional CLIP override: OpenAI ``ViT-L-14.pt`` (``visual.*``) or Hugging Face ``clip-vit-large-patch14``
(``vision_model.*`` + ``visual_projection``); the SyncDreamer checkpoint already contains CLIP, so it is never needed.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from torch import Tensor

from .dims import infer_dims
from .model import SyncDreamer

log = logging.getLogger(__name__)

WHERE = ("download syncdreamer-pretrain.ckpt from https://huggingface.co/liuyuan-pal/SyncDreamer and put it in "
         "ComfyUI/models/syncdreamer/")
SENTINELS = ("cc_projection.weight", "spatial_volume.spatial_volume_feats.init_conv.weight",
             "model.diffusion_model.middle_conditions.proj_in.0.weight", "first_stage_model.decoder.conv_in.weight",
             "clip_image_encoder.model.visual.conv1.weight", "poses")


class _Stub:
    """Stand-in for any non-tensor object in a checkpoint's metadata (Lightning hyper-parameters, callbacks...)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return _Stub()


def _stub_pickle_module():
    """A pickle module whose Unpickler resolves only torch's tensor-rebuild functions, storages and plain builtins;
    every other global becomes :class:`_Stub`, so nothing from the file is imported or executed."""
    import pickle
    import types

    allowed_builtins = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
                        ("builtins", "slice"), ("builtins", "complex"), ("builtins", "bytearray")}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in allowed_builtins:
                return super().find_class(module, name)
            if module in ("torch._utils", "torch") and (name.startswith("_rebuild") or name.endswith("Storage")
                                                        or name in ("Size", "device", "dtype")):
                return super().find_class(module, name)
            if module == "torch" and name in ("float16", "float32", "bfloat16", "float64", "int64", "uint8"):
                return super().find_class(module, name)
            return _Stub

    mod = types.ModuleType("e4d_stub_pickle")
    mod.Unpickler = Unpickler
    mod.load = lambda f, **kw: Unpickler(f, **kw).load()
    mod.__name__ = "e4d_stub_pickle"
    return mod


def _torch_load(p: Path):
    try:
        return torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):  # old (non-zip) format cannot be memory-mapped
            raise
        return torch.load(str(p), map_location="cpu", weights_only=True)


def read_state_dict(path: Union[str, Path]) -> Dict[str, Tensor]:
    """Tensors of a .ckpt/.pt/.pth (``weights_only=True``; Lightning ``state_dict`` unwrapped) or .safetensors.

    A Lightning checkpoint may carry metadata objects that ``weights_only=True`` refuses (hyper-parameter
    containers); then it is re-read with a restricted unpickler that rebuilds tensors only and replaces every other
    object by an inert stub (no import, no code from the file runs).
    """
    import pickle

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"SyncDreamer checkpoint not found: {p}; {WHERE}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            try:
                sd = _torch_load(p)
            except pickle.UnpicklingError as e:
                if "weights_only" not in str(e) and "Unsupported global" not in str(e):
                    raise
                log.info("%s: metadata not loadable with weights_only=True; reading tensors only", p.name)
                # Not a full pickle load: the stub pickle module rebuilds tensors only and replaces every other
                # global with an inert placeholder, so nothing from the file runs (tests/test_syncdreamer_model.py
                # proves a malicious __reduce__ is not executed). Lightning metadata (hparams objects) needs this.
                sd = torch.load(str(p), map_location="cpu", weights_only=False, pickle_module=_stub_pickle_module())
    except Exception as e:  # noqa: BLE001 -- any reader failure means an unusable file; re-raised with context
        raise ValueError(f"could not read {p} ({type(e).__name__}: {str(e)[:300]}); the file is corrupt, truncated "
                         f"or not a PyTorch/safetensors checkpoint; {WHERE}") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{p} holds a {type(sd).__name__}, not a state dict of tensors; {WHERE}")
    return dict(sd)


def read_clip_override(path: Union[str, Path]) -> Dict[str, Tensor]:
    """Tensors of a CLIP override file. OpenAI's ``ViT-L-14.pt`` is a TorchScript archive, which only
    ``torch.jit.load`` reads (done only for this optional, user-chosen file); anything else goes through
    :func:`read_state_dict`."""
    import zipfile

    p = Path(path)
    if p.is_file() and zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            if any(n.endswith("constants.pkl") for n in z.namelist()):
                return dict(torch.jit.load(str(p), map_location="cpu").state_dict())
    return read_state_dict(p)


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
    sd = read_state_dict(path)
    check_syncdreamer_keys(sd, path)
    if clip_override is not None:
        sd.update(clip_override_to_syncdreamer(read_clip_override(clip_override)))
    try:
        dims = infer_dims(sd)
    except KeyError as e:
        raise ValueError(f"{path} looks like SyncDreamer but misses key {e}; the file is incomplete; {WHERE}") from e
    with torch.device("meta"):
        model = SyncDreamer(dims)
    buffers = {n for n, _ in model.named_buffers()}
    vdt = vae_dtype or (torch.float32 if dtype == torch.float16 else dtype)
    cast = {k: (v.float() if k in buffers else v.to(vdt if k.startswith("first_stage_model.") else dtype))
            for k, v in sd.items()}
    try:
        model.load_state_dict(cast, strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: the tensors do not fit SyncDreamer's layout ({str(e)[:600]}); {WHERE}") from e
    return model.eval().requires_grad_(False).to(device)
