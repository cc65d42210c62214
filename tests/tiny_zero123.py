"""Tiny random Zero123 models in the official layouts, for CPU tests and the CI workflow tests.

Configs are the ones in ``shared/reference/guidance/tiny_zero123`` (copied here so the module works without the
shared folder): real class names and structure, 32-64 channels, 256 px renders -> 32² latents like the real model.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

UNET = {"sample_size": 8, "in_channels": 8, "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32, "attention_head_dim": 8,
        "norm_num_groups": 32, "use_linear_projection": False}
VAE = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
       "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [8, 8, 16, 16], "layers_per_block": 1,
       "norm_num_groups": 4, "latent_channels": 4, "sample_size": 64, "scaling_factor": 0.18215}
CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
        "image_size": 224, "patch_size": 32, "num_channels": 3, "projection_dim": 32, "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-05}
MODEL_INDEX = {"_class_name": "Zero123Pipeline", "clip_camera_projection": ["zero123", "CLIPCameraProjection"],
               "feature_extractor": ["transformers", "CLIPImageProcessor"],
               "image_encoder": ["transformers", "CLIPVisionModelWithProjection"], "requires_safety_checker": False,
               "safety_checker": [None, None], "scheduler": ["diffusers", "DDIMScheduler"],
               "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}


def hide_torchvision_stub() -> None:
    """Make transformers treat the import-only ``torchvision`` stub of ``tests/comfy_env.py`` as absent.

    The node tests append that stub to ``sys.path`` at collection time (ComfyUI only needs ``import torchvision``
    to succeed); transformers then believes torchvision exists and ``transformers.image_utils`` fails with
    "cannot import name 'InterpolationMode'", which breaks every CLIP image processor / diffusers pipeline in the
    same pytest session. A real torchvision is left alone. Idempotent.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("torchvision")
    except ValueError:
        return
    if spec is None or "stubs" not in str(spec.origin or ""):
        return
    import transformers.utils.import_utils as tu

    if getattr(tu._is_package_available, "_e4d_hides_stub", False):
        return
    real = tu._is_package_available

    def patched(pkg_name: str, return_version: bool = False):
        if pkg_name == "torchvision":
            return False, ("N/A" if return_version else None)
        return real(pkg_name, return_version)

    patched._e4d_hides_stub = True
    tu._is_package_available = patched
    for fn in (getattr(tu, "is_torchvision_available", None), getattr(tu, "is_torchvision_v2_available", None)):
        if hasattr(fn, "cache_clear"):
            fn.cache_clear()
    try:
        import diffusers.utils.import_utils as du

        du._torchvision_available = False
    except ImportError:
        pass


def tiny_zero123_modules(seed: int = 0):
    """(unet, vae, image_encoder, camera_projection) with deterministic random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from e4d.guidance.components import CameraProjection

    hide_torchvision_stub()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(UNET)
    vae = AutoencoderKL.from_config(VAE)
    enc = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP))
    proj = CameraProjection(32, 4)
    return unet, vae, enc, proj


def write_tiny_zero123(folder, seed: int = 0) -> Path:
    """A zero123 diffusers folder in the layout of ``ashawkey/zero123-xl-diffusers`` (random weights, ~1 M params)."""
    from diffusers import DDIMScheduler
    from safetensors.torch import save_file

    from e4d.guidance.components import SD_SCHEDULER
    from e4d.ldm.convert import default_image_processor

    hide_torchvision_stub()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet, vae, enc, proj = tiny_zero123_modules(seed)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    enc.save_pretrained(folder / "image_encoder")
    d = folder / "clip_camera_projection"
    d.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in proj.state_dict().items()}, str(d / "diffusion_pytorch_model.safetensors"))
    (d / "config.json").write_text(json.dumps({"_class_name": "CLIPCameraProjection", "embedding_dim": 32,
                                               "additional_embeddings": 4}))
    DDIMScheduler.from_config(SD_SCHEDULER).save_pretrained(folder / "scheduler")
    default_image_processor().save_pretrained(folder / "feature_extractor")
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=1))
    return folder


def write_tiny_zero123_single_file(path, seed: int = 0) -> Path:
    """A ``stable_zero123.ckpt``-style single file (original ldm key layout, ``{"state_dict": ...}``) holding the
    same weights as :func:`write_tiny_zero123` with the same seed."""
    from e4d.guidance.convert import zero123_to_ldm_state_dict

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    unet, vae, enc, proj = tiny_zero123_modules(seed)
    sd = zero123_to_ldm_state_dict(unet, vae, enc, proj)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({"state_dict": sd}, str(path))
    return path
