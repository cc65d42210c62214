"""Zero123 SDS guidance on tiny random models (CPU): gradient identity, camera embedding, schedule, cache."""
from __future__ import annotations

import math

import pytest
import torch

from e4d.cameras import input_view, syncdreamer16
from e4d.guidance.camera_embed import orbit_coordinates, zero123_camera_embedding
from e4d.guidance.loader import load_zero123
from e4d.guidance.zero123 import SDSConfig, Zero123Guidance, sds_loss, sds_timesteps
from e4d.viewmatrix import ViewMatrix

from tiny_zero123 import write_tiny_zero123
from tiny_zero123 import hide_torchvision_stub  # noqa: E402


@pytest.fixture(autouse=True)
def _no_torchvision_stub():
    hide_torchvision_stub()  # see tests/tiny_zero123.py: ComfyUI's CPU stub confuses transformers


@pytest.fixture(scope="session")
def tiny_z123(tmp_path_factory):
    return write_tiny_zero123(tmp_path_factory.mktemp("z123") / "tiny-zero123")


def _vm(T=2, size=32, elev=10.0):
    g = torch.Generator().manual_seed(1)
    imgs = torch.rand(T, 1, size, size, 3, generator=g)
    inp = torch.rand(T, size, size, 3, generator=g)
    return ViewMatrix(imgs, syncdreamer16(size)[[0]], torch.linspace(0, 1, T), input_images=inp,
                      input_camera=input_view(elev, size))


