"""Zero123 SDS on CUDA in fp16 (tiny models): finite loss, gradient on the render, caches on the GPU."""
from __future__ import annotations

import pytest
import torch

from tiny_zero123 import hide_torchvision_stub, write_tiny_zero123

pytestmark = pytest.mark.gpu


def test_sds_fp16_cuda(tmp_path):
    hide_torchvision_stub()
    from e4d.cameras import input_view, syncdreamer16
    from e4d.guidance.loader import load_zero123
    from e4d.guidance.zero123 import SDSConfig, Zero123Guidance
    from e4d.viewmatrix import ViewMatrix

    dev = torch.device("cuda")
    path = write_tiny_zero123(tmp_path / "z")
    guid = Zero123Guidance(lambda: load_zero123(path), SDSConfig())  # lazy: device and dtype from the view matrix
    vm = ViewMatrix(torch.rand(2, 1, 64, 64, 3), syncdreamer16(64)[[0]], torch.linspace(0, 1, 2),
                    input_images=torch.rand(2, 64, 64, 3), input_camera=input_view(0.0, 64)).to(dev)
    guid.prepare(vm)
    assert guid.components.dtype == torch.float16 and guid.cache.latents.device.type == "cuda"
    tidx = torch.tensor([0, 1])
    cams = guid.sample_cameras(tidx, 0, 10, torch.Generator().manual_seed(0))
    assert cams.device.type == "cuda"
    rgb = torch.rand(2, 3, 256, 256, device=dev, requires_grad=True)
    loss = guid.loss(rgb, tidx, 0, 10)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


def test_sds_cuda_graph_matches_eager(tmp_path):
    """The captured guided UNet call gives the eager eps, and a new batch shape gets its own graph."""
    hide_torchvision_stub()
    from e4d.guidance.cfg_graph import GraphedCFG
    from e4d.guidance.loader import load_zero123
    from e4d.guidance.zero123 import cfg_noise_prediction

    comps = load_zero123(write_tiny_zero123(tmp_path / "z"), dtype=torch.float16, device="cuda")
    run = GraphedCFG(cfg_noise_prediction)
    g = torch.Generator(device="cuda").manual_seed(0)
    d = comps.unet.config.cross_attention_dim
    for B in (2, 2, 3):
        z = torch.randn(B, 4, 32, 32, device="cuda", generator=g)
        ref = torch.randn(B, 4, 32, 32, device="cuda", generator=g)
        cond = torch.randn(B, 1, d, device="cuda", generator=g).half()
        t = torch.randint(20, 980, (B,), device="cuda", generator=g)
        with torch.no_grad():
            torch.testing.assert_close(run(comps.unet, z, t, cond, ref, 5.0),
                                       cfg_noise_prediction(comps.unet, z, t, cond, ref, 5.0), rtol=1e-3, atol=1e-3)
    assert len(run.graphs) == 2


def _three_sds_steps(guid, dev) -> list:
    """(loss, render gradient) of SDS steps 0-2 of ``guid`` on fixed random 256² renders of times 0 and 1."""
    out = []
    for step in range(3):
        tidx = torch.tensor([0, 1])
        guid.sample_cameras(tidx, step, 10, torch.Generator().manual_seed(step))
        rgb = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(step)).to(dev).requires_grad_()
        loss = guid.loss(rgb, tidx, step, 10)
        loss.backward()
        out.append((loss.detach(), rgb.grad))
    return out


