"""Per-frame .splat (antimatter15/splat layout) and .splatv (antimatter15/splaTV hybrid.js layout) exports:
byte layouts, header fields, and that decoding them gives back the core's time slices (e4d.slicing)."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from e4d.cameras import orbit_path
from e4d.export.compact4d import condition_on_time, gaussian_covariances
from e4d.export.factor3d import covariance_to_scale_rotation, quaternion_to_rotation, rotation_to_quaternion
from e4d.export.splat import ROW_BYTES, read_splat, save_splat_sequence, splat_bytes
from e4d.export.splatv import MAGIC, PAD_TRBF_CENTER, TEX_WIDTH, read_splatv, save_splatv, splatv_bytes
from e4d.gaussians4d import Gaussians4D, init_random
from e4d.slicing import slice_at


def _rotated(n: int = 500, seed: int = 0) -> Gaussians4D:
    g = init_random(n, sigma_t=0.15, seed=seed)
    gen = torch.Generator().manual_seed(seed + 7)
    g.rot_l = torch.randn(n, 4, generator=gen)
    g.rot_r = torch.randn(n, 4, generator=gen)
    g.log_scales = g.log_scales + 0.4 * torch.randn(n, 4, generator=gen)
    g.opacity_logit = torch.randn(n, generator=gen)
    return g


def test_quaternion_conversions_round_trip():
    q = torch.randn(1000, 4, dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    torch.testing.assert_close(rotation_to_quaternion(quaternion_to_rotation(q)), q, rtol=0, atol=1e-9)
    cov = quaternion_to_rotation(q) @ torch.diag_embed(torch.rand(1000, 3, dtype=torch.float64) + 0.1) \
        @ quaternion_to_rotation(q).transpose(1, 2)
    s, qq = covariance_to_scale_rotation(cov)
    R = quaternion_to_rotation(qq)
    torch.testing.assert_close(R @ torch.diag_embed(s * s) @ R.transpose(1, 2), cov, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match=r"\[N, 3, 3\]"):
        covariance_to_scale_rotation(torch.zeros(3, 4, 4))


def test_splat_byte_layout_and_slice_round_trip():
    g = _rotated()
    t = 0.37
    data = splat_bytes(g, t)
    ref, _ = slice_at(g.to(dtype=torch.float64), [t]).compact(0)
    n = ref.num
    assert 0 < n < g.num and len(data) == n * ROW_BYTES
    # first row by hand: 6 little-endian f32, then 4 + 4 bytes
    x, y, z, sx, sy, sz = struct.unpack_from("<6f", data, 0)
    r, gg, b, a, qw, qx, qy, qz = struct.unpack_from("<8B", data, 24)
    d = read_splat(data)
    np.testing.assert_array_equal(d["pos"][0], np.float32([x, y, z]))
    np.testing.assert_array_equal(d["scale"][0], np.float32([sx, sy, sz]))
    assert tuple(d["rgba"][0]) == (r, gg, b, a)
    np.testing.assert_allclose(d["quat"][0], (np.array([qw, qx, qy, qz]) - 128) / 128)
    # match rows to the reference slice by position, then compare covariance (u8 quaternions: loose) and alpha
    order = np.lexsort(d["pos"].T)
    ref_pos = ref.means[0].numpy()
    ref_order = np.lexsort(ref_pos.T)
    np.testing.assert_allclose(d["pos"][order], ref_pos[ref_order], rtol=0, atol=1e-6)
    R = quaternion_to_rotation(torch.from_numpy(d["quat"]))
    s = torch.from_numpy(d["scale"].astype(np.float64))
    cov = (R @ torch.diag_embed(s * s) @ R.transpose(1, 2)).numpy()[order]
    ref_cov = ref.covs[0].numpy()[ref_order]
    scale2 = np.einsum("nii->n", ref_cov)[:, None, None]
    assert np.abs(cov - ref_cov).max() < 0.05 * scale2.max()
    assert (np.abs(cov - ref_cov) / scale2).mean() < 0.01
    np.testing.assert_allclose(d["rgba"][order, 3] / 255.0, ref.opacities[0].numpy()[ref_order], atol=0.5 / 255 + 1e-6)
    # written biggest first (size x opacity), as the reference viewer expects
    mass = d["scale"].prod(-1) * d["rgba"][:, 3]
    assert mass[0] >= np.median(mass)


def test_splat_sequence_files_and_progress(tmp_path):
    g = _rotated(200)
    seen = []
    paths = save_splat_sequence(g, [0.0, 0.5, 1.0], tmp_path / "seq", callback=lambda i, n, info: seen.append((i, n)))
    assert [p.name for p in paths] == ["frame_0000.splat", "frame_0001.splat", "frame_0002.splat"]
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert all(p.stat().st_size % ROW_BYTES == 0 and p.stat().st_size > 0 for p in paths)
    assert not list((tmp_path / "seq").glob(".*"))
    with pytest.raises(ValueError, match="at least one time"):
        save_splat_sequence(g, [], tmp_path / "none")


def test_splatv_header_and_fields(tmp_path):
    g = _rotated(1500)
    cams = orbit_path(4, elevation_deg=20.0, radius=2.0, size=512)
    path = save_splatv(g, tmp_path / "x.splatv", cameras=cams)
    raw = path.read_bytes()
    magic, jlen = struct.unpack_from("<II", raw, 0)
    assert magic == MAGIC == 0x674B
    header = json.loads(raw[8:8 + jlen])
    chunk = header[0]
    assert chunk["type"] == "splat" and chunk["texwidth"] == TEX_WIDTH and chunk["texheight"] == 2
    assert chunk["size"] == TEX_WIDTH * 2 * 16 and len(raw) == 8 + jlen + chunk["size"]
    # cameras: splaTV's getViewMatrix builds w2c = [R^T | -R^T c] from rotation (c2w rows) and position
    for cam, w2c in zip(chunk["cameras"], cams.w2c.double()):
        R, c = np.array(cam["rotation"]), np.array(cam["position"])
        np.testing.assert_allclose(R.T, w2c[:3, :3].numpy(), atol=1e-6)
        np.testing.assert_allclose(-R.T @ c, w2c[:3, 3].numpy(), atol=1e-5)
        assert cam["fx"] == pytest.approx(280.0 * 2) and cam["width"] == 512
    d = read_splatv(raw)
    n = g.num
    np.testing.assert_array_equal(d["pos"][:n], g.means[:, :3].numpy())
    velocity, _, var_t = condition_on_time(gaussian_covariances(g))
    np.testing.assert_allclose(d["motion"][:n, :3], velocity.numpy(), rtol=2e-3, atol=1e-4)
    assert not d["motion"][:, 3:].any() and not d["omega"].any()
    np.testing.assert_allclose(d["trbf"][:n, 0], g.means[:, 3].numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(d["trbf"][:n, 1], np.sqrt(2 * var_t.numpy()), rtol=1e-3)
    assert (d["trbf"][n:, 0] == PAD_TRBF_CENTER).all() and not d["rgba"][n:].any()


def test_splatv_evaluated_like_splatv_viewer_matches_core_slicing():
    """splaTV draws pos + motion*dt with opacity * exp(-(dt/trbf_scale)^2): that must equal eq. 5-6."""
    g = _rotated(800, seed=2)
    d = read_splatv(splatv_bytes(g))
    n = g.num
    t = 0.42
    ref = slice_at(g.to(dtype=torch.float64), [t])
    dt = t - d["trbf"][:n, 0]
    marginal = np.exp(-((dt / d["trbf"][:n, 1]) ** 2))
    pos = d["pos"][:n] + d["motion"][:n, :3] * dt[:, None]
    vis = ref.visible[0].numpy()
    np.testing.assert_allclose(pos[vis], ref.means[0].numpy()[vis], rtol=0, atol=3e-3)
    alpha = d["rgba"][:n, 3] / 255.0 * marginal
    np.testing.assert_allclose(alpha[vis], ref.opacities[0].numpy()[vis], atol=0.01)
    R = quaternion_to_rotation(torch.from_numpy(d["quat"][:n]))
    s = torch.from_numpy(d["scale"][:n])
    cov = (R @ torch.diag_embed(s * s) @ R.transpose(1, 2)).numpy()
    ref_cov = ref.covs[0].numpy()
    rel = np.abs(cov - ref_cov).max(axis=(1, 2)) / np.einsum("nii->n", ref_cov)
    assert rel.max() < 5e-3, f"float16 covariance error too large: {rel.max()}"
