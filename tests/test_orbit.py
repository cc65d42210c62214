"""Orbit render paths and mp4/gif writing."""
import numpy as np
import pytest
import torch

from e4d.gaussians4d import init_random
from e4d.orbit import OrbitConfig, camera_path, orbit_render, time_path
from e4d.progress import Cancelled
from e4d.render import render_cameras
from e4d.video_io import frames_to_uint8, read_video_frames, write_gif, write_mp4, write_video


@pytest.fixture(scope="module")
def gaussians():
    return init_random(150, seed=0, opacity=0.6, scale=0.05, sigma_t=0.3)


def test_time_and_camera_paths():
    cfg = OrbitConfig(frames=8, time_start=0.0, time_end=1.0)
    torch.testing.assert_close(time_path(cfg), torch.linspace(0, 1, 8, dtype=torch.float64))
    two = time_path(OrbitConfig(frames=8, time_loops=2))
    torch.testing.assert_close(two, torch.tensor([0, 1 / 3, 2 / 3, 1, 0, 1 / 3, 2 / 3, 1], dtype=torch.float64))
    pp = time_path(OrbitConfig(frames=4, pingpong=True))
    torch.testing.assert_close(pp, torch.tensor([0.0, 0.5, 1.0, 0.5], dtype=torch.float64))
    assert (time_path(OrbitConfig(mode="fixed_time", frames=5, fixed_time=0.3)) == 0.3).all()
    cams = camera_path(OrbitConfig(frames=4, elevation=15.0, azimuth_start=10.0))
    torch.testing.assert_close(cams.azimuth, torch.tensor([10.0, 100.0, 190.0, 280.0]))
    fixed = camera_path(OrbitConfig(mode="fixed_view", frames=3, azimuth_start=45.0))
    assert torch.equal(fixed.w2c[0], fixed.w2c[2])


@pytest.mark.parametrize("mode", ["orbit", "fixed_time", "fixed_view"])
def test_orbit_modes_frame_counts(gaussians, mode):
    calls = []
    cfg = OrbitConfig(mode=mode, frames=5, resolution=16, chunk=2, fixed_time=0.4)
    res = orbit_render(gaussians, cfg, backend="reference", callback=lambda s, t, i: calls.append((s, t)))
    assert res.frames.shape == (5, 16, 16, 3) and res.alpha.shape == (5, 16, 16, 1) and res.times.shape == (5,)
    assert res.frames.min() >= 0 and res.frames.max() <= 1 and res.alpha.max() > 0
    # time-bounded chunks: one frame first, then up to `chunk` frames per call while calls stay short
    steps = [0] + [c[0] for c in calls]
    assert calls[0] == (1, 5) and calls[-1] == (5, 5) and all(0 < b - a <= 2 for a, b in zip(steps, steps[1:]))
    # frame 3 equals a direct render of its camera and time
    direct = render_cameras(gaussians, float(res.times[3]), res.cameras[3], backend="reference")
    torch.testing.assert_close(res.frames[3], direct.rgb[0, 0].clamp(0, 1))


def test_orbit_cancel_and_bad_config(gaussians):
    def cancel(step, total, info):
        raise Cancelled("stop")
    with pytest.raises(Cancelled):
        orbit_render(gaussians, OrbitConfig(frames=4, resolution=8, chunk=1), backend="reference", callback=cancel)
    with pytest.raises(ValueError, match="unknown orbit mode"):
        orbit_render(gaussians, OrbitConfig(mode="spin"))
    bad = gaussians.clone()
    bad.means[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        orbit_render(bad, OrbitConfig(frames=2, resolution=8), backend="reference")


def test_video_round_trip(tmp_path):
    frames = torch.zeros(6, 32, 48, 3)
    for i in range(6):
        frames[i, :, : 8 * (i + 1)] = 1.0  # a growing white bar
    mp4 = write_mp4(frames, tmp_path / "orbit.mp4", fps=12)
    back = read_video_frames(mp4)
    assert back.shape == (6, 32, 48, 3)
    assert abs(back[5].mean() / 255.0 - 1.0) < 0.05 and back[0].mean() / 255.0 < 0.3
    gif = write_video(frames, tmp_path / "orbit.gif", fps=12)
    g = read_video_frames(gif)
    assert g.shape == (6, 32, 48, 3) and np.array_equal(g, frames_to_uint8(frames))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orbit.gif", "orbit.mp4"]  # no temp files left


def test_video_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        write_gif(torch.zeros(4, 4, 3), tmp_path / "a.gif")
    with pytest.raises(ValueError, match="NaN"):
        write_gif(torch.full((1, 4, 4, 3), float("nan")), tmp_path / "a.gif")
    with pytest.raises(ValueError, match=".mp4 or .gif"):
        write_video(torch.zeros(1, 4, 4, 3), tmp_path / "a.avi")
    with pytest.raises(FileNotFoundError):
        read_video_frames(tmp_path / "missing.mp4")
    assert not any(tmp_path.iterdir())
