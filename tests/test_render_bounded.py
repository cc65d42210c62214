"""The reference renderer's bounded memory: tiled + chunked compositing equals one dense pass (images and
gradients), and no intermediate or saved-for-backward tensor grows like pixels x Gaussians."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from e4d.cameras import orbit_cameras
from e4d.gaussians4d import init_random
from e4d.render import RasterSettings, fit_time_estimate, render, resolve_backend
from e4d.render import backends as backend_choice
from e4d.render import reference

F64 = torch.float64
DENSE = RasterSettings(max_elements=1 << 40, tile_size=1 << 10)  # one tile, one chunk: a dense pass
SMALL = RasterSettings(max_elements=256, tile_size=8)  # 8x8 tiles, 4 Gaussians per chunk


def scene(num, seed=0):
    g = init_random(num, radius=0.3, seed=seed, sigma_t=0.5, scale=0.05, opacity=0.6, sh_degree=1, dtype=F64)
    gen = torch.Generator().manual_seed(seed)
    g.rot_l = g.rot_l + 0.3 * torch.randn(num, 4, generator=gen, dtype=F64)
    g.opacity_logit = 2.0 * torch.randn(num, generator=gen, dtype=F64)
    g.sh = g.sh + 0.2 * torch.randn(g.sh.shape, generator=gen, dtype=F64)
    return g


def rig(size):
    cams = orbit_cameras([10.0, 140.0], [20.0, -5.0], 1.5, size=size).to(dtype=F64)
    return cams.w2c[None].expand(2, -1, -1, -1), cams.K[None].expand(2, -1, -1, -1)


def render_and_grads(g, settings, size=20):
    gg = g.clone().requires_grad_()
    w2c, K = rig(size)
    out = render(gg, [0.4, 0.6], w2c, K, size, size, background=0.3, backend="reference", settings=settings)
    weight = torch.rand(out.rgb.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    ((out.rgb * weight).sum() + out.alpha.sum()).backward()
    return out, {k: p.grad for k, p in gg.parameters_dict().items()}


def test_chunked_reference_equals_dense_pass():
    g = scene(120)
    dense, g_dense = render_and_grads(g, DENSE)
    tiled, g_tiled = render_and_grads(g, SMALL)
    assert dense.alpha.max() > 0.9  # opaque enough that the transmittance stop happens
    torch.testing.assert_close(tiled.rgb, dense.rgb)
    torch.testing.assert_close(tiled.alpha, dense.alpha)
    for name in g_dense:
        torch.testing.assert_close(g_tiled[name], g_dense[name], msg=name)


def test_chunk_backward_equals_autograd_of_the_forward():
    """The closed-form chunk backward against autograd through the compositing forward (random tiles, some
    pixels stopping inside the chunk, some alphas clamped at 0.999)."""
    gen = torch.Generator().manual_seed(3)
    nt, P, K = 3, 20, 12
    pix = torch.rand(nt, P, 2, generator=gen, dtype=F64) * 8
    inputs = [torch.rand(nt, P, generator=gen, dtype=F64) * 0.8 + 0.2,
              torch.rand(nt, K, 2, generator=gen, dtype=F64) * 8,
              torch.stack([torch.rand(nt, K, generator=gen, dtype=F64) * 0.5 + 0.1,
                           torch.rand(nt, K, generator=gen, dtype=F64) * 0.1 - 0.05,
                           torch.rand(nt, K, generator=gen, dtype=F64) * 0.5 + 0.1], -1),
              torch.rand(nt, K, generator=gen, dtype=F64) * 1.2, torch.rand(nt, K, 3, generator=gen, dtype=F64)]
    probe = inputs[0].detach() * 0.9
    weights = [torch.randn(nt, P, 3, generator=gen, dtype=F64), torch.randn(nt, P, generator=gen, dtype=F64)]
    grads = []
    for fn in (lambda *x: reference._TileChunk.apply(pix, x[0], probe, *x[1:]),
               lambda *x: reference.composite_chunk(reference._chunk_alpha(pix, *x[1:4]), x[4], x[0], probe)):
        xs = [t.clone().requires_grad_() for t in inputs]
        part, T, _ = fn(*xs)
        assert T.min() < 1e-2 and (part * weights[0]).sum().abs() > 0
        ((part * weights[0]).sum() + (T * weights[1]).sum()).backward()
        grads.append([x.grad for x in xs])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


class _Largest(TorchDispatchMode):
    """Largest number of elements of any tensor an op produces."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def memory_use(num, settings, size=32):
    """(largest intermediate, total elements of the storages saved for backward) of a forward + backward."""
    g = scene(num, seed=2).requires_grad_()
    w2c, K = rig(size)
    saved, seen = [0], set()

    def pack(t):  # what is really kept: the whole storage behind a saved view, counted once
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            saved[0] += storage.nbytes() // t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _Largest() as largest:
        out = render(g, [0.5], w2c[:1, :1], K[:1, :1], size, size, backend="reference", settings=settings)
        (out.rgb.sum() + out.alpha.sum()).backward()
    return largest.numel, saved[0]