def test_sds_encoder_graph_matches_eager(tmp_path):
    """The captured VAE encoder forward/backward gives the eager SDS loss and render gradient at every step."""
    hide_torchvision_stub()
    from e4d.cameras import input_view, syncdreamer16
    from e4d.guidance.loader import load_zero123
    from e4d.guidance.zero123 import SDSConfig, Zero123Guidance
    from e4d.viewmatrix import ViewMatrix

    dev = torch.device("cuda")
    comps = load_zero123(write_tiny_zero123(tmp_path / "z"), dtype=torch.float16, device=dev)
    vm = ViewMatrix(torch.rand(2, 1, 64, 64, 3), syncdreamer16(64)[[0]], torch.linspace(0, 1, 2),
                    input_images=torch.rand(2, 64, 64, 3), input_camera=input_view(0.0, 64)).to(dev)
    runs = {}
    for graphed in (False, True):
        guid = Zero123Guidance(comps, SDSConfig(graph_encoder=graphed, every=1), device=dev)
        guid.prepare(vm)
        runs[graphed] = _three_sds_steps(guid, dev)  # the capture step, then replays
        assert len(guid._encoder.graphs) == (1 if graphed else 0)
    for (l0, g0), (l1, g1) in zip(runs[False], runs[True]):
        torch.testing.assert_close(l1, l0, rtol=1e-3, atol=0)
        assert g0.abs().sum() > 0
        torch.testing.assert_close(g1, g0, rtol=1e-2, atol=1e-3 * float(g0.abs().max()))


ASYNC_SDS = """
import os
import sys
import warnings
import torch
from tiny_zero123 import hide_torchvision_stub, write_tiny_zero123

hide_torchvision_stub()
from e4d.cameras import input_view, syncdreamer16
from e4d.guidance.loader import load_zero123
from e4d.guidance.zero123 import SDSConfig, Zero123Guidance
from e4d.viewmatrix import ViewMatrix

assert torch.cuda.get_allocator_backend() == "cudaMallocAsync"
warnings.simplefilter("always")
dev = torch.device("cuda")
comps = load_zero123(write_tiny_zero123(sys.argv[1]), dtype=torch.float16, device=dev)
vm = ViewMatrix(torch.rand(2, 1, 64, 64, 3), syncdreamer16(64)[[0]], torch.linspace(0, 1, 2),
                input_images=torch.rand(2, 64, 64, 3), input_camera=input_view(0.0, 64)).to(dev)
for fit in range(2):  # two fits, as two queued ComfyUI runs: capture, replay, release
    guid = Zero123Guidance(comps, SDSConfig(), device=dev)
    guid.prepare(vm)
    leaf = torch.rand(2, 3, 256, 256, device=dev, requires_grad=True)  # a parameter made before the capture
    for step in range(3):
        tidx = torch.tensor([0, 1])
        guid.sample_cameras(tidx, step, 10, torch.Generator().manual_seed(step))
        loss = guid.loss(leaf * 1.0, tidx, step, 10)
        loss.backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0
    assert len(guid._encoder.graphs) == 1 and len(guid._graphs.graphs) == 1 and guid.capture_s > 0
    guid.release()
torch.cuda.synchronize()
print("done", flush=True)
sys.stderr.flush()
os._exit(0)  # what the run freed is checked; process teardown (torch's own caches) is not part of a run
"""


