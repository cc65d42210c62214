"""4D Gaussian container, random init and 4D rotations (Yang et al. 2024 §3.1)."""
import math

import numpy as np
import pytest
import torch

from e4d.gaussians4d import Gaussians4D, init_random, mean_neighbour_distance
from e4d.rotation4d import covariance_4d, left_isoclinic, right_isoclinic, rotation_4d
from e4d.sh import SH_C0, eval_sh, num_sh_bases, sh_basis, temporal_basis


def quat_mul(p, q):
    """Hamilton product of [..., 4] (w, x, y, z) quaternions (independent of the matrix code)."""
    a1, b1, c1, d1 = p.unbind(-1)
    a2, b2, c2, d2 = q.unbind(-1)
    return torch.stack([a1 * a2 - b1 * b2 - c1 * c2 - d1 * d2,
                        a1 * b2 + b1 * a2 + c1 * d2 - d1 * c2,
                        a1 * c2 - b1 * d2 + c1 * a2 + d1 * b2,
                        a1 * d2 + b1 * c2 - c1 * b2 + d1 * a2], -1)


def test_rotation_is_orthonormal_with_det_one():
    g = torch.Generator().manual_seed(0)
    ql, qr = torch.randn(64, 4, generator=g, dtype=torch.float64), torch.randn(64, 4, generator=g, dtype=torch.float64)
    R = rotation_4d(ql, qr)
    eye = torch.eye(4, dtype=torch.float64).expand(64, 4, 4)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(64, dtype=torch.float64), atol=1e-12, rtol=0)
    ident = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(rotation_4d(ident * 3.0, ident), torch.eye(4, dtype=torch.float64)[None])