def test_camera_embedding_values():
    d_el = torch.tensor([10.0, 0.0, -30.0])
    d_az = torch.tensor([90.0, 180.0, -90.0])
    ref = torch.tensor([20.0, 20.0, 20.0])
    e = zero123_camera_embedding(d_el, d_az, torch.tensor([0.0, 0.5, 0.0]), ref, "zero123-xl")
    assert e.shape == (3, 1, 4)
    # Δpolar = -Δelevation (polar measured from +Z), radians
    torch.testing.assert_close(e[:, 0, 0], torch.deg2rad(torch.tensor([-10.0, 0.0, 30.0])))
    torch.testing.assert_close(e[:, 0, 1], torch.tensor([1.0, 0.0, -1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(e[:, 0, 2], torch.tensor([0.0, -1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(e[:, 0, 3], torch.tensor([0.0, 0.5, 0.0]))  # Δradius
    s = zero123_camera_embedding(d_el, d_az, torch.zeros(3), ref, "stable-zero123")
    torch.testing.assert_close(s[:, 0, 3], torch.full((3,), math.radians(70.0)))  # polar of the reference
    torch.testing.assert_close(s[:, 0, :3], e[:, 0, :3])
    with pytest.raises(ValueError, match="variant"):
        zero123_camera_embedding(d_el, d_az, torch.zeros(3), ref, "zero123-plus")


def test_timestep_schedule():
    assert sds_timesteps(0, 500, 3, 0.02, 0.98, True).tolist() == [980, 980, 980]
    assert sds_timesteps(500, 500, 1, 0.02, 0.98, True).tolist() == [20]
    assert sds_timesteps(250, 500, 1, 0.02, 0.98, True).tolist() == [500]
    assert sds_timesteps(0, 100, 1, 0.2, 0.5, True).tolist() == [500]
    g = torch.Generator().manual_seed(0)
    r = sds_timesteps(3, 10, 1000, 0.2, 0.6, False, g)
    assert r.min() >= 200 and r.max() <= 600 and len(set(r.tolist())) > 100
    with pytest.raises(ValueError, match="t_min"):
        sds_timesteps(0, 10, 1, 0.9, 0.1, True)


def test_sds_loss_gradient_is_g():
    z = torch.randn(3, 4, 8, 8, requires_grad=True)
    g = torch.randn(3, 4, 8, 8)
    sds_loss(z, g, "sum").backward()
    torch.testing.assert_close(z.grad, g)
    z.grad = None
    sds_loss(z, g, "mean").backward()
    torch.testing.assert_close(z.grad, g / 3)


def test_sds_step_gradient_cache_and_cameras(tiny_z123):
    comps = load_zero123(tiny_z123)
    calls = []
    comps.image_encoder.register_forward_hook(lambda m, i, o: calls.append(("clip", i[0].shape[0] if i else None)))
    guid = Zero123Guidance(comps, SDSConfig(guidance_scale=5.0, reduction="mean", every=1))
    guid.keep_debug = True
    vm = _vm(T=3)
    guid.prepare(vm)
    assert guid.cache.clip.shape == (3, 32) and guid.cache.latents.shape == (3, 4, 32, 32)
    assert guid.cache.frames_encoded == 3 and len(calls) == 1
    n_clip = len(calls)

    gen = torch.Generator().manual_seed(0)
    tidx = torch.tensor([2, 0])
    cams = guid.sample_cameras(tidx, 0, 10, gen)
    assert len(cams) == 2 and (cams.width, cams.height) == (256, 256)
    _, el, r = orbit_coordinates(cams)
    torch.testing.assert_close(r, torch.full((2,), 1.5))
    d_el = el - 10.0
    assert ((d_el >= -30) & (d_el < 30)).all()
    torch.testing.assert_close(guid._pending[1], d_el, atol=1e-4, rtol=0)
    # the w2c matrices agree with the embedded deltas (orbit coordinates re-derived from the camera centres)
    from e4d.cameras import Cameras

    az_c, el_c, _ = orbit_coordinates(Cameras(cams.w2c, cams.K, 256, 256))
    torch.testing.assert_close(el_c - 10.0, guid._pending[1], atol=1e-3, rtol=0)
    d_az_c = torch.remainder(az_c - 0.0 - guid._pending[2] + 180.0, 360.0) - 180.0
    torch.testing.assert_close(d_az_c, torch.zeros(2), atol=1e-3, rtol=0)
    # focal: same field of view as the input camera (280 px at 256)
    torch.testing.assert_close(cams.K[:, 0, 0], torch.full((2,), 280.0))

    rgb = torch.rand(2, 3, 64, 64, requires_grad=True)
    loss = guid.loss(rgb, tidx, 0, 10)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    last = guid.last
    assert last["t"].tolist() == [980, 980]
    # dL/dz = w(t) (ε̂ - ε) / B, with ε̂ recomputed here branch by branch
    unet = comps.unet
    with torch.no_grad():
        ref = guid.cache.latents[tidx]
        x_c = torch.cat([last["z_t"], ref], 1)
        x_u = torch.cat([last["z_t"], torch.zeros_like(ref)], 1)
        e_c = unet(x_c, last["t"], encoder_hidden_states=last["cond"]).sample
        e_u = unet(x_u, last["t"], encoder_hidden_states=torch.zeros_like(last["cond"])).sample
        eps_hat = e_u + 5.0 * (e_c - e_u)
        w = 1 - comps.alphas_cumprod()[last["t"]]
        expect = w.view(-1, 1, 1, 1) * (eps_hat - last["eps"])
    torch.testing.assert_close(last["eps_pred"], eps_hat, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(last["latents"].grad, expect / 2, atol=1e-5, rtol=1e-4)
    # the gradient reaches the leaf render through the VAE encoder
    assert rgb.grad is not None and torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    # conditioning is cached: a second step does not run CLIP again
    guid.sample_cameras(tidx, 5, 10, gen)
    guid.loss(torch.rand(2, 3, 256, 256), tidx, 5, 10)
    assert len(calls) == n_clip
    assert guid.last["t"].tolist() == [500, 500]


def test_condition_tokens_use_camera(tiny_z123):
    comps = load_zero123(tiny_z123)
    guid = Zero123Guidance(comps, SDSConfig(variant="stable-zero123"))
    guid.prepare(_vm(T=1, elev=0.0))
    tidx = torch.tensor([0, 0])
    guid.sample_cameras(tidx, 0, 1, torch.Generator().manual_seed(3))
    tok = guid.condition_tokens(tidx)
    _, d_el, d_az = guid._pending
    emb = zero123_camera_embedding(d_el, d_az, torch.zeros(2), torch.zeros(2), "stable-zero123")
    x = torch.cat([guid.cache.clip[[0, 0]][:, None], emb], -1)
    torch.testing.assert_close(tok, comps.camera_projection.proj(x))
    assert tok.shape == (2, 1, 32)


def test_errors(tiny_z123, tmp_path):
    comps = load_zero123(tiny_z123)
    guid = Zero123Guidance(comps)
    with pytest.raises(RuntimeError, match="prepare"):
        guid.sample_cameras(torch.tensor([0]), 0, 1)
    guid.prepare(_vm(T=2))
    guid.sample_cameras(torch.tensor([0]), 0, 1)
    with pytest.raises(ValueError, match="same time_idx"):
        guid.loss(torch.rand(1, 3, 32, 32), torch.tensor([1]), 0, 1)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        guid.loss(torch.rand(1, 32, 32, 3), torch.tensor([0]), 0, 1)
    with pytest.raises(FileNotFoundError, match="ashawkey/zero123-xl-diffusers"):
        load_zero123(tmp_path / "nope")
    (tmp_path / "half" / "unet").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"lacks \['unet', 'vae', 'image_encoder'\]"):
        load_zero123(tmp_path / "half")


def test_lazy_loader_holds_nothing_until_prepare(tiny_z123):
    loaded = []

    def loader():
        loaded.append(1)
        return load_zero123(tiny_z123)

    guid = Zero123Guidance(loader, SDSConfig(weight=0.5, every=2))
    assert guid.weight == 0.5 and not loaded
    guid.prepare(_vm(T=1))
    assert loaded == [1]
    tidx = torch.tensor([0])
    guid.sample_cameras(tidx, 1, 4, torch.Generator().manual_seed(0))
    rgb = torch.rand(1, 3, 32, 32, requires_grad=True)
    skipped = guid.loss(rgb, tidx, 1, 4)  # every=2: step 1 is skipped
    skipped.backward()
    assert skipped.item() == 0.0 and rgb.grad.abs().sum() == 0
    guid.release()
    assert guid.cache is None and guid._model is None


def test_every_k_carries_the_skipped_steps(tiny_z123):
    """every=k with carry_skipped: an applied step's loss (and gradient) is k times that of carry_skipped=False."""
    comps = load_zero123(tiny_z123)
    losses = {}
    for carry in (True, False):
        guid = Zero123Guidance(comps, SDSConfig(every=3, carry_skipped=carry))
        guid.prepare(_vm(T=2))
        tidx = torch.tensor([0, 1])
        guid.sample_cameras(tidx, 3, 9, torch.Generator().manual_seed(0))
        losses[carry] = guid.loss(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), tidx, 3, 9)
    assert losses[False] > 0
    torch.testing.assert_close(losses[True], 3 * losses[False])
    assert Zero123Guidance(comps, SDSConfig(every=1)).step_factor() == 1.0


def test_default_schedule_is_every_second_step_with_two_views_per_time():
    """The default keeps the statistics of one view on every step in half the steps; with_every(k) sets the same
    coupling for any k (the node's and the CLI's ``every``)."""
    d = SDSConfig()
    assert (d.every, d.views_per_time, d.carry_skipped) == (2, 2, True)
    c = SDSConfig(weight=0.3).with_every(3)
    assert (c.every, c.views_per_time, c.carry_skipped, c.weight) == (3, 3, True, 0.3)
    assert SDSConfig().with_every(1).views_per_time == 1
    with pytest.raises(ValueError, match="every"):
        SDSConfig().with_every(0)


def test_refine_guidance_mse_to_redenoised_render(tiny_z123):
    from diffusers import DDIMScheduler

    from e4d.guidance.refine import RefineConfig, RefineGuidance, refine_timesteps

    sched = DDIMScheduler.from_config(load_zero123(tiny_z123).scheduler_config)
    assert refine_timesteps(sched, 50, 0.2).tolist() == [181, 161, 141, 121, 101, 81, 61, 41, 21, 1]
    with pytest.raises(ValueError, match="strength"):
        refine_timesteps(sched, 10, 0.0)
    guid = RefineGuidance(load_zero123(tiny_z123), RefineConfig(steps=10, strength=0.2, every=1))
    guid.keep_debug = True
    guid.prepare(_vm(T=2))
    tidx = torch.tensor([1])
    guid.sample_cameras(tidx, 0, 1, torch.Generator().manual_seed(0))
    rgb = torch.rand(1, 3, 256, 256, requires_grad=True)
    loss = guid.loss(rgb, tidx, 0, 1)
    target = guid.last["target"]
    assert target.shape == (1, 3, 256, 256) and not target.requires_grad
    torch.testing.assert_close(loss, ((rgb.detach() - target) ** 2).mean())
    loss.backward()
    torch.testing.assert_close(rgb.grad, 2 * (rgb.detach() - target) / rgb.numel())


def test_fit_with_zero123_sds_moves_the_gaussians(tiny_z123):
    """End to end on CPU: the fit's guidance hook with the real SDS object (reference renderer, 2 steps)."""
    from e4d.cameras import orbit_cameras
    from e4d.fit import fit, preset, reduced_for_cpu
    from e4d.fit.trainer import initial_gaussians

    S, T = 24, 2
    cams = orbit_cameras([0, 90], [20, 20], 1.5, S)
    g = torch.Generator().manual_seed(0)
    vm = ViewMatrix(torch.rand(T, 2, S, S, 3, generator=g), cams, torch.linspace(0, 1, T),
                    input_images=torch.rand(T, S, S, 3, generator=g), input_camera=orbit_cameras([0.0], [0.0], 1.5, S))
    cfg = reduced_for_cpu(preset("paper"), num_points=200, iterations=2, times_per_batch=2, views_per_batch=1,
                          w_rgb=0.0, w_ssim=0.0, backend="reference", log_every=1)
    init = initial_gaussians(vm, cfg, torch.Generator().manual_seed(0))
    guid = Zero123Guidance(load_zero123(tiny_z123), SDSConfig(t_min=0.2, t_max=0.6))
    res = fit(vm, config=cfg, guidance=guid, init=init)
    # the default schedule: step 0 scores 2 views per time (4 renders), step 1 is skipped
    assert "l_sds" in res.history[0] and math.isfinite(res.history[0]["l_sds"]) and "l_sds" not in res.history[1]
    assert not torch.equal(res.gaussians.sh, init.sh)  # only the SDS term was on
