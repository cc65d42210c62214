"""SyncDreamer layout, loader and errors: the real checkpoint layout (keys.tsv), tiny Lightning ckpt round trip."""
from __future__ import annotations

import pytest
import torch

from tiny_syncdreamer import tiny_state_dict, write_tiny_syncdreamer


def _keys_tsv(shared_dir):
    rows = (shared_dir / "reference" / "syncdreamer" / "keys.tsv").read_text().splitlines()[1:]
    out = {}
    for r in rows:
        k, shape, _ = r.split("\t")
        out[k] = tuple(int(x) for x in shape.strip("[]").split(",") if x.strip())
    return out


def test_real_checkpoint_layout_is_reproduced(shared_dir):
    """Sizes inferred from the real shapes rebuild exactly the 1,618 official entries (so strict=True works)."""
    from e4d.syncdreamer.dims import infer_dims
    from e4d.syncdreamer.model import SyncDreamer

    shapes = _keys_tsv(shared_dir)
    assert len(shapes) == 1618
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    dims = infer_dims(sd)
    assert dims.unet.model_channels == 320 and dims.unet.channel_mult == (1, 2, 4, 4)
    assert dims.unet.volume_dims == (64, 128, 256, 512) and dims.volume.frustum_in_dim == 64
    assert dims.vae.ch == 128 and dims.vae.ch_mult == (1, 2, 4, 4)
    assert (dims.clip.width, dims.clip.layers, dims.clip.heads, dims.clip.patch) == (1024, 24, 16, 14)
    from e4d.syncdreamer.dims import SyncDreamerDims

    assert dims == SyncDreamerDims()  # the defaults (used by bench/syncdreamer.py) are the real model
    with torch.device("meta"):
        model = SyncDreamer(dims)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert set(ours) == set(shapes), (sorted(set(ours) - set(shapes))[:5], sorted(set(shapes) - set(ours))[:5])
    bad = [k for k in shapes if ours[k] != shapes[k]]
    assert not bad, [(k, ours[k], shapes[k]) for k in bad[:5]]
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 1_392_370_020


def test_tiny_ckpt_loads_through_real_loader(tmp_path):
    from e4d.syncdreamer.loader import load_syncdreamer

    path = write_tiny_syncdreamer(tmp_path)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) >= {"state_dict"}
    m = load_syncdreamer(path, dtype=torch.bfloat16)
    assert m.cc_projection.weight.dtype == torch.bfloat16
    assert m.alphas_cumprod.dtype == torch.float32 and m.poses.dtype == torch.float32  # buffers stay fp32
    torch.testing.assert_close(m.poses, raw["state_dict"]["poses"])
    # a bare state dict and safetensors go through the same path
    from safetensors.torch import save_file

    save_file(raw["state_dict"], str(tmp_path / "tiny.safetensors"))
    torch.save(raw["state_dict"], tmp_path / "bare.pt")
    for p in (tmp_path / "tiny.safetensors", tmp_path / "bare.pt"):
        m2 = load_syncdreamer(p, dtype=torch.float32)
        torch.testing.assert_close(m2.cc_projection.weight, raw["state_dict"]["cc_projection.weight"])


