"""Tensor conversions between ComfyUI types (IMAGE ``[B, H, W, C]`` / MASK ``[B, H, W]``, float 0..1) and the core.

Nodes use them as ``T.image_in`` etc. (``from . import _tensors as T``).
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import torch
from torch import Tensor

from . import _devices

log = logging.getLogger("efficient4d")


def image_in(image: Tensor, name: str = "image") -> tuple[Tensor, Optional[Tensor]]:
    """ComfyUI IMAGE ``[B, H, W, 3|4]`` → (rgb ``[B, H, W, 3]`` float32, alpha ``[B, H, W]`` or None).

    A single ``[H, W, C]`` image is promoted to a batch of one. Raises TypeError/ValueError naming ``name``.
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"{name} must be a ComfyUI IMAGE tensor [B, H, W, C], got {type(image).__name__}")
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[-1] not in (3, 4) or image.shape[0] < 1:
        raise ValueError(f"{name} must be an IMAGE [B, H, W, 3 or 4], got shape {tuple(image.shape)}")
    x = image.float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf; check the node that produced it")
    rgb = x[..., :3].clamp(0, 1)
    alpha = x[..., 3].clamp(0, 1) if x.shape[-1] == 4 else None
    return rgb, alpha


def mask_in(mask: Optional[Tensor], batch: int, height: int, width: int, name: str = "mask") -> Optional[Tensor]:
    """ComfyUI MASK ``[B, H, W]`` (or ``[H, W]``, ``[B, 1, H, W]``) → ``[batch, H, W]`` float32 in [0, 1].

    A single mask is repeated over the batch; a size mismatch is an error (resize upstream), never silent.
    """
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a ComfyUI MASK tensor [B, H, W], got {type(mask).__name__}")
    m = mask.float()
    if m.ndim == 2:
        m = m[None]
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != 3:
        raise ValueError(f"{name} must be a MASK [B, H, W], got shape {tuple(mask.shape)}")
    if tuple(m.shape[1:]) != (height, width):
        raise ValueError(f"{name} is {m.shape[2]}x{m.shape[1]} but the images are {width}x{height}; "
                         "resize the mask (or the images) so they match")
    if m.shape[0] == 1 and batch > 1:
        m = m.expand(batch, height, width)
    if m.shape[0] != batch:
        raise ValueError(f"{name} has {m.shape[0]} masks for {batch} images; give one mask or one per image")
    return m.clamp(0, 1).contiguous()


def image_out(rgb: Tensor, alpha: Optional[Tensor] = None) -> Tensor:
    """``[B, H, W, 3]`` (+ optional alpha ``[B, H, W]`` → RGBA) → ComfyUI IMAGE on the intermediate device."""
    if rgb.ndim == 3:
        rgb = rgb[None]
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"image_out expects [B, H, W, 3], got {tuple(rgb.shape)}")
    x = rgb.detach().float().clamp(0, 1)
    if alpha is not None:
        x = torch.cat([x, alpha.detach().float().clamp(0, 1).reshape(*x.shape[:3], 1)], -1)
    return x.to(_devices.intermediate_device()).contiguous()


def mask_out(mask: Tensor) -> Tensor:
    """``[B, H, W]`` (or ``[B, H, W, 1]``) → ComfyUI MASK on the intermediate device."""
    if mask.ndim == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"mask_out expects [B, H, W], got {tuple(mask.shape)}")
    return mask.detach().float().clamp(0, 1).to(_devices.intermediate_device()).contiguous()


def parse_floats(text: str, name: str) -> list[float]:
    """Parse a widget like ``"0, 90, 180"`` into floats, with an error naming the widget."""
    items = [s for s in str(text).replace(";", ",").replace(" ", ",").split(",") if s.strip()]
    try:
        values = [float(s) for s in items]
    except ValueError as e:
        raise ValueError(f"{name} must be numbers separated by commas, e.g. '0, 90, 180', got {text!r}") from e
    if not all(math.isfinite(v) for v in values):  # float() accepts 'nan' and 'inf'
        raise ValueError(f"{name} must be finite numbers, e.g. '0, 90, 180', got {text!r}")
    return values


def informative_alpha(alpha: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``alpha``, or None when it carries no coverage information: the core's one all-ones rule
    (:func:`e4d.masks.informative_alpha`; Load Video's MASK of a video without alpha is all ones), logged."""
    from e4d.masks import informative_alpha as core_rule

    out = core_rule(alpha)
    if alpha is not None and out is None:
        log.info("Efficient4D: the mask is all ones (no alpha in the source); treating it as absent")
    return out


def object_alpha(rgb: Tensor, alpha: Optional[Tensor], mask: Optional[Tensor], invert: bool = False,
                 name: str = "mask") -> Optional[Tensor]:
    """The object coverage ``[B, H, W]`` of frames ``rgb [B, H, W, 3]``: the MASK input when connected, else the
    RGBA ``alpha``; ``1 - x`` with ``invert``; None when there is none or it carries no information
    (:func:`informative_alpha`). Every node taking frames + mask decides it here, once."""
    m = mask_in(mask, rgb.shape[0], rgb.shape[1], rgb.shape[2], name)
    if m is not None:
        alpha = m
    if alpha is not None and invert:
        alpha = 1.0 - alpha
    return informative_alpha(alpha)


ZUP_TO_YUP = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
"""Our world (right-handed, +Z up) into ComfyUI's 3D world (three.js: right-handed, +Y up): (x, y, z) ->
(x, z, -y), a rotation by -90 degrees about +X. Core SPLAT outputs use it; core cameras come back through its
transpose."""


def yup_to_zup(v: Tensor) -> Tensor:
    """Vectors ``[..., 3]`` of ComfyUI's +Y-up 3D world in our +Z-up world (inverse of :data:`ZUP_TO_YUP`)."""
    return v @ ZUP_TO_YUP.to(v.dtype)
