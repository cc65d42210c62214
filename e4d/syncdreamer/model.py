"""The SyncDreamer model (``SyncMultiviewDiffusion`` state-dict layout) and its per-step building blocks."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .clip import CLIPImageEncoder
from .dims import SyncDreamerDims
from .layers import timestep_embedding
from .schedule import make_schedule_buffers
from .unet import DepthWiseAttentionUNet
from .vae import SCALE_FACTOR, AutoencoderKL
from .volume import SpatialVolumeNet

TARGET_ELEVATION_DEG = 30.0
"""Elevation of SyncDreamer's 16 generated views (fixed by training)."""


class _UNetWrapper(nn.Module):
    """``model``: holds ``diffusion_model`` (kept as a level so the checkpoint keys match)."""

    def __init__(self, unet: DepthWiseAttentionUNet):
        super().__init__()
        self.diffusion_model = unet


@dataclass
class Condition:
    """Per-sample conditioning computed once from the input image (B = frames)."""

    clip_embed: Tensor
    """``[B, 1, 768]`` CLIP image embedding."""
    x_input: Tensor
    """``[B, 4, h, w]`` posterior sample of the input-view latent, times 0.18215."""
    v_embed: Tensor
    """``[B, N, 4]`` viewpoint embedding of every target view."""


class SyncDreamer(nn.Module):
    """All sub-modules of the official model with the checkpoint's names; sizes from :class:`SyncDreamerDims`."""

    def __init__(self, dims: SyncDreamerDims):
        super().__init__()
        self.dims = dims
        for name, buf in make_schedule_buffers(dims.num_timesteps).items():
            self.register_buffer(name, buf)
        n = dims.volume.view_num
        self.register_buffer("poses", torch.zeros(n, 3, 4))
        self.register_buffer("Ks", torch.zeros(n, 3, 3))
        self.register_buffer("azimuth", torch.zeros(n))
        td = dims.volume.time_dim
        self.time_embed = nn.Sequential(nn.Linear(td, td), nn.SiLU(), nn.Linear(td, td))
        self.first_stage_model = AutoencoderKL(dims.vae)
        self.clip_image_encoder = CLIPImageEncoder(dims.clip)
        self.cc_projection = nn.Linear(dims.cc_in, dims.cc_out)
        self.spatial_volume = SpatialVolumeNet(dims.volume)
        self.model = _UNetWrapper(DepthWiseAttentionUNet(dims.unet))

    # ---- conditioning ------------------------------------------------------------------------------------
    @property
    def unet(self) -> DepthWiseAttentionUNet:
        return self.model.diffusion_model

    @property
    def num_views(self) -> int:
        return self.dims.volume.view_num

    def viewpoint_embedding(self, elevation_rad: Tensor) -> Tensor:
        """SyncDreamer's relative view embedding ``[B, N, 4] = [d_e, sin d_a, cos d_a, 0]`` (zero123 sign flip).

        ``d_e = (-30 deg) - (-elevation)``, ``d_a = azimuth[n] - azimuth[0]`` (wrapped azimuth buffer).
        """
        el = elevation_rad.reshape(-1).float().to(self.azimuth.device)
        d_e = (-math.radians(TARGET_ELEVATION_DEG) - (-el))[:, None].expand(-1, self.num_views)
        d_a = (self.azimuth.float() - self.azimuth[0].float())[None].expand(el.shape[0], -1)
        return torch.stack([d_e, torch.sin(d_a), torch.cos(d_a), torch.zeros_like(d_a)], dim=-1)

    def embed_time(self, t: Tensor) -> Tensor:
        """Timesteps ``[B]`` -> volume-net time embedding ``[B, 256]``."""
        w = self.time_embed[0].weight
        return self.time_embed(timestep_embedding(t, self.dims.volume.time_dim).to(w.dtype))

    def encode_clip(self, image: Tensor) -> Tensor:
        """Image ``[B, 3, H, W]`` in [-1, 1] -> ``[B, 1, 768]`` float32."""
        return self.clip_image_encoder(image)

    def encode_latent(self, image: Tensor, noise: Optional[Tensor] = None,
                      generator: Optional[torch.Generator] = None) -> Tensor:
        """Image in [-1, 1] -> scaled posterior *sample* (not the mode, as the official ``prepare``)."""
        vae = self.first_stage_model
        m = vae.moments(image.to(vae.encoder.conv_in.weight.dtype))
        return vae.sample(m, noise, generator) * SCALE_FACTOR

    def decode_latent(self, z: Tensor) -> Tensor:
        """Scaled latent ``[B, 4, h, w]`` -> image ``[B, 3, 8h, 8w]``."""
        vae = self.first_stage_model
        return vae.decode((z / SCALE_FACTOR).to(vae.post_quant_conv.weight.dtype))

    def condition(self, image: Tensor, elevation_rad: Tensor, noise: Optional[Tensor] = None,
                  generator: Optional[torch.Generator] = None, batch: int = 0) -> Condition:
        """Everything computed once per input frame. ``image [B, 3, 256, 256]`` in [-1, 1]; ``batch`` > 0 encodes
        that many frames at a time (the VAE encoder at 256 px is the memory peak of a small ``view_batch``)."""
        B = image.shape[0]
        step = batch if batch > 0 else B
        clips, lats = [], []
        for s in range(0, B, step):
            clips.append(self.encode_clip(image[s:s + step]))
            lats.append(self.encode_latent(image[s:s + step], None if noise is None else noise[s:s + step],
                                           generator))
        return Condition(torch.cat(clips), torch.cat(lats), self.viewpoint_embedding(elevation_rad))

    # ---- one denoising step ------------------------------------------------------------------------------
    def spatial_volume_for(self, x_t: Tensor, t_embed: Tensor, v_embed: Tensor) -> Tensor:
        """``x_t [B, N, 4, h, w]`` -> spatial volume ``[B, C, V, V, V]`` (from all N noisy views)."""
        return self.spatial_volume.construct_spatial_volume(x_t, t_embed, v_embed, self.poses, self.Ks)

    def target_view_feats(self, cond: Condition, volume: Tensor, t_embed: Tensor, target: Tensor):
        """Context ``[B*TN, 1, 768]`` and frustum volumes for target views ``target [B, TN]``."""
        B, TN = target.shape
        vols = self.spatial_volume.frustum_volumes(volume, t_embed, cond.v_embed, self.poses, self.Ks, target,
                                                   size=cond.x_input.shape[-1])
        v = cond.v_embed[torch.arange(B, device=target.device)[:, None], target].reshape(B * TN, 1, -1)
        clip = cond.clip_embed.repeat_interleave(TN, 0).to(v.dtype)
        w = self.cc_projection.weight
        ctx = self.cc_projection(torch.cat([clip, v], dim=-1).to(w.dtype))
        return ctx, vols

    def unet_eps(self, x_t: Tensor, t: Tensor, context: Tensor, volumes: Dict[int, Tensor], x_concat: Tensor,
                 layout: Optional[Tuple[int, int]] = None) -> Tensor:
        """One UNet pass: ``x_t [B, 4, h, w]``; ``x_concat`` (scaled latent, divided again by 0.18215 here);
        ``layout`` as :meth:`DepthWiseAttentionUNet.forward` (volume rows shared by guidance branches)."""
        x = torch.cat([x_t, (x_concat / SCALE_FACTOR).to(x_t.dtype)], dim=1)
        return self.unet(x, t, context, volumes, layout)

    def predict_eps(self, x_t: Tensor, t: Tensor, context: Tensor, volumes: Dict[int, Tensor], x_concat: Tensor,
                    guidance: str = "decomposed", scales: Sequence[float] = (2.0, 1.0)) -> Tensor:
        """Guided noise prediction for a chunk of M target views (one batched UNet pass).

        * ``"cfg"``: ``eps_u + s (eps_c - eps_u)``, uncond = zero context, zero volumes, zero concat latent
          (``scales[0] == 1`` runs the conditional pass only).
        * ``"decomposed"`` (HarmonyView, as Efficient4D): ``eps_c + s1 (eps_c - eps_uc1) + s2 (eps_c - eps_uc2)``
          with uc1 = (context 0, concat 0, volumes kept), uc2 = (context kept, concat x4, volumes 0).
        * ``"none"``: conditional pass only.
        """
        if guidance == "none" or (guidance == "cfg" and float(scales[0]) == 1.0):
            return self.unet_eps(x_t, t, context, volumes, x_concat)
        z = torch.zeros_like
        if guidance == "cfg":
            eps_c, eps_u = self.unet_eps(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([context, z(context)]),
                                         volumes, torch.cat([x_concat, z(x_concat)]), layout=(1, 1)).chunk(2)
            return eps_u + float(scales[0]) * (eps_c - eps_u)
        if guidance == "decomposed":
            s1, s2 = (float(s) for s in scales)
            eps_c, eps_1, eps_2 = self.unet_eps(
                torch.cat([x_t] * 3), torch.cat([t] * 3), torch.cat([context, z(context), context]),
                volumes, torch.cat([x_concat, z(x_concat), x_concat * 4]), layout=(2, 1)).chunk(3)
            return eps_c + s1 * (eps_c - eps_1) + s2 * (eps_c - eps_2)
        raise ValueError(f"guidance must be 'decomposed', 'cfg' or 'none', got {guidance!r}")
