"""Compact 4D player file (e4d/export/compact4d.py): byte layout, round trip, and that slicing from the file's
numbers (what the player's vertex shader does) reproduces the core's slicing (e4d.slicing, paper eq. 4-6)."""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from e4d.export.compact4d import (COV_ORDER, MAGIC, compact4d_bytes, condition_on_time, gaussian_covariances,
                                  read_compact4d, write_compact4d)
from e4d.gaussians4d import Gaussians4D, init_random
from e4d.slicing import slice_at


def _rotated(n: int = 300, seed: int = 0) -> Gaussians4D:
    """Random 4D Gaussians with random 4D rotations (so space-time cross terms are non-zero)."""
    g = init_random(n, sigma_t=0.15, seed=seed, time_degree=1)
    gen = torch.Generator().manual_seed(seed + 1)
    g.rot_l = torch.randn(n, 4, generator=gen)
    g.rot_r = torch.randn(n, 4, generator=gen)
    g.log_scales = g.log_scales + 0.5 * torch.randn(n, 4, generator=gen)
    g.opacity_logit = torch.randn(n, generator=gen)
    g.sh = 0.3 * torch.randn(g.sh.shape, generator=gen)
    return g


def test_layout_and_round_trip(tmp_path):
    g = _rotated()
    path = write_compact4d(g, tmp_path / "x.e4dc", time_range=(0.0, 1.0), extras={"background": "black"})
    raw = path.read_bytes()
    assert raw[:4] == MAGIC
    version, n, jlen = struct.unpack_from("<III", raw, 4)
    assert (version, n) == (1, 300) and jlen % 4 == 0
    c = read_compact4d(path)
    offs = {f["name"]: f["offset"] for f in c.header["fields"]}
    assert offs == {"means": 0, "cov": 300 * 16, "rgba": 300 * 56}  # counted from the end of the header
    assert len(raw) == 16 + jlen + 300 * 60
    assert c.header["background"] == "black" and c.header["cov_order"] == list(COV_ORDER)
    np.testing.assert_array_equal(c.means, g.means.numpy())
    cov = gaussian_covariances(g).numpy()
    np.testing.assert_allclose(c.covariance(), cov, rtol=1e-6, atol=1e-12)
    assert np.allclose(c.covariance(), np.swapaxes(c.covariance(), 1, 2))
    # colour: degree-0 at the temporal centre (the time harmonics all equal 1 there), alpha = sigmoid(logit)
    rgb = (0.5 + 0.28209479177387814 * g.sh[:, :, 0].sum(1)).clamp(0, 1)
    np.testing.assert_allclose(c.rgba[:, :3] / 255.0, rgb.numpy(), atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(c.rgba[:, 3] / 255.0, torch.sigmoid(g.opacity_logit).numpy(), atol=0.5 / 255 + 1e-6)
    assert not list(tmp_path.glob(".*")), "atomic write left a temporary file"


def test_file_numbers_reproduce_core_slicing():
    """Do on the CPU what the shader does with the file's float32 numbers, compare with e4d.slicing.slice_at."""
    g = _rotated(400)
    c = read_compact4d(compact4d_bytes(g))
    cov = torch.from_numpy(c.covariance())
    mean = torch.from_numpy(c.means.astype(np.float64))
    velocity, cov3, var_t = condition_on_time(cov)
    times = [0.1, 0.5, 0.83]
    ref = slice_at(g.to(dtype=torch.float64), times)
    for b, t in enumerate(times):
        dt = t - mean[:, 3]
        marginal = torch.exp(-0.5 * dt * dt / var_t)
        alive = marginal > c.header["cull_threshold"]
        assert torch.equal(alive, ref.visible[b])
        mu = mean[:, :3] + velocity * dt[:, None]
        torch.testing.assert_close(mu[alive], ref.means[b][alive], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(cov3[alive], ref.covs[b][alive], rtol=1e-4, atol=1e-8)
        alpha = torch.from_numpy(c.rgba[:, 3] / 255.0) * marginal
        torch.testing.assert_close(alpha[alive], ref.opacities[b][alive], rtol=0, atol=1 / 255)


def test_conditioning_is_the_schur_complement():
    g = _rotated(50, seed=3)
    cov = gaussian_covariances(g)
    velocity, cov3, var_t = condition_on_time(cov)
    # independent formula: the conditional covariance is the inverse of the precision's xyz block
    prec = torch.linalg.inv(cov)
    torch.testing.assert_close(cov3, torch.linalg.inv(prec[:, :3, :3]), rtol=1e-6, atol=1e-12)
    # the conditional mean's slope: -P_xyz,xyz^-1 P_xyz,t
    slope = -(torch.linalg.inv(prec[:, :3, :3]) @ prec[:, :3, 3:])[..., 0]
    torch.testing.assert_close(velocity, slope, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(var_t, cov[:, 3, 3])


def test_bad_inputs_give_clear_errors(tmp_path):
    g = init_random(10)
    with pytest.raises(ValueError, match="t1 > t0"):
        write_compact4d(g, tmp_path / "bad.e4dc", time_range=(1.0, 1.0))
    assert not (tmp_path / "bad.e4dc").exists()
    with pytest.raises(TypeError, match="needs a Gaussians4D"):
        compact4d_bytes(object())
    g.means[0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        compact4d_bytes(g)
    with pytest.raises(ValueError, match="magic"):
        read_compact4d(b"NOPE" + bytes(20))
    good = compact4d_bytes(init_random(10))
    with pytest.raises(ValueError, match="truncated"):
        read_compact4d(good[:-5])