def test_loader_errors(tmp_path):
    from e4d.syncdreamer.loader import load_syncdreamer

    with pytest.raises(FileNotFoundError, match="huggingface.co/liuyuan-pal/SyncDreamer"):
        load_syncdreamer(tmp_path / "nope.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt"):
        load_syncdreamer(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a SyncDreamer checkpoint.*models/syncdreamer"):
        load_syncdreamer(tmp_path / "other.ckpt")
    sd = tiny_state_dict()
    del sd["model.diffusion_model.out.2.weight"]
    torch.save({"state_dict": sd}, tmp_path / "partial.ckpt")
    with pytest.raises(ValueError, match="partial.ckpt"):
        load_syncdreamer(tmp_path / "partial.ckpt")


def test_clip_override_hf_and_openai_layouts(tmp_path):
    """HF CLIPVision (q/k/v split, visual_projection) and OpenAI (visual.*) map onto the same tower."""
    from e4d.syncdreamer.loader import clip_override_to_syncdreamer, load_syncdreamer

    sd = tiny_state_dict()
    pre = "clip_image_encoder.model.visual."
    vis = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
    hf = {"vision_model.embeddings.patch_embedding.weight": vis["conv1.weight"] + 1,
          "vision_model.embeddings.class_embedding": vis["class_embedding"],
          "vision_model.embeddings.position_embedding.weight": vis["positional_embedding"],
          "vision_model.pre_layrnorm.weight": vis["ln_pre.weight"], "vision_model.pre_layrnorm.bias": vis["ln_pre.bias"],
          "vision_model.post_layernorm.weight": vis["ln_post.weight"],
          "vision_model.post_layernorm.bias": vis["ln_post.bias"], "visual_projection.weight": vis["proj"].t().contiguous()}
    a = "vision_model.encoder.layers.0."
    w, b = vis["transformer.resblocks.0.attn.in_proj_weight"], vis["transformer.resblocks.0.attn.in_proj_bias"]
    for i, n in enumerate("qkv"):
        hf[a + f"self_attn.{n}_proj.weight"] = w.chunk(3)[i]
        hf[a + f"self_attn.{n}_proj.bias"] = b.chunk(3)[i]
    for src, dst in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                     ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
        hf[a + src + ".weight"] = vis[f"transformer.resblocks.0.{dst}.weight"]
        hf[a + src + ".bias"] = vis[f"transformer.resblocks.0.{dst}.bias"]
    mapped = clip_override_to_syncdreamer(hf)
    assert set(mapped) == {pre + k for k in vis}
    torch.testing.assert_close(mapped[pre + "transformer.resblocks.0.attn.in_proj_weight"], w)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in hf.items()}, str(tmp_path / "clip_hf.safetensors"))
    ck = write_tiny_syncdreamer(tmp_path)
    m = load_syncdreamer(ck, dtype=torch.float32, clip_override=tmp_path / "clip_hf.safetensors")
    torch.testing.assert_close(m.clip_image_encoder.model.visual.conv1.weight, vis["conv1.weight"] + 1)
    openai = {"visual." + k: v for k, v in vis.items()}
    assert set(clip_override_to_syncdreamer(openai)) == {pre + k for k in vis}


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > e4d_pwned.txt",))


def test_lightning_metadata_is_skipped_safely(tmp_path, monkeypatch):
    """Hyper-parameter objects refused by weights_only=True: tensors are still read, no code from the file runs."""
    import argparse

    from e4d.checkpoints import read_checkpoint
    from e4d.syncdreamer.loader import load_syncdreamer

    monkeypatch.chdir(tmp_path)
    sd = tiny_state_dict()
    torch.save({"state_dict": sd, "hyper_parameters": argparse.Namespace(lr=1e-4), "callbacks": _Evil()},
               tmp_path / "lightning.ckpt")
    out = read_checkpoint(tmp_path / "lightning.ckpt")
    assert set(out) == set(sd) and not (tmp_path / "e4d_pwned.txt").exists()
    m = load_syncdreamer(tmp_path / "lightning.ckpt", dtype=torch.float32)
    torch.testing.assert_close(m.cc_projection.bias, sd["cc_projection.bias"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_openai_torchscript_clip_override(tmp_path):
    """OpenAI's ViT-L-14.pt is a TorchScript archive: its tensors are read without loading TorchScript code, mapped
    from visual.*."""
    from e4d.syncdreamer.clip import VisionTransformer
    from e4d.checkpoints import read_checkpoint
    from e4d.syncdreamer.loader import load_syncdreamer
    from tiny_syncdreamer import tiny_dims

    class OpenAIClip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = VisionTransformer(tiny_dims().clip)

        def forward(self, x):
            return self.visual(x)

    torch.manual_seed(1)
    net = OpenAIClip().eval()
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 224, 224)), tmp_path / "ViT-tiny.pt")
    assert set(read_checkpoint(tmp_path / "ViT-tiny.pt")) == {"visual." + k for k in net.visual.state_dict()}
    m = load_syncdreamer(write_tiny_syncdreamer(tmp_path), dtype=torch.float32, clip_override=tmp_path / "ViT-tiny.pt")
    torch.testing.assert_close(m.clip_image_encoder.model.visual.proj, net.visual.proj.detach())


