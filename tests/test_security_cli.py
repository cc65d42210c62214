"""The command line's answer to every user error: exit code 2 and one line naming the file, the rule and the fix
(malformed cameras.json, cameras that do not match the folders, singular cameras, empty views, absurd sizes,
unwritable / full outputs, an --out of the wrong kind), 130 on Ctrl-C with nothing partial left."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from e4d.cameras import orbit_cameras
from e4d.cli import main
from e4d.cli_errors import user_error_message
from e4d.export import save_native
from e4d.gaussians4d import init_random
from e4d.render import render
from e4d.viewmatrix import ViewMatrix, save_view_matrix

REPO = Path(__file__).resolve().parents[1]
S = 16


@pytest.fixture(scope="module")
def good_views(tmp_path_factory) -> Path:
    """A 16 px view matrix: 2 times x 3 views, with alpha."""
    g = init_random(num=40, radius=0.3, sigma_t=0.6, scale=0.08, opacity=0.9, rgb_range=(0.0, 1.0), seed=1)
    cams = orbit_cameras([0, 120, 240], 20.0, 1.5, S)
    times = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        o = render(g, times, cams.w2c[None].expand(2, -1, -1, -1), cams.K[None].expand(2, -1, -1, -1), S, S)
    vm = ViewMatrix(o.rgb.clamp(0, 1), cams, times, o.alpha[..., 0])
    return save_view_matrix(vm, tmp_path_factory.mktemp("vm") / "scene")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    g = init_random(num=30, radius=0.3, sigma_t=0.6, scale=0.08, opacity=0.9, seed=2)
    return save_native(g, tmp_path_factory.mktemp("m") / "m.safetensors", time_range=(0.0, 1.0))


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "views"
    shutil.copytree(src, dst)
    return dst


def _fit(views: Path, out: Path, capsys, *extra: str) -> tuple[int, str]:
    rc = main(["fit", "--views", str(views), "--iterations", "1", "--points", "20", "--device", "cpu", "--quiet",
               "--backend", "reference", "--out", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err[-1] if err else ""


def _edit_cameras(views: Path, change) -> None:
    meta = json.loads((views / "cameras.json").read_text())
    meta = change(meta)
    (views / "cameras.json").write_text(json.dumps(meta))


def _drop(key):
    def change(m):
        m.pop(key)
        return m
    return change


def _views_set(value):
    def change(m):
        m["views"] = value
        return m
    return change


def _w2c_of_first(value):
    def change(m):
        m["views"][0]["w2c"] = value
        return m
    return change


MALFORMED = {
    "missing width": (_drop("width"), "'width' must be a whole number"),
    "top level list": (lambda m: [m], "top level is a JSON list"),
    "views as strings": (_views_set(["v00", "v01", "v02"]), "views[0] is a str"),
    "views missing": (_drop("views"), "'views' must be a non-empty list"),
    "w2c strings": (_w2c_of_first([["1", "0", "0", "0"]] * 4), "w2c must be a 4x4 list of finite numbers"),
    "singular w2c": (_w2c_of_first([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1.5], [0, 0, 0, 1]]), "singular"),
    "wrong camera count": (lambda m: {**m, "views": m["views"][:2]}, "lists 2 cameras but"),
    "absurd width": (lambda m: {**m, "width": 10**6, "height": 10**6}, "GiB"),
    "not json": (None, "not valid JSON"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_datasets_exit_2_with_one_line(good_views, tmp_path, capsys, case):
    views = _copy(good_views, tmp_path)
    change, rule = MALFORMED[case]
    if change is None:
        (views / "cameras.json").write_text("{not json")
    else:
        _edit_cameras(views, change)
    rc, line = _fit(views, tmp_path / "m.safetensors", capsys)
    assert rc == 2, line
    assert line.startswith("e4d fit: error: ") and "cameras.json" in line and rule in line
    assert not (tmp_path / "m.safetensors").exists()


def test_white_views_without_object_are_refused(good_views, tmp_path, capsys):
    views = _copy(good_views, tmp_path)
    for p in (views / "views" / "v01").glob("t*.png"):
        Image.fromarray(np.full((S, S, 3), 255, np.uint8)).save(p)  # no alpha, nothing but white
    rc, line = _fit(views, tmp_path / "m.safetensors", capsys)
    assert rc == 2 and "v01" in line and "white everywhere" in line


def test_out_of_the_wrong_kind(good_views, model, tmp_path, capsys):
    (tmp_path / "dir").mkdir()
    rc, line = _fit(good_views, tmp_path / "dir", capsys)
    assert rc == 2 and "is an existing folder" in line and "give a file name" in line
    (tmp_path / "file").write_text("x")
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "file")]) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert main(["render", "--model", str(model), "--out", str(tmp_path / "file" / "o.gif")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_reexport_with_fewer_frames_leaves_no_stale_files(model, tmp_path, capsys):
    out = tmp_path / "ply"
    assert main(["export", "--model", str(model), "--out", str(out), "--count", "4"]) == 0
    assert main(["export", "--model", str(model), "--out", str(out), "--count", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["frame_0000.ply", "frame_0001.ply"]


def test_interrupt_mid_export_exits_130_and_leaves_nothing(model, tmp_path, capsys, monkeypatch):
    import e4d.export.ply as ply

    real, calls = ply.save_ply, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ply, "save_ply", interrupted)
    rc = main(["export", "--model", str(model), "--out", str(tmp_path / "ply"), "--count", "6"])
    assert rc == 130 and "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no folder, no hidden temporary


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions (CI runs as a normal user)")
def test_read_only_output_folder(model, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["export", "--model", str(model), "--out", str(ro / "ply")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("code,fix", [(errno.EROFS, "read-only"), (errno.ENOSPC, "disk is full"),
                                      (errno.EFBIG, "file-size limit"), (errno.EACCES, "not writable")])
def test_os_errors_become_one_actionable_line(code, fix):
    msg = user_error_message(OSError(code, os.strerror(code), "/out/model.safetensors"))
    assert msg.startswith("/out/model.safetensors: ") and fix in msg and "\n" not in msg
    assert user_error_message(KeyError("w2c")) is None  # a programming error keeps its traceback


def _default_sigint() -> None:
    """Ctrl-C as in a terminal: a test run started in the background by a non-interactive shell (``cmd &``) ignores
    SIGINT, its children inherit that, and Python keeps an inherited SIG_IGN (no KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args: str, preexec_fn=None, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")

    def child_setup() -> None:
        _default_sigint()
        if preexec_fn is not None:
            preexec_fn()

    return subprocess.Popen([sys.executable, "-m", "e4d", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=child_setup, **kw)


def test_file_size_limit_in_a_subprocess_exits_2_and_leaves_nothing(model, tmp_path):
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    out = tmp_path / "ply"
    proc = _cli("export", "--model", str(model), "--out", str(out), "--count", "3", preexec_fn=limit)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 2, err
    assert lines[-1].startswith("e4d export: error: ") and "file-size limit" in lines[-1]
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_fit_exits_130_and_writes_nothing(good_views, tmp_path):
    out = tmp_path / "m.safetensors"
    proc = _cli("fit", "--views", str(good_views), "--iterations", "100000", "--points", "20", "--device", "cpu",
                "--backend", "reference", "--out", str(out))
    for line in proc.stderr:  # wait until the fit is running
        if "step" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert list(tmp_path.iterdir()) == []
