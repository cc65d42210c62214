"""SGM single-file SVD checkpoints: real key pattern, round trip through the converter, config inference, errors."""
from __future__ import annotations

import pytest
import torch

from e4d.ldm.convert import infer_unet_config, infer_vae_config, strip
from e4d.ldm.keymap import unet_key_map
from e4d.svd.convert import svd_from_single_file, svd_to_single_file

from tiny_svd import UNET, VAE, tiny_svd_modules
from tiny_zero123 import hide_torchvision_stub  # noqa: E402


@pytest.fixture(autouse=True)
def _no_torchvision_stub():
    hide_torchvision_stub()  # see tests/tiny_zero123.py: ComfyUI's CPU stub confuses transformers


@pytest.fixture(scope="module")
def modules():
    return tiny_svd_modules()


@pytest.fixture(scope="module")
def single(modules):
    return svd_to_single_file(*modules)


def test_key_names_follow_sgm(single):
    for k in ("model.diffusion_model.input_blocks.1.1.time_stack.0.attn1.to_q.weight",
              "model.diffusion_model.input_blocks.1.0.time_stack.in_layers.2.weight",
              "model.diffusion_model.input_blocks.1.0.time_mixer.mix_factor",
              "model.diffusion_model.input_blocks.1.1.time_pos_embed.0.weight",
              "model.diffusion_model.input_blocks.2.0.op.weight",
              "model.diffusion_model.middle_block.1.time_mixer.mix_factor",
              "model.diffusion_model.output_blocks.1.1.conv.weight",  # up block 0 has no attention -> .1.conv
              "model.diffusion_model.output_blocks.2.1.proj_in.weight",
              "model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.time_embed.2.bias",
              "first_stage_model.decoder.conv_out.time_mix_conv.weight", "first_stage_model.decoder.mid.block_1.mix_factor",
              "first_stage_model.decoder.up.0.block.0.time_stack.in_layers.2.weight",
              "first_stage_model.decoder.up.3.upsample.conv.weight", "first_stage_model.decoder.mid.attn_1.proj_out.weight",
              "first_stage_model.encoder.down.3.block.0.conv1.weight",
              "conditioner.embedders.0.open_clip.model.visual.transformer.resblocks.0.attn.in_proj_weight",
              "conditioner.embedders.0.open_clip.model.visual.proj",
              "conditioner.embedders.0.open_clip.model.visual.positional_embedding"):
        assert k in single, k
    assert not any(k.startswith("first_stage_model.quant_conv") for k in single)
    assert single["first_stage_model.decoder.conv_out.time_mix_conv.weight"].shape[2:] == (3, 1, 1)
    assert single["conditioner.embedders.0.open_clip.model.visual.proj"].shape == (32, 32)


def test_real_svd_unet_key_map_on_meta():
    """The key map on the real SVD-XT UNet: well-known SGM names appear, and the map is one-to-one."""
    from accelerate import init_empty_weights
    from diffusers import UNetSpatioTemporalConditionModel

    from e4d.svd.convert import REAL_SVD_UNET

    with init_empty_weights():
        unet = UNetSpatioTemporalConditionModel(**REAL_SVD_UNET)
    km = unet_key_map(unet.state_dict().keys(), 2)
    names = set(km.values())
    assert len(names) == len(km)
    for k in ("input_blocks.3.0.op.weight", "input_blocks.4.1.time_stack.0.attn2.to_k.weight",
              "output_blocks.2.1.conv.weight", "output_blocks.5.2.conv.weight", "output_blocks.8.2.conv.weight",
              "output_blocks.11.1.transformer_blocks.0.attn1.to_q.weight", "middle_block.2.time_stack.emb_layers.1.weight"):
        assert k in names, k


def test_round_trip(modules, single):
    back = svd_from_single_file(single, "tiny")
    for a, b in zip(modules, back, strict=True):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)
    assert not any(p.requires_grad for p in back[0].parameters())


