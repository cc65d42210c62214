"""gsplat and Triton backends vs the pure-torch reference and each other on CUDA (GPU machine: pytest -m gpu)."""
import math

import pytest
import torch

from e4d.cameras import orbit_cameras
from e4d.gaussians4d import init_random
from e4d.render import render, resolve_backend

pytestmark = pytest.mark.gpu


def _gsplat_ok() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except Exception:
        return False
    return True


requires_gsplat = pytest.mark.skipif(not _gsplat_ok(), reason="needs a CUDA GPU and gsplat")


def scene(num=1500, sh_degree=0, time_degree=0, seed=0):
    """A random but non-trivial 4D scene: rotated, anisotropic, varied opacity and colour."""
    g = init_random(num, radius=0.4, seed=seed, sigma_t=0.3, scale=0.03, sh_degree=sh_degree,
                    time_degree=time_degree, opacity=0.5)
    gen = torch.Generator().manual_seed(seed + 1)
    g.rot_l = g.rot_l + 0.5 * torch.randn(num, 4, generator=gen)
    g.rot_r = g.rot_r + 0.5 * torch.randn(num, 4, generator=gen)
    g.log_scales = g.log_scales + 0.5 * torch.randn(num, 4, generator=gen)
    g.opacity_logit = 2.0 * torch.randn(num, generator=gen)
    g.sh = g.sh + 0.3 * torch.randn(g.sh.shape, generator=gen)
    return g.to("cuda")


def rig(size, times=2):
    cams = orbit_cameras([0.0, 100.0, 230.0], [30.0, 0.0, -15.0], 1.5, size=size)
    w2c = cams.w2c[None].expand(times, -1, -1, -1).cuda()
    K = cams.K[None].expand(times, -1, -1, -1).cuda()
    return w2c, K


def psnr(a, b):
    return float(10 * torch.log10(1.0 / (a - b).square().mean()))


@requires_gsplat
@pytest.mark.parametrize("sh_degree,time_degree,packed", [(0, 0, True), (0, 0, False), (2, 1, True)])
def test_gsplat_matches_reference(sh_degree, time_degree, packed):
    g = scene(sh_degree=sh_degree, time_degree=time_degree)
    w2c, K = rig(64)
    times = torch.tensor([0.3, 0.7], device="cuda")
    ref = render(g.to(dtype=torch.float64), times, w2c, K, 64, 64, backend="reference")
    fast = render(g, times, w2c, K, 64, 64, backend="gsplat", packed=packed)
    assert fast.rgb.shape == ref.rgb.shape == (2, 3, 64, 64, 3)
    assert fast.alpha.shape == ref.alpha.shape == (2, 3, 64, 64, 1)
    assert ref.alpha.mean() > 0.1  # the scene actually covers the images
    mad = (fast.rgb.double() - ref.rgb).abs().mean().item()
    p = psnr(fast.rgb.double(), ref.rgb)
    pa = psnr(fast.alpha.double(), ref.alpha)
    assert mad < 1e-2 and p > 40 and pa > 40, f"mean abs diff {mad:.2e}, PSNR rgb {p:.1f} dB alpha {pa:.1f} dB"


@requires_gsplat
def test_gsplat_gradients_match_reference():
    g = scene(num=800, sh_degree=1, time_degree=1, seed=3)
    w2c, K = rig(48)
    times = torch.tensor([0.4, 0.6], device="cuda")
    weight = torch.rand(2, 3, 48, 48, 3, generator=torch.Generator("cuda").manual_seed(0), device="cuda")
    grads = {}
    for backend, dtype in (("reference", torch.float64), ("gsplat", torch.float32)):
        gg = g.to(dtype=dtype).requires_grad_()
        out = render(gg, times.to(dtype), w2c.to(dtype), K.to(dtype), 48, 48, backend=backend)
        ((out.rgb * weight.to(dtype)).sum() + out.alpha.sum()).backward()
        grads[backend] = {k: p.grad.double() for k, p in gg.parameters_dict().items()}
    for name in grads["reference"]:
        a, b = grads["reference"][name].flatten(), grads["gsplat"][name].flatten()
        assert torch.isfinite(b).all() and b.abs().sum() > 0, name
        cos = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
        rel = ((a - b).norm() / a.norm()).item()
        assert cos > 0.99 and rel < 0.1, f"{name}: cosine {cos:.4f}, relative error {rel:.3f}"


