"""Outputs: atomic files and folders get umask permissions, a re-export replaces a folder as a whole, an interrupt
leaves nothing under the final names, the video writer's result is checked (a full disk is an error), orbit renders
check their size up front and stay cancellable."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from e4d.atomic import atomic_dir, atomic_path, current_umask

REPO = Path(__file__).resolve().parents[1]


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_outputs_respect_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        with atomic_path(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"x")
        with atomic_dir(tmp_path / "seq") as tmp:
            (tmp / "f.ply").write_bytes(b"x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.bin") == 0o666 & ~mask
    assert _mode(tmp_path / "seq") == 0o777 & ~mask
    assert _mode(tmp_path / "seq" / "f.ply") == 0o666 & ~mask


def test_reexport_replaces_the_folder_as_a_whole(tmp_path):
    with atomic_dir(tmp_path / "seq") as tmp:
        for i in range(4):
            (tmp / f"frame_{i:04d}.ply").write_text("old")
    with atomic_dir(tmp_path / "seq", overwrite=True) as tmp:
        for i in range(2):
            (tmp / f"frame_{i:04d}.ply").write_text("new")
    files = sorted(p.name for p in (tmp_path / "seq").iterdir())
    assert files == ["frame_0000.ply", "frame_0001.ply"]  # no stale frames of the previous export
    assert {p.read_text() for p in (tmp_path / "seq").iterdir()} == {"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]  # no temporaries left
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_dir(tmp_path / "seq"):
            pass


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError])
def test_interrupt_mid_export_leaves_nothing(tmp_path, exc):
    with atomic_dir(tmp_path / "seq") as tmp:
        (tmp / "frame_0000.ply").write_text("kept")
    with pytest.raises(exc):
        with atomic_dir(tmp_path / "seq", overwrite=True) as tmp:
            (tmp / "frame_0000.ply").write_text("half")
            raise exc()
    with pytest.raises(exc):
        with atomic_path(tmp_path / "model.safetensors") as tmp:
            tmp.write_bytes(b"half")
            raise exc()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]  # the old export untouched, no temporaries
    assert (tmp_path / "seq" / "frame_0000.ply").read_text() == "kept"


def test_outputs_refuse_the_wrong_kind_in_the_way(tmp_path):
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        with atomic_path(tmp_path / "dir.mp4"):
            pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="existing file"):
        with atomic_dir(tmp_path / "file", overwrite=True):
            pass


def test_opencv_writer_result_is_checked(tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    from e4d import video_io

    class SilentFailure:  # what OpenCV does on a full disk: opened, "writes", releases, leaves an empty file
        def __init__(self, path, *a):
            Path(path).write_bytes(b"")

        def isOpened(self):
            return True

        def write(self, frame):
            pass

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoWriter", SilentFailure)
    monkeypatch.setattr(video_io.shutil, "which", lambda name: None)  # OpenCV path even where ffmpeg exists
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    with pytest.raises(OSError, match="unreadable video"):
        video_io.write_mp4(frames, tmp_path / "o.mp4")
    assert list(tmp_path.iterdir()) == []


FSIZE_SCRIPT = """
import resource, sys
import numpy as np
sys.path.insert(0, {repo!r})
from e4d.video_io import write_mp4
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
frames = (np.random.RandomState(0).rand(24, 96, 96, 3) * 255).astype(np.uint8)
try:
    write_mp4(frames, {out!r}, codec={codec!r})
except OSError as e:
    print("OSError:", e)
    sys.exit(3)
print("no error")
"""


def test_full_disk_mp4_is_an_error_not_a_broken_file(tmp_path):
    pytest.importorskip("cv2")
    out = tmp_path / "o.mp4"
    script = FSIZE_SCRIPT.format(repo=str(REPO), out=str(out), codec="mp4v")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_orbit_size_checked_before_allocating_and_cancel_checked_often(monkeypatch):
    from e4d.gaussians4d import init_random
    from e4d.orbit import OrbitConfig, orbit_render

    g = init_random(num=30, radius=0.3, sigma_t=0.6, scale=0.08, opacity=0.9, seed=0)
    with pytest.raises(ValueError, match=r"10000 frames of 4096x4096 need .*GiB.*E4D_MAX_TENSOR_GB"):
        orbit_render(g, OrbitConfig(frames=10_000, resolution=4096))

    import e4d.orbit as orbit

    real_render = orbit.render
    sizes = []

    def slow_render(g, t, w2c, K, *a, **k):  # 0.3 s a frame: a chunk of 32 would take 10 s
        n = max(t.shape[0], w2c.shape[1])
        sizes.append(n)
        time.sleep(0.3 * n)
        return real_render(g, t, w2c, K, *a, **k)

    monkeypatch.setattr(orbit, "render", slow_render)
    stamps = []
    orbit_render(g, OrbitConfig(frames=6, resolution=8, chunk=32), backend="reference",
                 callback=lambda s, t, i: stamps.append(time.perf_counter()))
    assert max(sizes) <= 2 and sum(sizes) == 6
    gaps = np.diff(stamps)
    assert gaps.max() < 1.0  # cancel (the callback) at least once a second