def test_inferred_configs(single):
    u = infer_unet_config(strip(single, "model.diffusion_model."), video=True)
    for k in ("in_channels", "out_channels", "block_out_channels", "layers_per_block", "cross_attention_dim",
              "down_block_types", "up_block_types", "addition_time_embed_dim", "projection_class_embeddings_input_dim"):
        assert u[k] == UNET[k], k
    v = infer_vae_config(strip(single, "first_stage_model."), temporal=True)
    for k in ("block_out_channels", "layers_per_block", "latent_channels"):
        assert v[k] == VAE[k], k


def test_errors(single):
    with pytest.raises(ValueError, match="not an SVD single-file"):
        svd_from_single_file({k: v for k, v in single.items() if not k.startswith("conditioner.")}, "x.safetensors")
    no_time = {k: v for k, v in single.items() if "mix_factor" not in k or not k.startswith("first_stage_model")}
    with pytest.raises(ValueError, match="no temporal decoder"):
        svd_from_single_file(no_time, "sd15.safetensors")
    trunc = dict(single)
    trunc.pop("model.diffusion_model.input_blocks.1.1.time_stack.0.attn1.to_q.weight")
    with pytest.raises(ValueError, match=r"trunc\.safetensors.*1 missing keys"):
        svd_from_single_file(trunc, "trunc.safetensors")
    q = tiny_svd_modules()
    with torch.no_grad():
        q[1].quant_conv.bias.fill_(1.0)
    with pytest.raises(ValueError, match="quant_conv"):
        svd_to_single_file(*q)


def _meta_single_file(unet, vae, enc):
    """An SGM-layout dict of meta tensors for full-size models (no memory): names and shapes only."""
    from e4d.ldm.keymap import SVD_CLIP_PREFIX, clip_vision_to_openclip, vae_key_map

    usd, vsd = unet.state_dict(), {k: v for k, v in vae.state_dict().items() if not k.startswith("quant_conv")}
    out = {"model.diffusion_model." + v: usd[k] for k, v in unet_key_map(usd, unet.config.layers_per_block).items()}
    out.update({"first_stage_model." + v: (vsd[k][:, :, None, None] if vsd[k].ndim == 2 and ".attentions." in k else vsd[k])
                for k, v in vae_key_map(vsd).items()})
    out.update({SVD_CLIP_PREFIX + k: v for k, v in clip_vision_to_openclip(enc.state_dict()).items()})
    return out


def test_real_size_svd_file_is_recognised_and_converted_on_meta():
    """Full SVD-XT shapes (meta tensors): the real configs are picked and every tensor finds its place."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from e4d.ldm.convert import infer_clip_config
    from e4d.svd.convert import REAL_SVD_CLIP, REAL_SVD_UNET, REAL_SVD_VAE

    with init_empty_weights():
        mods = (UNetSpatioTemporalConditionModel(**REAL_SVD_UNET), AutoencoderKLTemporalDecoder(**REAL_SVD_VAE),
                CLIPVisionModelWithProjection(CLIPVisionConfig(**REAL_SVD_CLIP)))
    sd = _meta_single_file(*mods)
    assert sd["model.diffusion_model.input_blocks.4.1.time_stack.0.attn2.to_k.weight"].shape == (640, 1024)
    assert sd["conditioner.embedders.0.open_clip.model.visual.proj"].shape == (1280, 1024)
    unet, vae, enc = svd_from_single_file(sd, "svd.safetensors", num_frames=14)
    assert unet.config.num_frames == 14 and list(unet.config.num_attention_heads) == [5, 10, 20, 20]
    assert vae.quant_conv.weight.shape == (8, 8, 1, 1) and enc.config.num_attention_heads == 16
    c = infer_clip_config(strip(sd, "conditioner.embedders.0.open_clip.model.visual."), "gelu")
    assert {k: c[k] for k in REAL_SVD_CLIP} == REAL_SVD_CLIP
    u = infer_unet_config(strip(sd, "model.diffusion_model."), video=True)
    for k in ("block_out_channels", "layers_per_block", "down_block_types", "up_block_types", "cross_attention_dim",
              "addition_time_embed_dim", "projection_class_embeddings_input_dim", "num_attention_heads", "sample_size"):
        assert list(u[k]) == list(REAL_SVD_UNET[k]) if isinstance(u[k], list) else u[k] == REAL_SVD_UNET[k], k
