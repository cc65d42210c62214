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
        guid = Zero123Guidance(comps, SDSConfig(graph_encoder=graphed), device=dev)
        guid.prepare(vm)
        out = []
        for step in range(3):  # the capture step, then replays
            tidx = torch.tensor([0, 1])
            guid.sample_cameras(tidx, step, 10, torch.Generator().manual_seed(step))
            rgb = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(step)).to(dev).requires_grad_()
            loss = guid.loss(rgb, tidx, step, 10)
            loss.backward()
            out.append((loss.detach(), rgb.grad))
        runs[graphed] = out
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
