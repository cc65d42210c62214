"""Random RIFE checkpoints in the official file formats, for tests and CI workflows.

Real architecture shapes (a few MB to 21 MB in fp32), random initialisation, saved the way users get them:
ComfyUI-Frame-Interpolation's ``rife47.pth`` (plain dict, bare keys) or an official ``flownet.pkl`` (plain dict,
``module.`` prefix; v3.6 also carries the unused ``block_tea.*`` teacher block, as Efficient4D's file does).
"""
from __future__ import annotations

from pathlib import Path

import torch


def tiny_rife_state_dict(version: str = "4.7", seed: int = 0) -> dict[str, torch.Tensor]:
    """Bare-key state dict of a random network of ``version`` (3.6, 4.6, 4.7, 4.9, 4.17, 4.22, 4.22.lite, 4.25, 4.26).

    Betas are drawn in [0.5, 1.5] and the last transposed convs amplified (as the parity fixtures do) so flows and
    masks are far from zero and tests can tell versions apart.
    """
    from e4d.rife.blocks import IFBlockHD
    from e4d.rife.loader import random_model

    net = random_model(version, seed)
    g = torch.Generator().manual_seed(seed + 1)
    sd = {}
    for k, v in net.state_dict().items():
        v = v.clone()
        if k.endswith(".beta"):
            v = torch.rand(v.shape, generator=g) + 0.5
        elif ".lastconv.0." in k:
            v = v * 4
        elif k.endswith("conv1.2.weight") or k.endswith("conv1.2.bias"):
            v = v * 20
        elif k.endswith("conv2.2.weight") or k.endswith("conv2.2.bias"):
            v = v * 40
        sd[k] = v
    if version in ("3.6", "3.6hd"):
        tea = IFBlockHD(14, 90)  # teacher block: in the official file, never used at inference
        sd.update({f"block_tea.{k}": v.detach().clone() for k, v in tea.state_dict().items()})
    return sd


def write_tiny_rife(folder, version: str = "4.7", fmt: str = "auto", seed: int = 0) -> Path:
    """Write a random RIFE checkpoint into ``folder`` and return its path.

    Args:
        version: RIFE release (see :func:`tiny_rife_state_dict`).
        fmt: "comfy" -> ``rife<digits>.pth`` with bare keys; "official" -> ``flownet.pkl`` with ``module.`` keys;
            "safetensors" -> ``rife<digits>.safetensors``; "auto" = official for 3.6, comfy for 4.x.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = tiny_rife_state_dict(version, seed)
    if fmt == "auto":
        fmt = "official" if version.startswith("3.6") else "comfy"
    digits = version.replace(".", "").replace("hd", "")
    if fmt == "official":
        path = folder / "flownet.pkl"
        torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    elif fmt == "comfy":
        path = folder / f"rife{digits}.pth"
        torch.save(sd, path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        path = folder / f"rife{digits}.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        raise ValueError(f"fmt must be auto, comfy, official or safetensors, got {fmt!r}")
    return path
