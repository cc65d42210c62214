"""The default fast path of SyncDreamer-T on CPU: exact shortcuts, cached geometry, half-precision parity.

The CUDA-graph replay and the fp16/bf16 GPU path are checked in tests/test_syncdreamer_gpu.py.
"""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from e4d.syncdreamer.attention import CrossAttention
from e4d.syncdreamer.model import Condition

EPS_BF16_REL = 0.05
"""bf16 weights vs the fp32 path, guided eps of the fixture step: max|diff| / max|eps_fp32| (measured 0.025)."""


def test_one_token_cross_attention_equals_attention():
    torch.manual_seed(0)
    att = CrossAttention(32, 24, heads=4, dim_head=8)
    x, ctx = torch.randn(3, 50, 32), torch.randn(3, 1, 24)
    q, k, v = att.to_q(x), att.to_k(ctx), att.to_v(ctx)
    split = lambda t: t.reshape(3, t.shape[1], 4, 8).transpose(1, 2)  # noqa: E731
    ref = att.to_out(F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(3, 50, 32))
    torch.testing.assert_close(att(x, ctx), ref, rtol=1e-5, atol=1e-6)
    ctx2 = torch.randn(3, 2, 24)  # two tokens: the general path still runs
    assert not torch.allclose(att(x, ctx2), att(x, ctx2[:, :1]))


def _fixture_step(model, ref):
    wdt = model.cc_projection.weight.dtype
    with torch.no_grad():
        v = model.viewpoint_embedding(ref["input/elevation_rad"])
        t = model.embed_time(ref["step/timestep"])
        vol = model.spatial_volume_for(ref["step/x_t"].to(wdt), t, v)
        cond = Condition(ref["clip/embed"], ref["cond/x_input"].to(wdt), v)
        ctx, vols = model.target_view_feats(cond, vol, t, torch.arange(4)[None])
        eps = model.predict_eps(ref["step/x_t"][0, :4].to(wdt), ref["step/timestep"].repeat(4), ctx, vols,
                                cond.x_input.repeat(4, 1, 1, 1), "decomposed", (2.0, 1.0))
    return vol.float(), eps.float()


@pytest.fixture(scope="module")
def fixture(shared_dir):
    from safetensors.torch import load_file

    d = shared_dir / "reference" / "syncdreamer"
    return d / "weights.safetensors", load_file(str(d / "fixture.safetensors"))


def test_geometry_cache_follows_the_cameras(fixture):
    from e4d.syncdreamer.loader import load_syncdreamer

    path, ref = fixture
    m = load_syncdreamer(path, dtype=torch.float32)
    vol_a, eps_a = _fixture_step(m, ref)
    assert len(m.spatial_volume._geometry) == 2  # unprojection grid + frustum grid, built once
    _, eps_b = _fixture_step(m, ref)
    assert torch.equal(eps_a, eps_b)
    with torch.no_grad():
        m.poses[:, :, 3] += 0.05  # move every camera: the cached grids must be rebuilt
    vol_c, _ = _fixture_step(m, ref)
    assert not torch.allclose(vol_c, vol_a)


def test_bf16_weights_match_fp32_on_fixture(fixture):
    """The half-precision path against the fp32 one on the parity fixture (fp16 is checked on the GPU)."""
    from e4d.syncdreamer.loader import load_syncdreamer

    path, ref = fixture
    _, e32 = _fixture_step(load_syncdreamer(path, dtype=torch.float32), ref)
    _, e16 = _fixture_step(load_syncdreamer(path, dtype=torch.bfloat16), ref)
    err = ((e16 - e32).abs().max() / e32.abs().max()).item()
    assert err < EPS_BF16_REL, f"bf16 eps differs from fp32 by {err:.3f} of max|eps| (> {EPS_BF16_REL})"


def test_chunk_runner_is_eager_on_cpu(fixture):
    from e4d.syncdreamer.chunks import ChunkRunner
    from e4d.syncdreamer.loader import load_syncdreamer

    m = load_syncdreamer(fixture[0], dtype=torch.float32)
    cond = Condition(torch.zeros(1, 1, 768), torch.zeros(1, 4, 32, 32), torch.zeros(1, 16, 4))
    assert not ChunkRunner(m, cond, "decomposed", (2.0, 1.0), use_graphs=True).use_graphs