@requires_gsplat
def test_auto_backend_on_cuda_and_batched_equals_single():
    g = scene(num=500)
    assert resolve_backend("auto", g.device) == "gsplat"
    w2c, K = rig(64, times=3)
    times = torch.tensor([0.1, 0.5, 0.9], device="cuda")
    batched = render(g, times, w2c, K, 64, 64)
    for b in range(3):
        single = render(g, times[b:b + 1], w2c[b:b + 1, 1:2], K[b:b + 1, 1:2], 64, 64)
        torch.testing.assert_close(batched.rgb[b, 1], single.rgb[0, 0], atol=1e-5, rtol=0)
    assert math.isfinite(batched.rgb.sum().item())


def _triton_ok() -> bool:
    if not torch.cuda.is_available():
        return False
    from e4d.render.triton_backend import triton_available
    return triton_available()


@requires_gsplat
@pytest.mark.skipif(not _triton_ok(), reason="needs a CUDA GPU and Triton")
def test_triton_matches_gsplat_at_full_size():
    """50k Gaussians, 256^2, 4 times x 8 views: images and gradients of every 4D parameter."""
    g = scene(num=50_000, sh_degree=1, time_degree=1, seed=5)
    cams = orbit_cameras([45.0 * i for i in range(8)], 15.0, 1.5, size=256)
    w2c = cams.w2c[None].expand(4, -1, -1, -1).cuda()
    K = cams.K[None].expand(4, -1, -1, -1).cuda()
    times = torch.tensor([0.1, 0.4, 0.6, 0.9], device="cuda")
    weight = torch.rand(4, 8, 256, 256, 3, generator=torch.Generator("cuda").manual_seed(0), device="cuda")
    outs, grads = {}, {}
    for backend in ("gsplat", "triton"):
        gg = g.clone().requires_grad_()
        out = render(gg, times, w2c, K, 256, 256, backend=backend)
        ((out.rgb * weight).sum() + out.alpha.sum()).backward()
        outs[backend] = out
        grads[backend] = {k: p.grad.double() for k, p in gg.parameters_dict().items()}
    a, b = outs["gsplat"], outs["triton"]
    assert b.rgb.shape == (4, 8, 256, 256, 3) and a.alpha.mean() > 0.1
    p, pa = psnr(b.rgb.double(), a.rgb.double()), psnr(b.alpha.double(), a.alpha.double())
    assert p > 40 and pa > 40, f"PSNR rgb {p:.1f} dB alpha {pa:.1f} dB"
    for name in grads["gsplat"]:
        x, y = grads["gsplat"][name].flatten(), grads["triton"][name].flatten()
        assert torch.isfinite(y).all(), name
        cos = torch.nn.functional.cosine_similarity(x, y, dim=0).item()
        assert cos > 0.99, f"{name}: gradient cosine {cos:.4f}"


@pytest.mark.skipif(not _triton_ok(), reason="needs a CUDA GPU and Triton")
def test_auto_never_compiles_gsplat_and_reports_its_choice():
    from e4d.render import describe_backend
    which = resolve_backend("auto", torch.device("cuda"))
    assert which in ("gsplat", "triton")
    assert describe_backend("auto", "cuda").startswith(which)


@pytest.mark.skipif(not _triton_ok(), reason="needs a CUDA GPU and Triton")
def test_triton_does_not_recompile_when_the_gaussian_or_camera_count_changes():
    """Densification changes N and evaluation the number of cameras: every projection kernel is compiled once per
    process, whatever N and C are (a recompile costs about a second in the middle of a fit)."""
    from triton import knobs

    misses = []

    def hook(*args, **kwargs):  # called on every in-memory kernel-cache miss (a compile or a disk load)
        misses.append(getattr(kwargs.get("fn"), "name", "?"))
        return False

    def one(num: int, views: int) -> None:
        g = scene(num=num, sh_degree=0, time_degree=0, seed=num).requires_grad_()
        cams = orbit_cameras([360.0 / views * i for i in range(views)], 15.0, 1.5, size=64)
        out = render(g, torch.tensor([0.5], device="cuda"), cams.w2c[None].cuda(), cams.K[None].cuda(), 64, 64,
                     backend="triton")
        out.rgb.sum().backward()

    one(1600, 4)  # N and P divisible by 16; compiles (or loads) every kernel once
    previous, knobs.runtime.jit_cache_hook = knobs.runtime.jit_cache_hook, hook
    try:
        for num, views in ((1601, 4), (1603, 1), (1616, 3), (1, 1)):  # odd counts, one camera, one Gaussian
            one(num, views)
        torch.cuda.synchronize()
    finally:
        knobs.runtime.jit_cache_hook = previous
    assert not misses, f"kernels compiled again for new counts: {misses}"