def test_sds_graphs_warn_nothing_under_cuda_malloc_async(tmp_path):
    """In a fresh process on ComfyUI's allocator backend (cudaMallocAsync) the SDS graphs (guided UNet, VAE encoder
    forward/backward) capture, replay and release without torch's AccumulateGrad stream warning and without freeing
    a captured allocation after its capture."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).parent
    env = dict(os.environ, PYTORCH_CUDA_ALLOC_CONF="backend:cudaMallocAsync",
               PYTHONPATH=os.pathsep.join([str(tests.parent), str(tests), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", ASYNC_SDS, str(tmp_path / "z")], env=env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr[-3000:]
    assert "AccumulateGrad" not in r.stderr, r.stderr[-3000:]
    assert "uncaptured free" not in r.stderr, r.stderr[-3000:]


# one shape per tile class: VAE level 0 (4 channels per group), VAE mid block (16, no SiLU), UNet level 0 (10 of a
# 16-lane tile), UNet bottom concat (80 of 128 lanes, one pixel per tile)
@pytest.mark.parametrize("shape,silu", [((4, 128, 256, 256), True), ((4, 512, 32, 32), False),
                                        ((8, 320, 32, 32), True), ((8, 2560, 4, 4), True)])
def test_triton_group_norm_real_shapes(shape, silu):
    """The channels_last Triton GroupNorm (+SiLU) forward and backward at the SDS VAE-encoder / UNet shapes (fp16)
    against PyTorch's float32 GroupNorm: within fp16 rounding (2e-3 of the largest value), layout kept."""
    from e4d.guidance.triton_groupnorm import group_norm_backward, group_norm_forward, supported

    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(*shape, device="cuda", generator=g) * 3 + 1).half().contiguous(memory_format=torch.channels_last)
    w, b = (torch.randn(shape[1], device="cuda", generator=g).half() for _ in range(2))
    dy = torch.randn(*shape, device="cuda", generator=g).half().contiguous(memory_format=torch.channels_last)
    assert supported(x, 32)
    y, stats = group_norm_forward(x, 32, w, b, 1e-6, silu)
    dx = group_norm_backward(dy, x, 32, w, b, stats, silu)
    xr = x.float().requires_grad_(True)
    yr = torch.nn.functional.group_norm(xr, 32, w.float(), b.float(), 1e-6)
    yr = torch.nn.functional.silu(yr) if silu else yr
    yr.backward(dy.float())
    assert y.is_contiguous(memory_format=torch.channels_last) and dx.is_contiguous(memory_format=torch.channels_last)
    yr = yr.detach()
    assert float((y.float() - yr).abs().max()) <= 2e-3 * float(yr.abs().max())
    assert float((dx.float() - xr.grad).abs().max()) <= 2e-3 * float(xr.grad.abs().max())


def test_sds_channels_last_matches_nchw(tmp_path):
    """SDSConfig.channels_last (Triton GroupNorm, fused SiLU, math mid-block attention, channels_last models) gives
    the NCHW path's SDS loss and render gradient in fp16 on CUDA, CUDA graphs on: loss within 1e-2 relative, gradient
    within 2e-2 of its norm (fp16 rounding of differently ordered kernels)."""
    hide_torchvision_stub()
    from e4d.cameras import input_view, syncdreamer16
    from e4d.guidance.fast_layers import ChannelsLastGroupNorm, MathAttnProcessor
    from e4d.guidance.loader import load_zero123
    from e4d.guidance.zero123 import SDSConfig, Zero123Guidance
    from e4d.viewmatrix import ViewMatrix

    dev = torch.device("cuda")
    path = write_tiny_zero123(tmp_path / "z")
    vm = ViewMatrix(torch.rand(2, 1, 64, 64, 3), syncdreamer16(64)[[0]], torch.linspace(0, 1, 2),
                    input_images=torch.rand(2, 64, 64, 3), input_camera=input_view(0.0, 64)).to(dev)
    runs = {}
    for fast in (False, True):
        comps = load_zero123(path, dtype=torch.float16, device=dev)
        keys = list(comps.vae.state_dict()) + list(comps.unet.state_dict())
        guid = Zero123Guidance(comps, SDSConfig(channels_last=fast, every=1), device=dev)
        guid.prepare(vm)
        switched = any(isinstance(m, ChannelsLastGroupNorm) for m in comps.unet.modules())
        assert switched == fast and list(comps.vae.state_dict()) + list(comps.unet.state_dict()) == keys
        assert isinstance(comps.vae.encoder.mid_block.attentions[0].processor, MathAttnProcessor) == fast
        runs[fast] = _three_sds_steps(guid, dev)
    for (l0, g0), (l1, g1) in zip(runs[False], runs[True]):
        assert g0.abs().sum() > 0 and torch.isfinite(g1).all()
        torch.testing.assert_close(l1, l0, rtol=1e-2, atol=0)
        assert float((g1 - g0).norm() / g0.norm()) < 2e-2
