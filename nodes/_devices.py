"""Devices and precisions of the node pack, always as ComfyUI decides them (``--cpu``, ``--gpu-only``,
``--force-fp32`` ...), asked inside ``execute`` and never at import time.

``comfy.model_management`` is imported inside the functions; outside ComfyUI (a plain ``python`` with the core
only) they fall back to CUDA-or-CPU so helpers stay importable and testable.
"""
from __future__ import annotations

from typing import Optional

import torch

DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
"""Explicit weight precisions a loader offers besides ``auto``."""

DTYPE_CHOICES: tuple[str, ...] = ("auto", *DTYPES)
"""Options of every loader's ``dtype`` widget (``auto`` first: ComfyUI's policy for the device)."""


def _mm():
    try:
        import comfy.model_management as mm
        return mm
    except ImportError:
        return None


def get_torch_device() -> torch.device:
    """The compute device ComfyUI chose; CUDA-or-CPU outside ComfyUI."""
    mm = _mm()
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def intermediate_device() -> torch.device:
    """Where IMAGE/MASK tensors between nodes live (CPU in stock ComfyUI)."""
    mm = _mm()
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


def offload_device() -> torch.device:
    """Where ComfyUI keeps idle models (CPU unless it runs with --gpu-only / --highvram)."""
    mm = _mm()
    return mm.unet_offload_device() if mm is not None else torch.device("cpu")


def should_use_fp16(device: Optional[torch.device] = None, model_params: int = 0) -> bool:
    """ComfyUI's fp16 policy for ``device``; outside ComfyUI: True on CUDA."""
    mm = _mm()
    device = get_torch_device() if device is None else device
    if mm is not None:
        return bool(mm.should_use_fp16(device, model_params=model_params))
    return device.type == "cuda"


def should_use_bf16(device: Optional[torch.device] = None, model_params: int = 0) -> bool:
    """ComfyUI's bf16 policy for ``device``; outside ComfyUI: True on CUDA devices that support bf16."""
    mm = _mm()
    device = get_torch_device() if device is None else device
    if mm is not None:
        return bool(mm.should_use_bf16(device, model_params=model_params))
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def pick_dtype(choice: str, device: Optional[torch.device] = None, prefer_bf16: bool = False) -> torch.dtype:
    """The weight dtype of a loader's ``dtype`` widget value.

    ``auto``: fp32 off CUDA; on CUDA bf16 when ``prefer_bf16`` and ComfyUI allows it, else fp16 when ComfyUI
    allows it, else fp32. Other values map through :data:`DTYPES`.
    """
    if choice != "auto":
        if choice not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPE_CHOICES)}, got {choice!r}")
        return DTYPES[choice]
    device = torch.device(get_torch_device() if device is None else device)
    if device.type != "cuda":
        return torch.float32
    if prefer_bf16 and should_use_bf16(device):
        return torch.bfloat16
    return torch.float16 if should_use_fp16(device) else torch.float32
