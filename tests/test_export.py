"""Exports: per-time INRIA 3DGS PLY (header order, values against the slicing) and the native safetensors file
(bit-identical round trip, identical renders, clear errors)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from e4d.cameras import orbit_cameras
from e4d.export import load_native, read_native_meta, read_ply, save_native, save_ply, save_ply_sequence
from e4d.export.factor3d import quaternion_to_rotation
from e4d.export.ply import covariance_to_log_scale_rotation
from e4d.gaussians4d import init_random
from e4d.render import render_cameras
from e4d.slicing import slice_at

INRIA_DEG0 = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def _gaussians(sh_degree: int = 0, n: int = 40, seed: int = 0):
    g = init_random(num=n, radius=0.4, time_range=(0.0, 1.0), sigma_t=0.15, sh_degree=sh_degree, scale=0.05,
                    opacity=0.6, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    g.rot_l = torch.randn(n, 4, generator=gen)
    g.rot_r = torch.randn(n, 4, generator=gen)
    g.log_scales = g.log_scales + 0.3 * torch.randn(n, 4, generator=gen)
    g.sh = g.sh + 0.2 * torch.randn(g.sh.shape, generator=gen)
    return g


def test_ply_header_is_inria_order_and_binary(tmp_path):
    g = _gaussians()
    path = save_ply(g, 0.5, tmp_path / "a.ply")
    raw = path.read_bytes()
    head = raw[:raw.index(b"end_header\n")].decode().splitlines()
    assert head[:2] == ["ply", "format binary_little_endian 1.0"]
    assert head[2].startswith("element vertex ")
    assert [ln.split()[-1] for ln in head[3:]] == INRIA_DEG0
    assert all(ln.startswith("property float ") for ln in head[3:])
    n = int(head[2].split()[-1])
    assert len(raw) - raw.index(b"end_header\n") - len(b"end_header\n") == n * 4 * len(INRIA_DEG0)
    g1 = _gaussians(sh_degree=1)
    names = list(read_ply(save_ply(g1, 0.5, tmp_path / "b.ply")))
    assert names[6:18] == [f"f_dc_{i}" for i in range(3)] + [f"f_rest_{i}" for i in range(9)]
    assert names[18] == "opacity"


def test_ply_values_match_the_slice(tmp_path):
    g = _gaussians(sh_degree=1, n=60)
    t = 0.37
    d = read_ply(save_ply(g, t, tmp_path / "s.ply"))
    s = slice_at(g, [t])
    keep = s.visible[0]
    assert 0 < int(keep.sum()) < g.num  # some culled, some kept: the test checks the dropping
    assert len(d["x"]) == int(keep.sum())
    xyz = np.stack([d["x"], d["y"], d["z"]], -1)
    np.testing.assert_allclose(xyz, s.means[0, keep].numpy(), atol=1e-6)
    op = 1 / (1 + np.exp(-d["opacity"]))
    np.testing.assert_allclose(op, s.opacities[0, keep].numpy(), rtol=1e-4, atol=1e-6)
    scales = np.exp(np.stack([d[f"scale_{i}"] for i in range(3)], -1))
    quat = torch.from_numpy(np.stack([d[f"rot_{i}"] for i in range(4)], -1))
    R = quaternion_to_rotation(quat)
    cov = R @ torch.diag_embed(torch.from_numpy(scales) ** 2) @ R.transpose(1, 2)
    torch.testing.assert_close(cov, s.covs[0, keep].float(), atol=1e-6, rtol=1e-4)
    sh = s.sh[0, keep]  # [N', 4, 3]
    np.testing.assert_allclose(np.stack([d[f"f_dc_{c}"] for c in range(3)], -1), sh[:, 0].numpy(), atol=1e-6)
    # f_rest is channel-major: f_rest_{c * 3 + k} = band k+1 of channel c
    for c in range(3):
        for k in range(3):
            np.testing.assert_allclose(d[f"f_rest_{c * 3 + k}"], sh[:, 1 + k, c].numpy(), atol=1e-6)
    padded = read_ply(save_ply(g, t, tmp_path / "p.ply", sh_degree_out=3))
    assert len([k for k in padded if k.startswith("f_rest_")]) == 45 and np.all(padded["f_rest_44"] == 0)


def test_covariance_decomposition_is_proper():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(50, 3, 3, generator=gen, dtype=torch.float64)
    cov = A @ A.transpose(1, 2) + 1e-3 * torch.eye(3, dtype=torch.float64)
    log_s, q = covariance_to_log_scale_rotation(cov)
    R = quaternion_to_rotation(q.double())
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(50, dtype=torch.float64))
    rebuilt = R @ torch.diag_embed(torch.exp(2 * log_s.double())) @ R.transpose(1, 2)
    torch.testing.assert_close(rebuilt, cov, atol=1e-4, rtol=1e-4)


def test_ply_sequence_and_reader_errors(tmp_path):
    paths = save_ply_sequence(_gaussians(), [0.0, 0.5, 1.0], tmp_path / "seq", prefix="f")
    assert [p.name for p in paths] == ["f_0000.ply", "f_0001.ply", "f_0002.ply"]
    assert not list((tmp_path / "seq").glob(".*"))  # no temp files left behind
    with pytest.raises(FileNotFoundError):
        read_ply(tmp_path / "missing.ply")
    (tmp_path / "bad.ply").write_bytes(b"not a ply")
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(tmp_path / "bad.ply")
    raw = paths[0].read_bytes()
    (tmp_path / "trunc.ply").write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_ply(tmp_path / "trunc.ply")


def test_native_round_trip_gives_identical_renders(tmp_path):
    g = _gaussians(sh_degree=1)
    g.time_degree = 0
    path = save_native(g, tmp_path / "m.safetensors", meta={"times": [0.0, 0.5]}, time_range=(0.0, 0.9))
    back = load_native(path)
    for k, v in g.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert back.config() == g.config()
    md = read_native_meta(path)
    assert md["time_range"] == [0.0, 0.9] and md["meta"]["times"] == [0.0, 0.5] and md["num"] == g.num
    cams = orbit_cameras([10.0, 100.0], 20.0, 1.5, 16)
    a = render_cameras(g, 0.4, cams).rgb
    b = render_cameras(back, 0.4, cams).rgb
    assert torch.equal(a, b)


def test_native_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_native(tmp_path / "nope.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_native(tmp_path / "garbage.safetensors")
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an Efficient4D native"):
        load_native(tmp_path / "other.safetensors")
    good = save_native(_gaussians(), tmp_path / "good.safetensors")
    raw = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError):
        load_native(tmp_path / "cut.safetensors")
    with pytest.raises(TypeError):
        save_native("not gaussians", tmp_path / "x.safetensors")
    assert math.isfinite(read_native_meta(good)["time_range"][1])
