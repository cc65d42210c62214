"""Slicing 4D Gaussians at time t against closed-form Gaussian conditioning (4DGS eq. (4)-(6))."""
import numpy as np
import pytest
import torch

from e4d.gaussians4d import Gaussians4D, init_random
from e4d.rotation4d import covariance_4d
from e4d.sh import SH_C0, temporal_basis
from e4d.slicing import (CULL_THRESHOLD, conditional_covariance, conditional_mean, slice_at, slice_compact,
                         temporal_marginal)


def random_gaussians(n=20, seed=0, time_degree=0, sh_degree=0, dtype=torch.float64):
    g = init_random(n, seed=seed, time_degree=time_degree, sh_degree=sh_degree, dtype=dtype)
    gen = torch.Generator().manual_seed(seed + 100)
    g.rot_l = torch.randn(n, 4, generator=gen, dtype=dtype)
    g.rot_r = torch.randn(n, 4, generator=gen, dtype=dtype)
    g.log_scales = torch.log(0.05 + 0.3 * torch.rand(n, 4, generator=gen, dtype=dtype))
    g.sh = torch.randn(g.sh.shape, generator=gen, dtype=dtype) * 0.3
    return g


def test_slice_matches_numpy_conditioning():
    g = random_gaussians(20, seed=1)
    times = torch.tensor([0.1, 0.5, 0.93], dtype=torch.float64)
    s = slice_at(g, times, cull_threshold=0.0)
    cov = covariance_4d(g.log_scales, g.rot_l, g.rot_r).numpy()
    mu = g.means.numpy()
    for i in range(g.num):
        S = cov[i]
        # closed form via the precision matrix: Sigma_{3|t} = (P_{1:3,1:3})^-1, mean shift -P33^-1 P_{1:3,4} dt
        P = np.linalg.inv(S)
        cov3 = np.linalg.inv(P[:3, :3])
        np.testing.assert_allclose(s.covs[0, i].numpy(), cov3, rtol=1e-9, atol=1e-12)
        for b, t in enumerate(times.tolist()):
            m = mu[i, :3] - cov3 @ P[:3, 3] * (t - mu[i, 3])
            np.testing.assert_allclose(s.means[b, i].numpy(), m, rtol=1e-9, atol=1e-12)
            p = np.exp(-0.5 * (t - mu[i, 3]) ** 2 / S[3, 3])
            op = 1 / (1 + np.exp(-g.opacity_logit[i].item()))
            np.testing.assert_allclose(s.opacities[b, i].item(), op * p, rtol=1e-9)


def test_each_equation_on_its_own():
    cov = torch.tensor([[2.0, 0.3, 0.1, 0.5], [0.3, 1.0, 0.2, -0.4], [0.1, 0.2, 1.5, 0.2], [0.5, -0.4, 0.2, 0.8]],
                       dtype=torch.float64)[None]
    mu = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    t = torch.tensor([0.9], dtype=torch.float64)
    m = conditional_mean(mu[:, :3], mu[:, 3], cov[:, :3, 3], cov[:, 3, 3], t)
    torch.testing.assert_close(m[0, 0], mu[0, :3] + cov[0, :3, 3] / 0.8 * 0.5)
    c = conditional_covariance(cov[:, :3, :3], cov[:, :3, 3], cov[:, 3, 3])
    torch.testing.assert_close(c[0], cov[0, :3, :3] - torch.outer(cov[0, :3, 3], cov[0, :3, 3]) / 0.8)
    p = temporal_marginal(mu[:, 3], cov[:, 3, 3], t)
    torch.testing.assert_close(p, torch.tensor([[np.exp(-0.5 * 0.25 / 0.8)]], dtype=torch.float64))


def test_axis_aligned_gaussian_does_not_move():
    g = init_random(30, seed=2, dtype=torch.float64)  # identity rotations: Sigma is diagonal
    s = slice_at(g, [0.0, 0.3, 1.0], cull_threshold=0.0)
    for b in range(3):
        torch.testing.assert_close(s.means[b], g.means[:, :3])
        torch.testing.assert_close(s.covs[b], torch.diag_embed(g.scales[:, :3] ** 2))


def test_culling_zeroes_opacity_and_marks_invisible():
    g = init_random(200, seed=3, sigma_t=0.05, dtype=torch.float64)
    t = torch.tensor([0.5], dtype=torch.float64)
    s = slice_at(g, t)
    p = torch.exp(-0.5 * (0.5 - g.means[:, 3]) ** 2 / 0.05 ** 2)
    assert torch.equal(s.visible[0], p > CULL_THRESHOLD)
    assert 0 < int(s.visible.sum()) < 200
    assert (s.opacities[0][~s.visible[0]] == 0).all()
    torch.testing.assert_close(s.opacities[0][s.visible[0]], (g.opacity * p)[s.visible[0]])
    c, idx = slice_compact(g, 0.5)
    assert c.num == int(s.visible.sum()) and c.batch == 1
    torch.testing.assert_close(c.means[0], s.means[0, idx])
    assert (c.opacities > 0).all()


def test_time_basis_is_applied():
    g = random_gaussians(6, seed=4, time_degree=2, sh_degree=1)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    s = slice_at(g, t, cull_threshold=0.0)
    assert s.sh.shape == (2, 6, 4, 3) and s.sh_degree == 1
    basis = temporal_basis(2, t[:, None] - g.means[None, :, 3], g.time_period)  # [2, 6, 3]
    expect = (basis[..., None, None] * g.sh[None]).sum(2)
    torch.testing.assert_close(s.sh, expect)
    # time_degree 0: identical for every time
    g0 = init_random(4, seed=0, dtype=torch.float64)
    s0 = slice_at(g0, [0.1, 0.9])
    torch.testing.assert_close(s0.sh[0], s0.sh[1])
    torch.testing.assert_close(s0.sh[0, :, 0] * SH_C0 + 0.5, g0.sh[:, 0, 0] * SH_C0 + 0.5)


def test_gradient_reaches_every_parameter():
    g = random_gaussians(10, seed=5, time_degree=1, sh_degree=1).requires_grad_()
    s = slice_at(g, torch.tensor([0.3, 0.6], dtype=torch.float64), cull_threshold=0.0)
    w = torch.linspace(0.5, 1.5, 9, dtype=torch.float64)
    loss = ((s.means ** 2).sum() + (s.covs * w.reshape(3, 3)).sum() + s.opacities.sum() + (s.sh ** 2).sum())
    loss.backward()
    for name, p in g.parameters_dict().items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # numeric gradient check of the whole slice in float64
    h = random_gaussians(3, seed=6)
    def f(means, log_scales, rot_l, rot_r):
        gg = Gaussians4D(means, log_scales, rot_l, rot_r, h.opacity_logit, h.sh)
        ss = slice_at(gg, torch.tensor([0.4], dtype=torch.float64), cull_threshold=0.0)
        return ss.means.sum() + ss.covs.sum() + ss.opacities.sum()
    args = tuple(x.clone().requires_grad_() for x in (h.means, h.log_scales, h.rot_l, h.rot_r))
    assert torch.autograd.gradcheck(f, args)


def test_bad_times_raise():
    g = init_random(4, seed=0)
    with pytest.raises(ValueError, match=r"1-D sequence \[B\]"):
        slice_at(g, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="non-empty"):
        slice_at(g, [])
    with pytest.raises(TypeError, match="Gaussians4D"):
        slice_at("not gaussians", [0.0])