def test_output_cameras_are_the_checkpoint_cameras(shared_dir):
    """The view matrix labels views with e4d.cameras.syncdreamer16(): the same rig as the checkpoint's buffers."""
    from safetensors.torch import load_file

    from e4d.cameras import syncdreamer16

    sd = load_file(str(shared_dir / "reference" / "syncdreamer" / "weights.safetensors"))
    cams = syncdreamer16(256)
    torch.testing.assert_close(cams.w2c[:, :3, :4], sd["poses"], rtol=0, atol=1e-6)
    torch.testing.assert_close(cams.K, sd["Ks"])
    tiny = tiny_state_dict()
    torch.testing.assert_close(tiny["azimuth"], sd["azimuth"], rtol=0, atol=1e-6)
    torch.testing.assert_close(tiny["poses"], sd["poses"], rtol=0, atol=1e-6)


def test_depth_attention_matches_literal_formula():
    """Chunked float32 depth attention == the literal per-pixel softmax over depth (DepthAttention of the paper)."""
    from e4d.syncdreamer.attention import depth_attention

    torch.manual_seed(0)
    b, heads, hd, d, h, w = 5, 4, 3, 6, 4, 2
    q = torch.randn(b, heads * hd, h, w)
    k, v = torch.randn(b, heads * hd, d, h, w), torch.randn(b, heads * hd, d, h, w)
    qh, kh, vh = q.reshape(b, heads, hd, h, w), k.reshape(b, heads, hd, d, h, w), v.reshape(b, heads, hd, d, h, w)
    attn = (torch.sum(qh.unsqueeze(3) * kh, 2) * hd ** -0.5).softmax(dim=2)
    ref = torch.sum(vh * attn.unsqueeze(2), 3).reshape(b, heads * hd, h, w)
    torch.testing.assert_close(depth_attention(q, k, v, heads, chunk=2), ref)
    half = depth_attention(q.half(), k.half(), v.half(), heads, chunk=3)
    assert half.dtype == torch.float16 and (half.float() - ref).abs().max() < 1e-2


@pytest.mark.parametrize("layout", [None, (1, 1), (2, 1)])
def test_fused_depth_transformer_matches_literal(layout):
    """Folded-SDPA depth transformer with shared guidance volumes == the literal path on concatenated volumes."""
    from e4d.syncdreamer.attention import DepthTransformer

    torch.manual_seed(0)
    dt = DepthTransformer(32, 16)
    with torch.no_grad():
        for p in dt.parameters():  # non-zero GroupNorm betas: the zero-volume constant is not trivially 0
            p.normal_(0, 0.3)
    R, Z = layout or (1, 0)
    M = 3
    x, ctx = torch.randn((R + Z) * M, 32, 8, 8), torch.randn(M, 16, 6, 8, 8)
    with torch.no_grad():
        fused = dt(x, ctx, layout)
        dt.fused = False
        literal = dt(x, ctx, layout)
        full = torch.cat([ctx] * R + [torch.zeros_like(ctx)] * Z)
        dt.chunk = 2  # row-by-row literal reference on the concatenated volume (the official batching)
        ref = torch.cat([dt(x[i:i + 1], full[i:i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(literal, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    assert (fused[:M] - fused[-M:]).abs().max() > 1e-3 or Z == 0  # the zero-volume rows really differ


def test_depth_transformer_layout_mismatch_is_explained():
    from e4d.syncdreamer.attention import DepthTransformer

    dt = DepthTransformer(32, 16)
    with pytest.raises(ValueError, match="guidance layout"):
        dt(torch.randn(5, 32, 4, 4), torch.randn(2, 16, 3, 4, 4), (2, 1))
