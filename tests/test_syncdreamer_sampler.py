"""SyncDreamer-T sampling on a tiny random model (64 px frames, 2 steps): shapes, hooks, chunking, noise, cancel."""
from __future__ import annotations

import pytest
import torch

from e4d.progress import Cancelled
from e4d.syncdreamer import sampler as S
from e4d.syncdreamer.pipeline import select_frames, syncdreamer_t
from e4d.syncdreamer.sampler import SamplerConfig, sample_latents
from tiny_syncdreamer import write_tiny_syncdreamer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from e4d.syncdreamer.loader import load_syncdreamer

    return load_syncdreamer(write_tiny_syncdreamer(tmp_path_factory.mktemp("sd")), dtype=torch.float32)


def _frames(k=2, s=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(k, 3, s, s, generator=g) * 2 - 1


def test_view_matrix_shapes_cameras_progress(tiny):
    steps = []
    frames = torch.rand(5, 64, 64, 3)
    vm = syncdreamer_t(tiny, frames, num_frames=3, prepare="none",
                       config=SamplerConfig(steps=2, view_batch=12, guidance="cfg", scales=(2.0,)),
                       callback=lambda s, t, i: steps.append((s, t)))
    assert vm.images.shape == (3, 16, 64, 64, 3) and vm.V == 16
    assert 0 <= vm.images.min() and vm.images.max() <= 1
    assert vm.times.tolist() == [0.0, 0.5, 1.0] and vm.input_images.shape == (3, 64, 64, 3)
    assert len(vm.input_camera) == 1 and vm.cameras.elevation is not None
    torch.testing.assert_close(vm.cameras.elevation, torch.full((16,), 30.0))
    assert steps == [(1, 2), (2, 2)]


def test_volumes_are_smoothed_before_the_unet(tiny, monkeypatch):
    seen = []
    real = S.smooth_volumes

    def spy(vol, kernel, cyclic, matrix=None):
        seen.append((tuple(vol.shape), list(kernel), cyclic))
        return real(vol, kernel, cyclic, matrix)

    monkeypatch.setattr(S, "smooth_volumes", spy)
    sample_latents(tiny, _frames(3), SamplerConfig(steps=2, temporal_weights="auto", cyclic=True, guidance="none"))
    assert len(seen) == 2 and seen[0][0][0] == 3 and seen[0][1] == [1.5, 7.0, 1.5] and seen[0][2] is True


def test_chunking_does_not_change_results(tiny):
    a = sample_latents(tiny, _frames(2), SamplerConfig(steps=1, view_batch=32, guidance="cfg", scales=(2.0,)))
    b = sample_latents(tiny, _frames(2), SamplerConfig(steps=1, view_batch=5, guidance="cfg", scales=(2.0,)))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_shared_initial_noise(tiny):
    same = _frames(1).expand(2, -1, -1, -1)
    cfg = dict(steps=1, guidance="none", temporal_weights="none")
    x = sample_latents(tiny, same, SamplerConfig(**cfg))  # 1 step: no eta noise; posterior noise differs
    y = sample_latents(tiny, same, SamplerConfig(**cfg, shared_noise=False))
    assert not torch.allclose(y[0], y[1])
    assert (x[0] - x[1]).abs().max() < (y[0] - y[1]).abs().max()
    z = sample_latents(tiny, same, SamplerConfig(**cfg))
    torch.testing.assert_close(x, z)  # seeded: reproducible


def test_cancel_between_steps(tiny):
    calls = []

    def cb(step, total, info):
        calls.append(step)
        raise Cancelled("user pressed cancel")

    with pytest.raises(Cancelled):
        sample_latents(tiny, _frames(1), SamplerConfig(steps=3), callback=cb)
    assert calls == [1]


def test_bad_inputs(tiny):
    with pytest.raises(ValueError, match="guidance"):
        sample_latents(tiny, _frames(1), SamplerConfig(guidance="both"))
    with pytest.raises(ValueError, match="needs 2 scale"):
        sample_latents(tiny, _frames(1), SamplerConfig(scales=(2.0,)))
    with pytest.raises(ValueError, match="multiple of 64"):
        sample_latents(tiny, torch.zeros(1, 3, 48, 48))
    with pytest.raises(ValueError, match=r"\[K, 3, H, W\]"):
        sample_latents(tiny, torch.zeros(1, 64, 64, 3))
    with pytest.raises(ValueError, match="square"):
        syncdreamer_t(tiny, torch.rand(2, 64, 48, 3), prepare="none")
    assert select_frames(10, 4).tolist() == [0, 3, 6, 9] and select_frames(3, 0).tolist() == [0, 1, 2]


def test_pipeline_prepares_raw_frames(tiny, monkeypatch):
    """Raw frames + mask are cropped to the model size (one clip box); 256² frames pass through in 'auto'."""
    import e4d.syncdreamer.pipeline as P

    seen = {}
    monkeypatch.setattr(P, "generate_view_matrix",
                        lambda model, fr, al, cfg, times, callback, clock: seen.update(fr=fr, al=al, times=times))
    raw = torch.rand(4, 90, 120, 3)
    mask = torch.zeros(4, 90, 120)
    mask[:, 20:60, 30:70] = 1
    syncdreamer_t(tiny, raw, mask, num_frames=2)
    assert seen["fr"].shape == (2, 256, 256, 3) and seen["al"].shape == (2, 256, 256)
    assert seen["times"] == [0.0, 1.0] and seen["fr"][:, 0, 0].eq(1).all()  # white canvas corner
    with pytest.raises(ValueError, match="background-removal"):
        syncdreamer_t(tiny, raw, None, num_frames=2)
    ready = torch.rand(3, 256, 256, 3)
    syncdreamer_t(tiny, ready, None, num_frames=0)
    assert seen["fr"] is not None and torch.equal(seen["fr"], ready) and seen["times"] == [0.0, 0.5, 1.0]


def test_speed_settings_do_not_change_results(tiny):
    """accelerate(): literal depth attention and channels_last give the fused default's latents."""
    from e4d.syncdreamer.speed import accelerate

    cfg = SamplerConfig(steps=1, view_batch=16, guidance="decomposed")
    try:
        a = sample_latents(tiny, _frames(2), cfg)
        b = sample_latents(accelerate(tiny, literal_depth_attention=True), _frames(2), cfg)
        c = sample_latents(accelerate(tiny, channels_last=True), _frames(2), cfg)
    finally:
        accelerate(tiny)  # module-scoped fixture: back to the defaults
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="compile_mode"):
        accelerate(tiny, compile_mode="fastest")
