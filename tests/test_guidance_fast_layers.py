"""channels_last SDS layers (e4d/guidance/fast_layers.py, triton_groupnorm.py) on CPU: same numbers as the stock
diffusers layers, same parameters and state-dict keys, the Triton GroupNorm kernels in Triton's interpreter."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from e4d.cameras import input_view, syncdreamer16
from e4d.guidance import fast_layers
from e4d.guidance.fast_layers import (ChannelsLastGroupNorm, ChannelsLastTransformer2D, MathAttnProcessor,
                                      fast_sds_layers, group_norm_reference, use_channels_last)
from e4d.guidance.loader import load_zero123
from e4d.guidance.zero123 import SDSConfig, Zero123Guidance
from e4d.viewmatrix import ViewMatrix

from tiny_zero123 import hide_torchvision_stub, write_tiny_zero123


@pytest.fixture(autouse=True)
def _no_torchvision_stub():
    hide_torchvision_stub()


@pytest.fixture(scope="module")
def tiny_z123(tmp_path_factory):
    return write_tiny_zero123(tmp_path_factory.mktemp("z123fast") / "tiny-zero123")


CL = torch.channels_last


@pytest.mark.parametrize("shape,groups,silu,layout", [((2, 32, 6, 5), 4, True, "cl"), ((2, 40, 3, 7), 8, False, "nchw"),
                                                       ((3, 16, 10), 4, True, "3d")])
def test_group_norm_reference_matches_native(shape, groups, silu, layout):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g) * 3 + 2
    x = x.contiguous(memory_format=CL) if layout == "cl" else x
    w, b = torch.randn(shape[1], generator=g), torch.randn(shape[1], generator=g)
    dy = torch.randn(*shape, generator=g)
    outs = []
    for fn in (group_norm_reference, lambda *a: (F.silu if silu else (lambda t: t))(F.group_norm(*a[:5]))):
        xi, wi, bi = (t.clone().requires_grad_(True) for t in (x, w, b))
        y = fn(xi, groups, wi, bi, 1e-5, silu)
        y.backward(dy)
        outs.append((y, xi.grad, wi.grad, bi.grad))
    for a, r in zip(*outs):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)
    if layout == "cl":
        assert outs[0][0].is_contiguous(memory_format=CL) and not outs[0][0].is_contiguous()


INTERPRETED = r"""
import torch
from e4d.guidance import triton_groupnorm as tg
from e4d.guidance.fast_layers import group_norm_reference

torch.manual_seed(0)
cases = [((2, 32, 8, 8), 4, True, True, torch.float32),    # channels_last, one slice per sample
         ((1, 32, 64, 64), 4, True, True, torch.float32),  # 32 slices per sample (split partials)
         ((2, 40, 5, 7), 4, False, False, torch.float32),  # NCHW, 10 channels per group (masked tile)
         ((2, 48, 33, 20), 16, True, True, torch.float16),
         ((2, 32, 100), 8, False, False, torch.float32)]   # [N, C, L]
for shape, groups, silu, cl, dt in cases:
    x = torch.randn(*shape) * 2 + 5
    x = (x.contiguous(memory_format=torch.channels_last) if cl else x).to(dt)
    w, b = torch.randn(shape[1]).to(dt), torch.randn(shape[1]).to(dt)
    dy = torch.randn(*shape).to(dt)
    assert tg.supported(x, groups)
    y, stats = tg.group_norm_forward(x, groups, w, b, 1e-5, silu)
    dx = tg.group_norm_backward(dy, x, groups, w, b, stats, silu)
    xr = x.float().requires_grad_(True)
    yr = group_norm_reference(xr, groups, w.float(), b.float(), 1e-5, silu)
    yr.backward(dy.float())
    tol = 1e-4 if dt == torch.float32 else 4e-3
    ey = float((y.float() - yr).abs().max() / yr.abs().max())
    ex = float((dx.float() - xr.grad).abs().max() / xr.grad.abs().max())
    assert ey < tol and ex < tol, (shape, dt, ey, ex)
    assert y.stride() == x.stride() and dx.stride() == x.stride(), (y.stride(), dx.stride(), x.stride())
print("ok")
"""


def test_triton_group_norm_matches_reference_in_interpreter():
    """Forward (+ SiLU) and backward kernels against the float32 reference, in Triton's interpreter on CPU."""
    pytest.importorskip("triton")
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", INTERPRETED], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def _vm(T=2, size=64):
    g = torch.Generator().manual_seed(1)
    return ViewMatrix(torch.rand(T, 1, size, size, 3, generator=g), syncdreamer16(size)[[0]], torch.linspace(0, 1, T),
                      input_images=torch.rand(T, size, size, 3, generator=g), input_camera=input_view(10.0, size))


