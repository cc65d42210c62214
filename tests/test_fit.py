"""The 4D Gaussian fit on CPU (reference renderer): it learns, is deterministic, weights by confidence, calls
the guidance hook, validates its inputs. Tiny scenes (24 px, a few hundred Gaussians) keep this file fast."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from e4d.cameras import orbit_cameras
from e4d.confidence import Confidence
from e4d.fit import FitConfig, evaluate, fit, preset, reduced_for_cpu
from e4d.fit.losses import alpha_loss, confidence_dssim, confidence_l1, total_loss
from e4d.fit.sampler import plan_batches
from e4d.fit.trainer import initial_gaussians, xyz_learning_rate
from e4d.gaussians4d import init_random
from e4d.metrics import ssim_map
from e4d.progress import Cancelled
from e4d.render import render
from e4d.viewmatrix import ViewMatrix

S = 24


@pytest.fixture(scope="module")
def scene():
    """A small moving object (60 Gaussians drifting along x) seen by 6 training + 2 held-out cameras at 3 times."""
    gt = init_random(num=60, radius=0.3, time_range=(0.0, 1.0), sigma_t=0.6, scale=0.07, opacity=0.9,
                     rgb_range=(0.0, 1.0), seed=3)
    # 4D rotation tilting x towards t makes the slices move over time.
    gt.rot_l[:, 0], gt.rot_l[:, 3] = math.cos(0.15), math.sin(0.15)
    cams = orbit_cameras([0, 60, 120, 180, 240, 300, 30, 210], [20, 20, 20, 20, 20, 20, -10, -10], 1.5, S)
    T = 3
    times = torch.linspace(0, 1, T)
    with torch.no_grad():
        out = render(gt, times, cams.w2c[None].expand(T, -1, -1, -1), cams.K[None].expand(T, -1, -1, -1), S, S)
    inp = orbit_cameras([0.0], [0.0], 1.5, S)
    with torch.no_grad():
        out_in = render(gt, times, inp.w2c[None].expand(T, -1, -1, -1), inp.K[None].expand(T, -1, -1, -1), S, S)
    vm = ViewMatrix(out.rgb.clamp(0, 1), cams, times, alpha=out.alpha[..., 0],
                    input_images=out_in.rgb[:, 0].clamp(0, 1), input_alpha=out_in.alpha[:, 0, ..., 0], input_camera=inp)
    train = vm.select_views(range(6))
    test = dataclasses.replace(vm.select_views([6, 7]), input_images=None, input_alpha=None, input_camera=None)
    return train, test


def tiny(**kw) -> FitConfig:
    base = dict(num_points=300, iterations=30, times_per_batch=2, views_per_batch=2, log_every=10)
    base.update(kw)
    return reduced_for_cpu(preset("paper"), **base)


def test_short_fit_raises_heldout_psnr(scene):
    train, test = scene
    cfg = tiny()
    before = evaluate(initial_gaussians(train, cfg, torch.Generator().manual_seed(cfg.seed)), test)["psnr"]
    res = fit(train, config=cfg)
    after = evaluate(res.gaussians, test)["psnr"]
    assert after > before + 2.0, (before, after)
    assert res.history[-1]["step"] == 30 and res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.gaussians.num == 300 and not res.gaussians.means.requires_grad


def test_fit_is_deterministic_given_seed(scene):
    train, _ = scene
    a = fit(train, config=tiny(iterations=3)).gaussians
    b = fit(train, config=tiny(iterations=3)).gaussians
    c = fit(train, config=tiny(iterations=3, seed=1)).gaussians
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, b.state_dict()[k], rtol=0, atol=0)
    assert not torch.equal(a.means, c.means)


def test_zero_confidence_gives_no_update(scene):
    train, _ = scene
    T, V, H, W = train.T, train.V, train.H, train.W
    cfg = tiny(iterations=2, use_input_view=False)
    init = initial_gaussians(train, cfg, torch.Generator().manual_seed(5))
    zero = Confidence(torch.zeros(T, V, H, W), torch.zeros(T, V, H, W))
    res0 = fit(train, confidence=zero, config=cfg, init=init)
    for k, v in init.state_dict().items():
        torch.testing.assert_close(res0.gaussians.state_dict()[k], v, rtol=0, atol=0, msg=f"{k} moved")
    res1 = fit(train, confidence=Confidence.ones(T, V, H, W), config=cfg, init=init)
    assert not torch.equal(res1.gaussians.means, init.means)


def test_confidence_weights_each_pixel():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 3, 16, 16, generator=g, requires_grad=True)
    target = torch.rand(2, 3, 16, 16, generator=g)
    c = torch.ones(2, 1, 16, 16)
    c[:, :, 4:9, 5:10] = 0.0
    confidence_l1(pred, target, c).backward()
    assert pred.grad[:, :, 4:9, 5:10].abs().max() == 0 and pred.grad[:, :, 0, 0].abs().min() > 0
    # The SSIM term is linear in the confidence: a one-hot confidence picks exactly that pixel's (1 - SSIM).
    one = torch.zeros(2, 1, 16, 16)
    one[:, :, 7, 3] = 1.0
    d = confidence_dssim(pred.detach(), target, one)
    ref = (1 - ssim_map(pred.detach(), target))[:, :, 7, 3].sum() / (2 * 3 * 16 * 16)
    torch.testing.assert_close(d, ref)
    assert float(confidence_l1(pred.detach(), target, None)) == pytest.approx(float((pred.detach() - target).abs().mean()))
    torch.testing.assert_close(total_loss(torch.tensor(1.0), torch.tensor(1.0)), torch.tensor(10000.0))
    valid = torch.tensor([1.0, 0.0])
    a = alpha_loss(torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4), valid)
    assert float(a) == pytest.approx(1.0)


def test_official_release_preset_runs_with_alpha(scene):
    train, _ = scene
    cfg = preset("official-release").replace(num_points=200, iterations=3, times_per_batch=1, views_per_batch=2,
                                             log_every=1)
    assert cfg.loss == "mse" and cfg.w_alpha > 0 and cfg.lr_opacity == 0.05 and cfg.lr_scale == 0.005
    res = fit(train, config=cfg)
    assert all("l_alpha" in h and math.isfinite(h["loss"]) for h in res.history) and len(res.history) == 3


class _RecordingGuidance:
    """Pulls renders towards black; records the protocol calls."""

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight
        self.calls = {"prepare": 0, "sample": [], "loss": []}

    def prepare(self, vm) -> None:
        self.calls["prepare"] += 1

    def sample_cameras(self, time_idx, step, total, generator):
        self.calls["sample"].append((time_idx.tolist(), step, total))
        az = torch.rand(len(time_idx), generator=generator) * 360
        return orbit_cameras(az.tolist(), 10.0, 1.5, 16)

    def loss(self, renders, time_idx, step, total):
        assert renders.shape == (len(time_idx), 3, 16, 16) and renders.requires_grad
        self.calls["loss"].append(step)
        return renders.mean()


def test_guidance_hook_is_called_and_its_gradient_reaches_the_gaussians(scene):
    train, _ = scene
    cfg = tiny(iterations=2, w_rgb=0.0, w_ssim=0.0, times_per_batch=2)
    init = initial_gaussians(train, cfg, torch.Generator().manual_seed(0))
    guid = _RecordingGuidance()
    res = fit(train, config=cfg, guidance=guid, init=init)
    assert guid.calls["prepare"] == 1 and guid.calls["loss"] == [0, 1]
    assert [s[1:] for s in guid.calls["sample"]] == [(0, 2), (1, 2)] and len(guid.calls["sample"][0][0]) == 2
    assert not torch.equal(res.gaussians.sh, init.sh)  # only the guidance loss was on
    assert "l_sds" in res.history[-1]
    # weight 0 disables it: no image loss and no guidance -> nothing moves
    res0 = fit(train, config=cfg, guidance=_RecordingGuidance(0.0), init=init)
    torch.testing.assert_close(res0.gaussians.sh, init.sh, rtol=0, atol=0)
    with pytest.raises(TypeError, match="lacks"):
        fit(train, config=cfg, guidance=object())


def test_guidance_skips_steps_without_sampling_or_rendering(scene):
    train, _ = scene
    guid = _RecordingGuidance()
    guid.skips = lambda step: step % 2 == 1  # the optional protocol method (SDSConfig.every = 2)
    fit(train, config=tiny(iterations=4, w_rgb=0.0, w_ssim=0.0), guidance=guid)
    assert guid.calls["loss"] == [0, 2] and [s[1] for s in guid.calls["sample"]] == [0, 2]


def test_guidance_views_per_time_renders_k_views_of_each_sampled_time(scene):
    """views_per_time = 2: the guidance sees each sampled time twice, k consecutive cameras per time, and its
    renders are those of that time from those cameras (time-major order)."""
    train, _ = scene
    cfg = tiny(iterations=1, w_rgb=0.0, w_ssim=0.0, times_per_batch=2)
    init = initial_gaussians(train, cfg, torch.Generator().manual_seed(0))
    guid = _RecordingGuidance()
    guid.views_per_time = 2
    seen = {}
    sample, loss = guid.sample_cameras, guid.loss

    def sample_cameras(time_idx, step, total, generator):
        seen["cams"] = sample(time_idx, step, total, generator)
        return seen["cams"]

    def record_loss(renders, time_idx, step, total):
        seen["renders"], seen["time_idx"] = renders.detach(), time_idx
        return loss(renders, time_idx, step, total)

    guid.sample_cameras, guid.loss = sample_cameras, record_loss
    fit(train, config=cfg, guidance=guid, init=init)
    ti = seen["time_idx"]
    assert len(ti) == 4 and ti[0] == ti[1] and ti[2] == ti[3]
    cams = seen["cams"]
    for i in range(4):  # render each view alone at its time from the initial Gaussians (the step-0 state)
        ref = render(init, train.times[ti[i:i + 1]], cams.w2c[i][None, None], cams.K[i][None, None], 16, 16,
                     background=float(cfg.background), backend=cfg.backend)
        torch.testing.assert_close(seen["renders"][i], ref.rgb[0, 0].permute(2, 0, 1), atol=1e-5, rtol=1e-5)
    bad = _RecordingGuidance()
    bad.views_per_time = 0
    with pytest.raises(ValueError, match="views_per_time"):
        fit(train, config=cfg, guidance=bad, init=init)


def test_callback_progress_and_cancel(scene):
    train, _ = scene
    seen = []

    def cb(step, total, info):
        seen.append((step, total, "loss" in info))
        if step == 3:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        fit(train, config=tiny(iterations=10, log_every=2), callback=cb)
    assert seen == [(1, 10, False), (2, 10, True), (3, 10, False)]


def test_bad_inputs_give_clear_errors(scene):
    train, _ = scene
    with pytest.raises(TypeError, match="ViewMatrix"):
        fit(train.images, config=tiny())
    nan = dataclasses.replace(train)
    nan.images = train.images.clone()
    nan.images[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit(nan, config=tiny())
    with pytest.raises(ValueError, match="confidence maps"):
        fit(train, confidence=Confidence.ones(1, 2, 3, 4), config=tiny())
    with pytest.raises(ValueError, match="iterations"):
        FitConfig(iterations=0)
    with pytest.raises(ValueError, match="loss"):
        FitConfig(loss="l2")
    with pytest.raises(ValueError, match="unknown fit preset"):
        preset("fast")
    with pytest.raises(ValueError, match="gsplat"):
        fit(train, config=tiny(backend="gsplat"))


def test_sampler_and_schedules():
    plan = plan_batches(6, 5, 30, 2, 3, torch.Generator().manual_seed(0))
    assert plan.time_idx.shape == (30, 2) and plan.view_idx.shape == (30, 2, 3)
    assert torch.bincount(plan.time_idx.flatten(), minlength=6).tolist() == [10] * 6  # even time coverage
    assert all(len(set(r.tolist())) == 3 for r in plan.view_idx.reshape(-1, 3))  # distinct views per time
    small = plan_batches(1, 2, 4, 4, 8, torch.Generator().manual_seed(0))
    assert small.time_idx.shape == (4, 1) and small.view_idx.shape == (4, 1, 2)
    cfg = FitConfig()
    assert xyz_learning_rate(0, cfg) == pytest.approx(0.01)
    assert xyz_learning_rate(300, cfg) == pytest.approx(0.0002) == xyz_learning_rate(499, cfg)
    assert xyz_learning_rate(150, cfg) == pytest.approx(math.sqrt(0.01 * 0.0002))
    # sigma_t init: sqrt((K - 1) / 5) frames, converted with the frame spacing 1/16
    vm16 = ViewMatrix(torch.ones(16, 1, 4, 4, 3), orbit_cameras([0.0], [0.0], 1.5, 4), torch.arange(16) / 16)
    g = initial_gaussians(vm16, FitConfig(num_points=10), torch.Generator().manual_seed(0))
    assert torch.exp(g.log_scales[:, 3]) == pytest.approx(math.sqrt(3.0) / 16, rel=1e-5)
    assert float(g.means[:, 3].min()) >= 0 and float(g.means[:, 3].max()) <= 15 / 16
    assert torch.equal(g.rot_l, torch.tensor([[1.0, 0, 0, 0]]).expand(10, 4))


@pytest.mark.gpu
def test_gpu_fit_is_fast_and_learns(scene):
    train, test = scene
    dev = torch.device("cuda")
    cfg = preset("paper", num_points=2000, iterations=100)
    res = fit(train.to(dev), config=cfg)
    assert evaluate(res.gaussians, test.to(dev))["psnr"] > 20.0
    assert res.seconds < 30.0


def test_densify_option_changes_the_set_and_keeps_training(scene):
    train, _ = scene
    cfg = tiny(iterations=6, densify=True, densify_from=2, densify_until=4, densify_every=2, densify_fraction=0.1,
               prune_opacity=0.09, log_every=1)
    res = fit(train, config=cfg)
    nums = [h["num"] for h in res.history]
    assert nums[0] == 300 and nums[-1] != 300 and all(math.isfinite(h["loss"]) for h in res.history)
    assert res.gaussians.num == nums[-1]


def test_all_ones_alpha_is_not_used_as_coverage(scene, caplog):
    """A video without alpha yields an all-ones mask: the fit must run exactly as without alpha (same losses, same
    Gaussians), while a real alpha does change it."""
    train, _ = scene
    cfg = tiny(iterations=4, w_alpha=2000.0, log_every=1)
    ones = dataclasses.replace(train, alpha=torch.ones_like(train.images[..., 0]))
    with caplog.at_level("WARNING"):
        res_ones = fit(ones, config=cfg)
    res_none = fit(dataclasses.replace(train, alpha=None), config=cfg)
    res_real = fit(train, config=cfg)
    assert [h["loss"] for h in res_ones.history] == [h["loss"] for h in res_none.history]
    torch.testing.assert_close(res_ones.gaussians.means, res_none.gaussians.means, rtol=0, atol=0)
    assert [h["loss"] for h in res_real.history] != [h["loss"] for h in res_none.history]
    assert any("all ones" in r.getMessage() for r in caplog.records)


def test_densify_strategy_edits_parameters_and_adam_moments_in_place():
    """The strategy keeps the optimizer object and its groups, resizes every parameter and carries the Adam moments
    of the survivors (children start at zero)."""
    from e4d.fit.densify import DensifyStrategy

    torch.manual_seed(0)
    n = 10
    opacity = torch.zeros(n)
    opacity[0] = -8.0  # sigmoid < prune_opacity: removed
    params = {"xyz": torch.full((n, 3), 0.5), "log_scales": torch.full((n, 4), -2.0), "opacity_logit": opacity}
    for t in params.values():
        t.requires_grad_(True)
    opt = torch.optim.Adam([{"params": [t], "lr": 0.01, "name": k} for k, t in params.items()])
    groups = list(opt.param_groups)
    strategy = DensifyStrategy(start=2, stop=2, every=1, fraction=0.2, prune_opacity=0.005, max_points=100, seed=0)
    state = strategy.initialize_state()
    for step in (1, 2):
        # xyz gradient norm grows with the row index, so rows 8 and 9 are the ones split
        ((params["xyz"] * torch.arange(n, dtype=torch.float32)[:, None]).square().sum()
         + params["log_scales"].sum() + params["opacity_logit"].sum()).backward()
        opt.step()
        old = {k: (t, opt.state[t]["exp_avg"].clone()) for k, t in params.items()}
        strategy.step_post_backward(params, opt, state, step)
        opt.zero_grad(set_to_none=True)
        if step == 1:  # not a densify step: nothing changes
            assert all(params[k] is old[k][0] for k in params)
    # row 0 is pruned; the 2 largest-gradient rows (8, 9) are split into 4 children
    assert params["xyz"].shape[0] == n - 1 - 2 + 4
    assert list(opt.param_groups) == groups and all(gr["params"][0] is params[gr["name"]] for gr in groups)
    survivors = torch.arange(1, 8)
    for k, t in params.items():
        m = opt.state[t]["exp_avg"]
        torch.testing.assert_close(m[:7], old[k][1][survivors])
        assert not m[7:].any() and t.requires_grad and t.is_leaf
    assert state.grad_sum is None


def test_confidence_is_tied_to_its_view_matrix(scene):
    from e4d.confidence_maps import confidence_for_view_matrix
    from e4d.interp import FlowInterpolator

    train, _ = scene
    conf = confidence_for_view_matrix(train, FlowInterpolator())
    assert torch.equal(conf.times, train.times)
    shifted = dataclasses.replace(train, times=train.times * 0.5)
    with pytest.raises(ValueError, match="computed on a view matrix with times"):
        fit(shifted, conf, tiny(iterations=1))
    fit(train, conf, tiny(iterations=1))