def test_isoclinic_matrices_are_quaternion_products():
    g = torch.Generator().manual_seed(1)
    q, v = torch.randn(2, 10, 4, generator=g, dtype=torch.float64)
    qn = q / q.norm(dim=-1, keepdim=True)
    torch.testing.assert_close((left_isoclinic(q) @ v[..., None])[..., 0], quat_mul(qn, v))
    torch.testing.assert_close((right_isoclinic(q) @ v[..., None])[..., 0], quat_mul(v, qn))
    # left and right multiplications commute: (a v) b = a (v b)
    a, b = torch.randn(2, 10, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(left_isoclinic(a) @ right_isoclinic(b), right_isoclinic(b) @ left_isoclinic(a))


def test_covariance_4d_is_R_S2_RT():
    g = torch.Generator().manual_seed(2)
    ls, ql, qr = (torch.randn(8, 4, generator=g, dtype=torch.float64) for _ in range(3))
    R = rotation_4d(ql, qr)
    expect = R @ torch.diag_embed(torch.exp(2 * ls)) @ R.transpose(1, 2)
    cov = covariance_4d(ls, ql, qr)
    torch.testing.assert_close(cov, expect)
    assert (torch.linalg.eigvalsh(cov) > 0).all()
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        covariance_4d(ls[:, :3], ql, qr)


def test_init_random_follows_the_paper_setup():
    g = init_random(2000, radius=0.5, time_range=(0.25, 0.75), sigma_t=0.2, opacity=0.1, seed=3)
    assert g.num == 2000 and g.means.shape == (2000, 4) and g.sh.shape == (2000, 1, 1, 3)
    r = g.means[:, :3].norm(dim=-1)
    assert r.max() <= 0.5 and r.min() >= 0
    # uniform by volume: P(r < 0.5 * 2^(-1/3)) = 1/2
    assert abs(float((r < 0.5 * 2 ** (-1 / 3)).float().mean()) - 0.5) < 0.05
    assert g.means[:, 3].min() >= 0.25 and g.means[:, 3].max() <= 0.75
    ident = torch.tensor([1.0, 0, 0, 0]).expand(2000, 4)
    assert torch.equal(g.rot_l, ident) and torch.equal(g.rot_r, ident)
    torch.testing.assert_close(g.opacity, torch.full((2000,), 0.1))
    torch.testing.assert_close(g.scales[:, 3], torch.full((2000,), 0.2))
    rgb = g.sh[:, 0, 0] * SH_C0 + 0.5
    assert rgb.min() >= 0.5 - 1e-6 and rgb.max() <= 1.0 + 1e-6
    # determinism
    assert torch.equal(init_random(50, seed=7).means, init_random(50, seed=7).means)
    assert not torch.equal(init_random(50, seed=7).means, init_random(50, seed=8).means)


def test_mean_neighbour_distance_matches_a_sampled_cloud():
    g = init_random(1500, radius=0.5, seed=4)
    d = torch.cdist(g.means[:, :3].double(), g.means[:, :3].double())
    d.fill_diagonal_(math.inf)
    nn = d.min(dim=1).values
    inner = g.means[:, :3].norm(dim=-1) < 0.35  # avoid the boundary, where neighbours are sparser
    assert abs(float(nn[inner].mean()) / mean_neighbour_distance(1500, 0.5) - 1) < 0.1
    torch.testing.assert_close(g.scales[:, 0], torch.full((1500,), mean_neighbour_distance(1500, 0.5)))


def test_colour_model_shapes_and_state_round_trip():
    g = init_random(10, sh_degree=2, time_degree=3, time_period=1.5, seed=0, dtype=torch.float64)
    assert g.sh.shape == (10, 4, 9, 3) and num_sh_bases(3) == 16
    g2 = Gaussians4D.from_state_dict(g.state_dict(), g.config())
    assert g2.config() == {"sh_degree": 2, "time_degree": 3, "time_period": 1.5}
    for k, v in g.state_dict().items():
        assert torch.equal(v, getattr(g2, k))
    g3 = Gaussians4D.from_state_dict(g.state_dict())  # degrees inferred from the shapes
    assert (g3.sh_degree, g3.time_degree) == (2, 3)
    assert g.to(dtype=torch.float32).dtype == torch.float32
    assert Gaussians4D.cat([g, g]).num == 20 and g.select(g.means[:, 0] > 0).num == int((g.means[:, 0] > 0).sum())
    params = g.clone().requires_grad_().parameters_dict()
    assert set(params) == {"means", "log_scales", "rot_l", "rot_r", "opacity_logit", "sh"}
    assert all(p.requires_grad for p in params.values())


def test_bad_inputs_give_clear_errors():
    g = init_random(5, seed=0)
    with pytest.raises(ValueError, match=r"means must be \[N, 4\]"):
        Gaussians4D(g.means[:, :3], g.log_scales, g.rot_l, g.rot_r, g.opacity_logit, g.sh)
    with pytest.raises(ValueError, match=r"sh must be \[5, 1, 4, 3\]"):
        Gaussians4D(g.means, g.log_scales, g.rot_l, g.rot_r, g.opacity_logit, g.sh, sh_degree=1)
    bad = g.clone()
    bad.log_scales[2, 1] = float("nan")
    with pytest.raises(ValueError, match="log_scales has 1 NaN"):
        bad.validate()
    with pytest.raises(ValueError, match="lacks"):
        Gaussians4D.from_state_dict({"means": g.means})
    with pytest.raises(ValueError, match="sh_degree"):
        init_random(5, sh_degree=4)


def test_sh_basis_is_orthonormal_on_the_sphere():
    # Monte-Carlo check of the normalization constants: E[Y_i Y_j] over the sphere = delta_ij / (4 pi).
    g = torch.Generator().manual_seed(5)
    d = torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    Y = sh_basis(3, d)
    gram = Y.T @ Y / d.shape[0] * 4 * math.pi
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.02, rtol=0)
    # degree-1 signs follow gsplat/3DGS: (-y, z, -x)
    y = sh_basis(1, torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64))[0]
    assert y[1] < 0 and abs(y[2]) < 1e-12 and abs(y[3]) < 1e-12
    coeffs = torch.zeros(1, 4, 3, dtype=torch.float64)
    coeffs[0, 2] = 1.0
    np.testing.assert_allclose(eval_sh(1, coeffs, torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64)).numpy(),
                               [[0.4886025119029199] * 3])


def test_temporal_basis_values():
    dt = torch.tensor([0.0, 0.5, 0.25])
    b = temporal_basis(2, dt, period=2.0)
    torch.testing.assert_close(b, torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0],
                                                [1.0, math.cos(math.pi / 4), 0.0]]), atol=1e-6, rtol=0)
