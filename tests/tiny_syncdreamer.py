"""A tiny random SyncDreamer in the official checkpoint format, for CI workflows through the real loader.

``write_tiny_syncdreamer(folder)`` writes ``syncdreamer-tiny.ckpt`` = ``torch.save({'state_dict': ...})`` (the
Lightning layout of ``syncdreamer-pretrain.ckpt``), same key names, tiny shapes (UNet 32 ch without level
transformers, volumes 8..16 ch, VAE 32 ch, CLIP width 64 / 1 layer / patch 32). Loads in well under a second.
Use it with 64 px frames (K=2, 1-2 steps: ~1-2 s on one CPU thread); at 256 px one step takes ~30 s.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Union

import torch


def tiny_dims():
    from e4d.syncdreamer.dims import CLIPDims, SyncDreamerDims, UNetDims, VAEDims, VolumeDims

    return SyncDreamerDims(
        # no spatial transformers outside the middle block (attention_resolutions=[] is a valid official config):
        # 2x faster on CPU; the fixture parity test covers the transformers
        unet=UNetDims(model_channels=32, channel_mult=(1, 1, 1, 1), attention_levels=(), volume_dims=(8, 8, 16, 16)),
        volume=VolumeDims(encoder_run_dim=8, encoder_out_dim=8, spatial_dims=(8, 8, 16, 16), frustum_in_dim=8,
                          frustum_dims=(8, 8, 16, 16)),
        vae=VAEDims(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1),
        clip=CLIPDims(width=64, layers=1, heads=1, patch=32, image_size=224, vocab_size=8, text_width=64))


def tiny_state_dict(seed: int = 0) -> dict:
    """Random weights (PyTorch default init, scaled down so sampling stays finite) + the real camera buffers."""
    from e4d.cameras import syncdreamer16
    from e4d.syncdreamer.model import SyncDreamer

    torch.manual_seed(seed)
    model = SyncDreamer(tiny_dims())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "diffusion_model.out." in name:
                p.mul_(0.1)  # keep the predicted noise small: a random tiny UNet otherwise diverges over steps
        cams = syncdreamer16(256)
        model.poses.copy_(cams.w2c[:, :3, :4])
        model.Ks.copy_(cams.K)
        az = torch.deg2rad(cams.azimuth.double()) if cams.azimuth is not None else \
            torch.arange(16, dtype=torch.float64) * (2 * math.pi / 16)
        model.azimuth.copy_(((az + math.pi) % (2 * math.pi) - math.pi).float())
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_tiny_syncdreamer(folder: Union[str, Path]) -> Path:
    """Write ``folder/syncdreamer-tiny.ckpt`` (Lightning-style ``{'state_dict': ...}``) and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "syncdreamer-tiny.ckpt"
    torch.save({"state_dict": tiny_state_dict(), "epoch": 0, "global_step": 0}, path)
    return path
