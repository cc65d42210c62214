"""stable_zero123.ckpt-style single files: key names, round trip, same numbers as the diffusers folder."""
from __future__ import annotations

import pytest
import torch

from e4d.guidance.convert import zero123_to_ldm_state_dict
from e4d.guidance.loader import guess_variant, load_zero123
from e4d.checkpoints import read_checkpoint

from tiny_zero123 import tiny_zero123_modules, write_tiny_zero123, write_tiny_zero123_single_file
from tiny_zero123 import hide_torchvision_stub  # noqa: E402


@pytest.fixture(autouse=True)
def _no_torchvision_stub():
    hide_torchvision_stub()  # see tests/tiny_zero123.py: ComfyUI's CPU stub confuses transformers


def test_ldm_key_names_follow_the_original_layout():
    sd = zero123_to_ldm_state_dict(*tiny_zero123_modules())
    for k in ("model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.input_blocks.1.1.proj_in.weight",
              "model.diffusion_model.input_blocks.1.0.in_layers.2.weight", "model.diffusion_model.input_blocks.2.0.op.weight",
              "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
              "model.diffusion_model.output_blocks.1.1.conv.weight", "model.diffusion_model.time_embed.0.weight",
              "model.diffusion_model.out.2.weight", "first_stage_model.encoder.down.0.block.0.conv1.weight",
              "first_stage_model.decoder.up.3.block.0.conv1.weight", "first_stage_model.decoder.mid.attn_1.q.weight",
              "first_stage_model.quant_conv.weight", "first_stage_model.post_quant_conv.weight",
              "cond_stage_model.model.visual.transformer.resblocks.1.attn.in_proj_weight",
              "cond_stage_model.model.visual.proj", "cc_projection.weight"):
        assert k in sd, k
    assert sd["first_stage_model.decoder.mid.attn_1.q.weight"].ndim == 4  # 1x1 conv in ldm
    assert sd["cc_projection.weight"].shape == (32, 36)


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_single_file_round_trip_matches_folder(tmp_path, suffix):
    f = write_tiny_zero123_single_file(tmp_path / f"stable_zero123{suffix}")
    folder = write_tiny_zero123(tmp_path / "folder")
    a, b = load_zero123(f), load_zero123(folder)
    for name in ("unet", "vae", "image_encoder", "camera_projection"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=f"{name}.{k}")
    assert a.vae.config.norm_num_groups == 4 and list(a.unet.config.block_out_channels) == [32, 64]
    # same forward numbers: the CLIP tower (activation inferred as quick_gelu) and the UNet
    px = torch.rand(1, 3, 224, 224)
    torch.testing.assert_close(a.image_encoder(pixel_values=px).image_embeds, b.image_encoder(pixel_values=px).image_embeds)
    assert guess_variant(f) == "stable-zero123" and guess_variant(folder) == "zero123-xl"


def test_single_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="stabilityai/stable-zero123"):
        load_zero123(tmp_path / "stable_zero123.ckpt")
    f = write_tiny_zero123_single_file(tmp_path / "z.ckpt")
    sd = read_checkpoint(f)
    sd.pop("cc_projection.weight")
    torch.save({"state_dict": sd}, tmp_path / "broken.ckpt")
    with pytest.raises(ValueError, match="not a zero123 checkpoint"):
        load_zero123(tmp_path / "broken.ckpt")
    sd = read_checkpoint(f)
    sd.pop("model.diffusion_model.input_blocks.1.0.in_layers.0.weight")
    torch.save({"state_dict": sd}, tmp_path / "trunc.ckpt")
    with pytest.raises(ValueError, match="missing keys"):
        load_zero123(tmp_path / "trunc.ckpt")


def test_real_size_zero123_shapes_infer_the_real_configs():
    """stable_zero123.ckpt shapes (meta tensors, zero123-xl architecture): inferred configs equal the HF ones."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from e4d.guidance.convert import zero123_from_ldm_state_dict
    from e4d.guidance.components import REAL_CLIP_VIT_L, REAL_SD_VAE, REAL_ZERO123_UNET, CameraProjection

    with init_empty_weights():
        mods = (UNet2DConditionModel(**REAL_ZERO123_UNET), AutoencoderKL(**REAL_SD_VAE),
                CLIPVisionModelWithProjection(CLIPVisionConfig(**REAL_CLIP_VIT_L)), CameraProjection(768, 4))
    sd = zero123_to_ldm_state_dict(*mods)
    assert sd["cc_projection.weight"].shape == (768, 772)
    assert sd["cond_stage_model.model.visual.transformer.resblocks.23.attn.in_proj_weight"].shape == (3072, 1024)
    comps = zero123_from_ldm_state_dict(sd, "stable_zero123.ckpt")
    u = comps.unet.config
    assert list(u.block_out_channels) == [320, 640, 1280, 1280] and u.attention_head_dim == 8
    assert u.cross_attention_dim == 768 and not u.use_linear_projection and u.sample_size == 32
    assert list(u.down_block_types) == REAL_ZERO123_UNET["down_block_types"]
    assert comps.vae.config.norm_num_groups == 32 and list(comps.vae.config.block_out_channels) == [128, 256, 512, 512]
    e = comps.image_encoder.config
    assert (e.hidden_size, e.num_hidden_layers, e.num_attention_heads, e.patch_size, e.image_size, e.projection_dim,
            e.hidden_act) == (1024, 24, 16, 14, 224, 768, "quick_gelu")


@pytest.mark.parametrize("layout", ["folder", "single_file"])
def test_half_precision_load_casts_every_module(tmp_path, layout):
    """Every module in the asked dtype, the camera projection too: it is built in float32 beside half-precision
    diffusers modules, and a fp16 load left it float32 (ComfyUI on a GPU: "mat1 and mat2 must have the same dtype")."""
    path = (write_tiny_zero123(tmp_path / "z") if layout == "folder"
            else write_tiny_zero123_single_file(tmp_path / "stable_zero123.safetensors"))
    comps = load_zero123(path, dtype=torch.float16)
    for name in ("unet", "vae", "image_encoder", "camera_projection"):
        assert {p.dtype for p in getattr(comps, name).parameters()} == {torch.float16}, name
    x = torch.zeros(1, 1, comps.camera_projection.proj.in_features, dtype=comps.dtype)
    assert comps.camera_projection(x).dtype == torch.float16
