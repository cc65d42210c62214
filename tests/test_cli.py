"""``python -m e4d fit|render|export|demo`` smoke tests on tiny settings (CPU, in-process main(argv))."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from e4d.cameras import orbit_cameras
from e4d.cli import main
from e4d.demo import DEMO_DATA
from e4d.export import read_native_meta, read_ply
from e4d.gaussians4d import init_random
from e4d.render import render
from e4d.viewmatrix import ViewMatrix, load_view_matrix, save_view_matrix

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def views_dir(tmp_path_factory) -> Path:
    """A 16 px view-matrix folder: 2 times x 5 views (+ input view)."""
    g = init_random(num=40, radius=0.3, sigma_t=0.6, scale=0.08, opacity=0.9, rgb_range=(0.0, 1.0), seed=1)
    cams = orbit_cameras([0, 72, 144, 216, 288], 20.0, 1.5, 16)
    times = torch.tensor([0.0, 0.5])
    inp = orbit_cameras([0.0], 0.0, 1.5, 16)
    with torch.no_grad():
        o = render(g, times, cams.w2c[None].expand(2, -1, -1, -1), cams.K[None].expand(2, -1, -1, -1), 16, 16)
        oi = render(g, times, inp.w2c[None].expand(2, -1, -1, -1), inp.K[None].expand(2, -1, -1, -1), 16, 16)
    vm = ViewMatrix(o.rgb.clamp(0, 1), cams, times, o.alpha[..., 0], oi.rgb[:, 0].clamp(0, 1),
                    oi.alpha[:, 0, ..., 0], inp)
    return save_view_matrix(vm, tmp_path_factory.mktemp("vm") / "scene")


def test_fit_export_render(views_dir, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    rc = main(["fit", "--views", str(views_dir), "--holdout", "4", "--iterations", "3", "--points", "100",
               "--device", "cpu", "--quiet", "--out", str(model)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert summary["per_view"][0]["view"] == 4 and summary["heldout_psnr"] > 5
    assert "held-out mean: PSNR" in cap.err
    md = read_native_meta(model)
    assert md["meta"]["times"] == [0.0, 0.5] and md["meta"]["holdout"] == [4] and md["time_range"] == [0.0, 0.5]

    rc = main(["export", "--model", str(model), "--out", str(tmp_path / "ply")])
    assert rc == 0
    files = sorted((tmp_path / "ply").glob("frame_*.ply"))
    assert len(files) == 2 and "opacity" in read_ply(files[0])

    rc = main(["render", "--model", str(model), "--out", str(tmp_path / "o.gif"), "--frames", "2", "--size", "16",
               "--device", "cpu"])
    assert rc == 0 and (tmp_path / "o.gif").stat().st_size > 0


def test_demo_smoke(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--device", "cpu", "--iterations", "2", "--points", "200",
               "--orbit-frames", "2", "--orbit-size", "32"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "REDUCED CPU config" in cap.err and "held-out PSNR" in cap.err
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert summary["num_ply"] == 8 and (out / "model.safetensors").is_file() and Path(summary["video"]).is_file()
    assert len(list((out / "ply").glob("*.ply"))) == 8


def test_bundled_demo_data_layout():
    vm = load_view_matrix(DEMO_DATA)
    assert (vm.T, vm.V, vm.H, vm.W) == (8, 20, 64, 64) and vm.has_input and vm.alpha is not None
    assert float(vm.cameras.K[0, 0, 0]) == 70.0 and float(vm.cameras.K[0, 0, 2]) == 32.0
    assert "CC-BY 4.0" in (DEMO_DATA / "ATTRIBUTION.md").read_text()
    size = sum(p.stat().st_size for p in DEMO_DATA.rglob("*") if p.is_file())
    assert size < 600_000, size


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = main(["fit", "--views", str(tmp_path / "missing"), "--out", str(tmp_path / "m.safetensors")])
    assert rc == 2 and "folder not found" in capsys.readouterr().err
    rc = main(["export", "--model", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "e4d", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "fit" in r.stdout and "demo" in r.stdout


def test_export_mesh_writes_animated_glb(tmp_path, capsys):
    from e4d.export import save_native
    from e4d.mesh import read_animated_glb
    from mesh_scene import moving_sphere

    model = tmp_path / "sphere.e4d.safetensors"
    save_native(moving_sphere(), model)
    out = tmp_path / "exp"
    assert main(["export", "--model", str(model), "--out", str(out), "--count", "3", "--mesh",
                 "--mesh-resolution", "32", "--mesh-views", "8", "--mesh-decimate", "0"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["files"] == 3 and "mesh" in summary
    anim = read_animated_glb(out / "mesh_animated.glb")
    assert anim.positions.shape[0] == 3 and anim.positions.shape[1] > 100  # one vertex set, moved per time
