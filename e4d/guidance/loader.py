"""Load Zero123 / Stable Zero123 as frozen torch modules, without running any third-party code.

Two layouts are accepted:

* a **diffusers folder** (``ashawkey/zero123-xl-diffusers``, ``ashawkey/stable-zero123-diffusers``,
  ``bennyguo/zero123-xl-diffusers``, ``kxic/zero123-xl``): each component is loaded with ``subfolder=``; the
  repo's custom ``clip_camera_projection`` class (``zero123.py``, which ``DiffusionPipeline`` would execute under
  ``trust_remote_code=True``) is replaced by our own :class:`CameraProjection` loaded from its weight file;
* the **single file** ``stable_zero123.ckpt`` (``stabilityai/stable-zero123``) that ComfyUI users keep in
  ``models/checkpoints``: converted in memory by :mod:`e4d.guidance.convert`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..checkpoints import read_checkpoint
from ..ldm.convert import default_image_processor, from_pretrained_dtype, weights_variant
from .components import (SD_SCHEDULER, WHERE_TO_GET, CameraProjection, Zero123Components,
                         camera_projection_from_state_dict, check_zero123_shapes, freeze)
from .convert import load_zero123_single_file


def load_camera_projection(folder: Path) -> CameraProjection:
    """Our own module from ``clip_camera_projection/`` (or ``cc_projection/``) weights; no remote code."""
    for sub in ("clip_camera_projection", "cc_projection"):
        d = folder / sub
        files = sorted(d.glob("*.safetensors")) or sorted(d.glob("*.bin"))
        if files:
            return camera_projection_from_state_dict(read_checkpoint(files[0], where=WHERE_TO_GET), str(files[0]))
    raise FileNotFoundError(f"{folder} has no clip_camera_projection/ weights (diffusion_pytorch_model.safetensors); "
                            f"it does not look like a zero123 diffusers folder; {WHERE_TO_GET}")


def load_zero123_folder(folder, dtype: torch.dtype = torch.float32, device=None) -> Zero123Components:
    """Load a zero123 diffusers folder component by component (``subfolder=``; never ``trust_remote_code``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"zero123 folder {folder} does not exist; {WHERE_TO_GET}")
    missing = [c for c in ("unet", "vae", "image_encoder") if not (folder / c / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing} (each needs config.json + weights); {WHERE_TO_GET}")
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **from_pretrained_dtype(dtype),
                                                    variant=weights_variant(folder / "unet", dtype))
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **from_pretrained_dtype(dtype),
                                            variant=weights_variant(folder / "vae", dtype))
        enc = CLIPVisionModelWithProjection.from_pretrained(folder, subfolder="image_encoder", dtype=dtype)
    except OSError as e:
        raise FileNotFoundError(f"cannot load zero123 weights from {folder}: {e}; {WHERE_TO_GET}") from e
    proj = load_camera_projection(folder)
    sched_file = folder / "scheduler" / "scheduler_config.json"
    sched = json.loads(sched_file.read_text()) if sched_file.is_file() else dict(SD_SCHEDULER)
    proc = (CLIPImageProcessor.from_pretrained(folder, subfolder="feature_extractor")
            if (folder / "feature_extractor").is_dir() else default_image_processor())
    check_zero123_shapes(unet, enc, proj, str(folder))
    freeze(unet, vae, enc, proj)
    comps = Zero123Components(unet, vae, enc, proj, sched, proc, str(folder))
    return comps.to(device=device, dtype=dtype)


def load_zero123(path, dtype: torch.dtype = torch.float32, device=None) -> Zero123Components:
    """Load zero123 from a diffusers folder or from a single ``.ckpt`` / ``.safetensors`` file (ldm layout).

    Raises:
        FileNotFoundError: the path does not exist or lacks a component (message says where to get the model).
        ValueError: the file is not a zero123 checkpoint.
    """
    p = Path(path)
    if p.is_dir():
        return load_zero123_folder(p, dtype, device)
    if p.is_file():
        return load_zero123_single_file(p, dtype, device)
    raise FileNotFoundError(f"zero123 model {p} not found; {WHERE_TO_GET}")


def guess_variant(path) -> str:
    """``stable-zero123`` when the file or folder name says so, else ``zero123-xl`` (weights look identical)."""
    name = Path(path).name.lower().replace("_", "-")
    return "stable-zero123" if "stable" in name else "zero123-xl"