def _sds_step(comps, renders: torch.Tensor, steps=(0, 3)):
    """SDS loss and render gradient at each step (CPU, fixed seeds)."""
    guid = Zero123Guidance(comps, SDSConfig(channels_last=False, every=1), device="cpu")
    guid.prepare(_vm())
    out = []
    for step in steps:
        tidx = torch.tensor([0, 1])
        guid.sample_cameras(tidx, step, 10, torch.Generator().manual_seed(step))
        rgb = renders.clone().requires_grad_(True)
        loss = guid.loss(rgb, tidx, step, 10)
        loss.backward()
        out.append((loss.detach(), rgb.grad))
    return out


def test_channels_last_layers_give_the_same_sds_loss_and_gradient(tiny_z123):
    torch.manual_seed(0)
    stock, fast = load_zero123(tiny_z123), load_zero123(tiny_z123)
    keys = {name: list(m.state_dict()) for name, m in (("vae", stock.vae), ("unet", stock.unet))}
    n = use_channels_last(fast.vae.encoder) + use_channels_last(fast.unet)
    fast.vae.quant_conv.to(memory_format=CL)
    assert n > 0 and use_channels_last(fast.vae.encoder) == 0  # idempotent
    assert isinstance(fast.vae.encoder.mid_block.attentions[0].processor, MathAttnProcessor)
    assert any(isinstance(m, ChannelsLastGroupNorm) and m.silu for m in fast.unet.modules())
    assert any(isinstance(m, ChannelsLastTransformer2D) for m in fast.unet.modules())
    assert fast.vae.encoder.conv_in.weight.is_contiguous(memory_format=CL)
    for name, m in (("vae", fast.vae), ("unet", fast.unet)):
        sd, ref = m.state_dict(), getattr(stock, name).state_dict()
        assert list(sd) == keys[name]
        assert all(torch.equal(sd[k], ref[k]) for k in sd)
    renders = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    for layout in (torch.contiguous_format, CL):
        ref, got = _sds_step(stock, renders), _sds_step(fast, renders.contiguous(memory_format=layout))
        for (l0, g0), (l1, g1) in zip(ref, got):
            assert g0.abs().sum() > 0
            torch.testing.assert_close(l1, l0, rtol=1e-5, atol=0)
            torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-5 * float(g0.abs().max()))


def test_channels_last_flag(tiny_z123, monkeypatch):
    """Off: the guidance leaves the model as loaded. fast_sds_layers switches where the Triton check passes (faked
    here: CPU), and not where it fails."""
    comps = load_zero123(tiny_z123)
    guid = Zero123Guidance(comps, SDSConfig(channels_last=False, every=1), device="cpu")
    guid.prepare(_vm())
    assert not any(isinstance(m, ChannelsLastGroupNorm) for m in comps.vae.modules())
    assert all(p.is_contiguous() for p in comps.unet.parameters())
    assert fast_sds_layers(comps) is False  # CPU fp32: the Triton check fails, nothing changes
    assert not any(isinstance(m, ChannelsLastGroupNorm) for m in comps.unet.modules())
    monkeypatch.setattr(fast_layers, "triton_norm_works", lambda device, dtype: True)
    assert fast_sds_layers(comps, unet=False) is True
    assert any(isinstance(m, ChannelsLastGroupNorm) for m in comps.vae.encoder.modules())
    assert not any(isinstance(m, ChannelsLastGroupNorm) for m in comps.unet.modules())


def test_math_attention_falls_back_for_other_calls(tiny_z123):
    """3-D inputs (or masks) go to the processor the math attention replaced."""
    comps = load_zero123(tiny_z123)
    attn = comps.vae.encoder.mid_block.attentions[0]
    x = torch.randn(2, attn.group_norm.num_channels, 4, 4)
    tokens = x.flatten(2).transpose(1, 2)
    with torch.no_grad():
        ref4, ref3 = attn(x), attn(tokens)
        attn.set_processor(MathAttnProcessor(attn.processor))
        torch.testing.assert_close(attn(x), ref4, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(attn(tokens), ref3, rtol=0, atol=0)


def test_cudnn_benchmark_is_scoped():
    """SDSConfig.cudnn_benchmark switches cuDNN's autotuning on around the SDS calls only, and off never overrides
    a process that has it on."""
    from e4d.guidance.fast_layers import cudnn_benchmark

    prev = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with cudnn_benchmark(True):
            assert torch.backends.cudnn.benchmark
        assert not torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        with cudnn_benchmark(False):
            assert torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = prev
