"""Model sizes, inferred from the shapes of a SyncDreamer state dict (so real, reduced and tiny models share code)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Tuple

from torch import Tensor

UNET = "model.diffusion_model."
VOL = "spatial_volume."
VAE = "first_stage_model."
CLIP = "clip_image_encoder.model."


@dataclass
class UNetDims:
    """Sizes of the DepthWiseAttention UNet (real: 320, (1,2,4,4), 2 res blocks, attention at ds 1/2/4)."""

    in_channels: int = 8
    """UNet input channels: noisy latent (4) + concatenated input-view latent (4)."""
    out_channels: int = 4
    """Predicted noise channels."""
    model_channels: int = 320
    """Base width."""
    channel_mult: Tuple[int, ...] = (1, 2, 4, 4)
    """Width multiplier per resolution level."""
    num_res_blocks: int = 2
    """ResBlocks per level on the way down (one more on the way up)."""
    attention_levels: Tuple[int, ...] = (0, 1, 2)
    """Levels with a SpatialTransformer (``attention_resolutions`` [4,2,1] -> levels 0,1,2)."""
    num_heads: int = 8
    """Heads of the spatial transformers (not visible in shapes; SyncDreamer uses 8)."""
    transformer_depth: int = 1
    """BasicTransformerBlocks per SpatialTransformer."""
    context_dim: int = 768
    """Cross-attention context width (output of ``cc_projection``)."""
    volume_dims: Tuple[int, int, int, int] = (64, 128, 256, 512)
    """Channels of the frustum-volume levels read by the depth transformers (widths 32, 16, 8, 4)."""


@dataclass
class VolumeDims:
    """Sizes of the SpatialVolumeNet (constants of the official constructor, except the channel widths)."""

    view_num: int = 16
    time_dim: int = 256
    view_dim: int = 4
    encoder_run_dim: int = 16
    encoder_out_dim: int = 16
    spatial_dims: Tuple[int, int, int, int] = (64, 128, 256, 512)
    frustum_in_dim: int = 64
    frustum_dims: Tuple[int, int, int, int] = (64, 128, 256, 512)
    input_image_size: int = 256
    frustum_depth: int = 48
    """Depth samples of each target-view frustum volume."""
    spatial_size: int = 32
    """Voxels per axis of the spatial volume."""
    spatial_length: float = 0.5
    """Half side of the spatial volume (world units)."""
    frustum_length: float = 0.86603
    """Half depth range of the frustum around the camera distance (sqrt(3)/2)."""
    camera_distance: float = 1.5


@dataclass
class VAEDims:
    ch: int = 128
    ch_mult: Tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    in_channels: int = 3
    out_ch: int = 3
    attn_levels: Tuple[int, ...] = ()
    """Levels with attention blocks besides the mid block (none in SD-1.x's KL-f8)."""


@dataclass
class CLIPDims:
    width: int = 1024
    layers: int = 24
    heads: int = 16
    patch: int = 14
    image_size: int = 224
    embed_dim: int = 768
    # leftovers of the deleted text tower that the official state dict still holds
    vocab_size: int = 49408
    text_width: int = 768
    context_length: int = 77


@dataclass
class SyncDreamerDims:
    unet: UNetDims = field(default_factory=UNetDims)
    volume: VolumeDims = field(default_factory=VolumeDims)
    vae: VAEDims = field(default_factory=VAEDims)
    clip: CLIPDims = field(default_factory=CLIPDims)
    cc_in: int = 772
    cc_out: int = 768
    num_timesteps: int = 1000


def _count(sd: Mapping[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def _shape(sd: Mapping[str, Tensor], key: str):
    if key not in sd:
        raise KeyError(key)
    return tuple(sd[key].shape)


def infer_unet(sd: Mapping[str, Tensor]) -> UNetDims:
    w0 = _shape(sd, UNET + "input_blocks.0.0.weight")
    mc, cin = w0[0], w0[1]
    down_idx = sorted(int(m.group(1)) for k in sd
                      for m in [re.match(re.escape(UNET) + r"input_blocks\.(\d+)\.0\.op\.weight$", k)] if m)
    nr = down_idx[0] - 1 if down_idx else _count(sd, re.escape(UNET) + r"input_blocks\.(\d+)\.") - 1
    levels = len(down_idx) + 1
    mult, attn = [], []
    for lvl in range(levels):
        first = 1 + lvl * (nr + 1)
        mult.append(_shape(sd, f"{UNET}input_blocks.{first}.0.out_layers.3.weight")[0] // mc)
        if f"{UNET}input_blocks.{first}.1.proj_in.weight" in sd:
            attn.append(lvl)
    depth = _count(sd, re.escape(UNET) + r"input_blocks\.1\.1\.transformer_blocks\.(\d+)\.") or 1
    ctx_key = f"{UNET}middle_block.1.transformer_blocks.0.attn2.to_k.weight"
    vd = tuple(_shape(sd, f"{UNET}output_conditions.{i}.proj_context.0.weight")[0] for i in (5, 2, 0)) + \
        (_shape(sd, f"{UNET}middle_conditions.proj_context.0.weight")[0],)
    return UNetDims(in_channels=cin, out_channels=_shape(sd, UNET + "out.2.weight")[0], model_channels=mc,
                    channel_mult=tuple(mult), num_res_blocks=nr, attention_levels=tuple(attn),
                    transformer_depth=depth, context_dim=_shape(sd, ctx_key)[1], volume_dims=vd)


def infer_volume(sd: Mapping[str, Tensor]) -> VolumeDims:
    sv, fv, te = VOL + "spatial_volume_feats.", VOL + "frustum_volume_feats.", VOL + "target_encoder."
    run = _shape(sd, te + "init_conv.weight")[0]
    out = _shape(sd, te + "final_out.2.weight")[0]
    view_num = _shape(sd, "poses")[0]
    sin = _shape(sd, sv + "init_conv.weight")
    if sin[1] != out * view_num:
        raise ValueError(f"spatial volume input {sin[1]} != encoder output {out} x {view_num} views")
    return VolumeDims(
        view_num=view_num, time_dim=_shape(sd, "time_embed.0.weight")[0],
        view_dim=_shape(sd, te + "out_conv0.view_embed.weight")[1], encoder_run_dim=run, encoder_out_dim=out,
        spatial_dims=(sin[0],) + tuple(_shape(sd, sv + f"conv{i}.conv.weight")[0] for i in (1, 3, 5)),
        frustum_in_dim=_shape(sd, fv + "conv0.weight")[1],
        frustum_dims=(_shape(sd, fv + "conv0.weight")[0],) + tuple(_shape(sd, fv + f"conv{i}.conv.weight")[0]
                                                                  for i in (1, 3, 5)))


def infer_vae(sd: Mapping[str, Tensor]) -> VAEDims:
    e = VAE + "encoder."
    ch = _shape(sd, e + "conv_in.weight")[0]
    levels = _count(sd, re.escape(e) + r"down\.(\d+)\.")
    mult = tuple(_shape(sd, f"{e}down.{i}.block.0.conv1.weight")[0] // ch for i in range(levels))
    nr = _count(sd, re.escape(e) + r"down\.0\.block\.(\d+)\.")
    attn = tuple(i for i in range(levels) if f"{e}down.{i}.attn.0.q.weight" in sd)
    return VAEDims(ch=ch, ch_mult=mult, num_res_blocks=nr, z_channels=_shape(sd, VAE + "decoder.conv_in.weight")[1],
                   embed_dim=_shape(sd, VAE + "post_quant_conv.weight")[1],
                   in_channels=_shape(sd, e + "conv_in.weight")[1],
                   out_ch=_shape(sd, VAE + "decoder.conv_out.weight")[0], attn_levels=attn)


def infer_clip(sd: Mapping[str, Tensor], prefix: str = CLIP) -> CLIPDims:
    conv = _shape(sd, prefix + "visual.conv1.weight")
    width, patch = conv[0], conv[2]
    grid = int(round((_shape(sd, prefix + "visual.positional_embedding")[0] - 1) ** 0.5))
    tok = sd.get(prefix + "token_embedding.weight")
    pos = sd.get(prefix + "positional_embedding")
    return CLIPDims(width=width, layers=_count(sd, re.escape(prefix) + r"visual\.transformer\.resblocks\.(\d+)\."),
                    heads=max(1, width // 64), patch=patch, image_size=grid * patch,
                    embed_dim=_shape(sd, prefix + "visual.proj")[1],
                    vocab_size=tok.shape[0] if tok is not None else 0,
                    text_width=tok.shape[1] if tok is not None else 0,
                    context_length=pos.shape[0] if pos is not None else 0)


def infer_dims(sd: Mapping[str, Tensor]) -> SyncDreamerDims:
    """All sizes from a (prefix-stripped) SyncDreamer state dict; raises KeyError naming a missing sentinel key."""
    cc = _shape(sd, "cc_projection.weight")
    return SyncDreamerDims(unet=infer_unet(sd), volume=infer_volume(sd), vae=infer_vae(sd), clip=infer_clip(sd),
                           cc_in=cc[1], cc_out=cc[0], num_timesteps=_shape(sd, "betas")[0])