@pytest.mark.parametrize("num", [300, 2000])
def test_reference_memory_has_no_pixels_times_gaussians_term(num):
    settings = RasterSettings(max_elements=1 << 12, tile_size=16)
    pixels = 32 * 32
    largest, saved = memory_use(num, settings)
    chunk = settings.max_elements // settings.tile_size ** 2  # Gaussians per chunk: 16
    # per-Gaussian tensors (projection, 3x3 covariances, SH) are O(N); pixel x Gaussian blocks stay <= max_elements
    assert largest <= max(4 * settings.max_elements, 16 * num), largest
    # kept for the backward: O(N) per-Gaussian values plus a few numbers per pixel per chunk (the chunk inputs)
    assert saved <= 200 * num + 8 * pixels * -(-num // chunk), saved
    dense_largest, _ = memory_use(num, DENSE)
    assert dense_largest > 8 * largest  # what the bound prevents


def test_backend_choice_and_fit_estimate(monkeypatch, caplog):
    assert resolve_backend("auto", "cpu") == "reference" and resolve_backend("auto", "mps") == "reference"
    assert resolve_backend("triton", "cpu") == "triton"  # explicit choices are honoured (and fail loudly)
    # a GPU where gsplat would JIT-compile: auto takes Triton and says why, without touching gsplat
    monkeypatch.setattr(backend_choice, "_gsplat_state", lambda: "compile")
    monkeypatch.setattr(backend_choice, "_gsplat_loads", lambda: pytest.fail("auto must not load gsplat"))
    monkeypatch.setattr(backend_choice, "_triton_imports", lambda: True)
    backend_choice._say_once.cache_clear()
    with caplog.at_level("INFO", logger="e4d.render.backends"):
        assert resolve_backend("auto", "cuda") == "triton"
        resolve_backend("auto", "cuda")
    assert sum("backend='gsplat'" in r.message for r in caplog.records) == 1  # logged once
    assert backend_choice.describe_backend("auto", "cuda") == \
        "triton (auto on cuda: gsplat's CUDA extension is not built)"
    monkeypatch.setattr(backend_choice, "_gsplat_state", lambda: "ready")
    monkeypatch.setattr(backend_choice, "_gsplat_loads", lambda: True)
    assert resolve_backend("auto", "cuda") == "gsplat"
    # the slow-fit estimate: only for the reference renderer, only when long
    assert fit_time_estimate("auto", "cuda", 2.0, 500) is None
    assert fit_time_estimate("auto", "cpu", 0.05, 500) is None
    text = fit_time_estimate("auto", "cpu", 2.0, 500)
    assert text is not None and "17 min" in text and "500 steps" in text