def test_compile_cache_is_optional_and_tolerant(tmp_path, caplog):
    from e4d.syncdreamer.speed import compile_cache_file, load_compile_cache, save_compile_cache

    p = compile_cache_file(tmp_path, "default")
    assert p.parent == tmp_path and "default" in p.name and torch.__version__ in p.name
    assert not load_compile_cache(p)  # absent: nothing loaded
    p.write_bytes(b"not a cache")
    with caplog.at_level(logging.WARNING):
        assert not load_compile_cache(p)
    assert "ignoring unreadable compile cache" in caplog.text
    assert save_compile_cache(torch.nn.Linear(2, 2)) is None  # an uncompiled model has no cache file


_TRITON_NORM_CHECK = """
import torch, torch.nn.functional as F
from e4d.syncdreamer.triton_norm import group_norm_act
torch.manual_seed(0)
acts = {"silu": F.silu, "relu": F.relu, "none": lambda v: v}
cases = [((2, 40, 8, 8), 8, None, "silu"), ((3, 64, 5, 7), 32, torch.channels_last, "relu"),
         ((2, 16, 3, 4, 5), 8, None, "none"), ((2, 16, 3, 4, 5), 4, torch.channels_last_3d, "silu"),
         ((2, 160, 9, 9), 2, None, "silu"),
         ((1, 16, 40, 40), 2, None, "silu"), ((1, 32, 30, 30), 4, torch.channels_last, "relu")]  # split groups
for shape, groups, fmt, act in cases:
    x = torch.randn(shape) * 3 + 5  # an offset mean: the variance must not come from E[x^2] - E[x]^2
    x = x if fmt is None else x.contiguous(memory_format=fmt)
    w, b = torch.randn(shape[1]), torch.randn(shape[1])
    ref = acts[act](F.group_norm(x, groups, w, b, 1e-5))
    for addresses in (False, True) if shape[1] == 64 or len(shape) == 5 else (False,):  # + the address kernels
        y = group_norm_act(x, groups, w, b, 1e-5, act, addresses=addresses)
        assert y.stride() == x.stride(), (shape, fmt, y.stride(), x.stride())
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
print("ok")
"""


def test_triton_group_norm_kernel_in_interpreter():
    """The fused GroupNorm + activation kernel, run by Triton's CPU interpreter: equals F.group_norm + act for
    contiguous, channels_last and 3-D layouts, keeps the memory format; so do the kernels taking integer addresses
    (used under cudaMallocAsync) (the CUDA run is in test_syncdreamer_gpu)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", _TRITON_NORM_CHECK], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


_TRITON_GEGLU_CHECK = """
import torch, torch.nn.functional as F
from e4d.syncdreamer.triton_geglu import geglu
torch.manual_seed(0)
for shape in ((2, 5, 2 * 160), (3, 2 * 7), (1, 17, 2 * 130)):  # ragged rows and columns (blocks of 16 x 128)
    h = torch.randn(shape) * 3
    value, gate = h.chunk(2, dim=-1)
    torch.testing.assert_close(geglu(h), value * F.gelu(gate), rtol=1e-5, atol=1e-5)
print("ok")
"""


def test_triton_geglu_kernel_in_interpreter():
    """The one-kernel GEGLU, run by Triton's CPU interpreter, equals ``value * gelu(gate)`` (exact GELU) on ragged
    shapes (the CUDA run is in test_syncdreamer_gpu)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", _TRITON_GEGLU_CHECK], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


def test_group_norm_act_layer_is_literal_on_cpu():
    """Off CUDA (and for float32) the layer is GroupNorm32 followed by its activation, with the checkpoint's keys."""
    from e4d.syncdreamer.layers import GroupNormAct
    from e4d.syncdreamer.unet import ResBlock

    torch.manual_seed(0)
    gn = GroupNormAct(4, 8, act="silu")
    with torch.no_grad():
        gn.weight.normal_()
        gn.bias.normal_()
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(gn(x), F.silu(F.group_norm(x, 4, gn.weight, gn.bias, gn.eps)))
    with pytest.raises(ValueError, match="act must be one of"):
        GroupNormAct(4, 8, act="gelu")
    keys = set(ResBlock(64, 16, 32).state_dict())
    assert {"in_layers.0.weight", "in_layers.2.weight", "out_layers.0.bias", "out_layers.3.weight"} <= keys
