"""Orbit renders of 4D Gaussians: a camera path x a time path -> a frame tensor ``[F, H, W, 3]``.

Modes:
* ``"orbit"``: the camera circles the object while the clip plays (``time_loops`` times; optionally ping-pong).
* ``"fixed_time"``: the camera circles the object frozen at ``fixed_time``.
* ``"fixed_view"``: the camera stays at ``azimuth_start`` while the clip plays.

Cameras follow :mod:`e4d.cameras` (looking at the origin, +Z up, SyncDreamer intrinsics scaled to the size).
Frames are rendered in batches (one rasterizer call per at most ``chunk`` frames, fewer when a call would take
more than :data:`CHUNK_SECONDS`) under ``torch.no_grad``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .cameras import SYNCDREAMER_ELEVATION, SYNCDREAMER_RADIUS, Cameras, orbit_cameras
from .gaussians4d import Gaussians4D
from .limits import check_finite_fields, check_frames_budget
from .progress import ProgressCallback, report
from .render import render

ORBIT_MODES = ("orbit", "fixed_time", "fixed_view")
CHUNK_SECONDS = 0.5
"""Target duration of one rasterizer call; chunks shrink below ``OrbitConfig.chunk`` frames to keep it."""


@dataclass
class OrbitConfig:
    """Settings of an orbit render."""

    mode: str = "orbit"
    """"orbit" (camera circles while time plays), "fixed_time" or "fixed_view"."""
    frames: int = 60
    """Number of output frames F."""
    elevation: float = SYNCDREAMER_ELEVATION
    """Camera elevation in degrees (SyncDreamer's rig: 30)."""
    radius: float = SYNCDREAMER_RADIUS
    """Camera distance from the origin (SyncDreamer's rig: 1.5)."""
    resolution: int = 256
    """Square image size in pixels."""
    focal: Optional[float] = None
    """Focal length in pixels; None = SyncDreamer's 280 px at 256 px, scaled to ``resolution``."""
    azimuth_start: float = 0.0
    """Azimuth of the first frame (and the camera of "fixed_view"), degrees; 0 = the input view's side."""
    turns: float = 1.0
    """Full camera revolutions over the F frames ("orbit", "fixed_time"); the last frame does not repeat the first."""
    time_start: float = 0.0
    """Start of the time path (normalized time)."""
    time_end: float = 1.0
    """End of the time path (normalized time)."""
    time_loops: int = 1
    """How many times the clip plays over the F frames ("orbit", "fixed_view")."""
    pingpong: bool = False
    """Play time forwards then backwards in each loop (seamless loop for non-periodic motion)."""
    fixed_time: float = 0.0
    """The time shown in "fixed_time" mode."""
    background: float = 1.0
    """Background grey level (1 = white, like the training views)."""
    chunk: int = 32
    """Most frames per rasterizer call (memory/speed trade-off); fewer when a call would exceed
    :data:`CHUNK_SECONDS`, so cancel is checked about once a second."""

    def validate(self) -> None:
        """Raise ValueError naming the field, its rule, the value and the fix."""
        check_finite_fields(self)  # NaN passes every range check below
        if self.mode not in ORBIT_MODES:
            raise ValueError(f"unknown orbit mode {self.mode!r}: OrbitConfig.mode must be one of {ORBIT_MODES}")
        for name in ("frames", "resolution", "chunk", "time_loops"):
            if getattr(self, name) < 1:
                raise ValueError(f"OrbitConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.radius <= 0:
            raise ValueError(f"OrbitConfig.radius must be > 0, got {self.radius}; use 1.5 (SyncDreamer's rig)")
        check_frames_budget("orbit render", self.frames, self.resolution, self.resolution, channels=4,
                            fix="lower frames or resolution")


@dataclass
class OrbitResult:
    """Frames of an orbit render (on ``output_device``).

    Attributes:
        frames: ``[F, H, W, 3]`` in [0, 1] over the background.
        alpha: ``[F, H, W, 1]``.
        times: ``[F]`` normalized time of each frame.
        cameras: the F cameras (``Cameras``, CPU).
    """

    frames: Tensor
    alpha: Tensor
    times: Tensor
    cameras: Cameras


def time_path(config: OrbitConfig) -> Tensor:
    """Normalized times ``[F]`` of the frames (float64, CPU)."""
    f = config.frames
    if config.mode == "fixed_time":
        return torch.full((f,), float(config.fixed_time), dtype=torch.float64)
    per_loop = f / config.time_loops  # frames per play of the clip
    pos = torch.arange(f, dtype=torch.float64) / per_loop
    frac = pos - torch.floor(pos)  # position inside the current loop, [0, 1)
    if config.pingpong:
        u = 1.0 - torch.abs(2.0 * frac - 1.0)
    elif per_loop > 1:
        # stretch j / L to j / (L - 1) so each play reaches time_end on its last frame
        u = (frac * per_loop / (per_loop - 1.0)).clamp(max=1.0)
    else:
        u = torch.zeros(f, dtype=torch.float64)
    return config.time_start + (config.time_end - config.time_start) * u


def camera_path(config: OrbitConfig) -> Cameras:
    """The F cameras of the frames."""
    f = config.frames
    if config.mode == "fixed_view":
        az = [float(config.azimuth_start)] * f
    else:
        az = [config.azimuth_start + 360.0 * config.turns * i / f for i in range(f)]
    return orbit_cameras(az, config.elevation, config.radius, config.resolution, config.focal)


@torch.no_grad()
def orbit_render(g: Gaussians4D, config: OrbitConfig = OrbitConfig(), backend: str = "auto",
                 callback: Optional[ProgressCallback] = None, output_device="cpu") -> OrbitResult:
    """Render the frames of ``config`` (see the module docstring); ``callback(done, F, info)`` after each chunk."""
    config.validate()
    g.validate()
    times = time_path(config)
    cams = camera_path(config)
    dev, dt = g.device, g.dtype
    w2c, K = cams.w2c.to(dev, dt), cams.K.to(dev, dt)
    tt = times.to(dev, dt)
    size = config.resolution
    frames, alphas = [], []
    n_chunks = math.ceil(config.frames / config.chunk)
    start, n, i = 0, 1, 0
    while start < config.frames:
        # Time-bounded chunks: start with one frame, then grow up to config.chunk frames while a call stays under
        # CHUNK_SECONDS, so the callback (which checks cancel) runs at least about once a second even on CPU.
        sl = slice(start, min(start + n, config.frames))
        tic = time.perf_counter()
        if config.mode == "fixed_time":  # one slice, many cameras
            out = render(g, tt[:1], w2c[None, sl], K[None, sl], size, size, config.background, backend)
            rgb, alpha = out.rgb[0], out.alpha[0]
        else:  # one slice per frame, one camera each
            out = render(g, tt[sl], w2c[sl, None], K[sl, None], size, size, config.background, backend)
            rgb, alpha = out.rgb[:, 0], out.alpha[:, 0]
        frames.append(rgb.clamp(0.0, 1.0).to(output_device, torch.float32))
        alphas.append(alpha.clamp(0.0, 1.0).to(output_device, torch.float32))
        per_frame = (time.perf_counter() - tic) / (sl.stop - sl.start)
        start, i = sl.stop, i + 1
        n = max(1, min(config.chunk, int(CHUNK_SECONDS / max(per_frame, 1e-6))))
        report(callback, sl.stop, config.frames, chunk=i, chunks=n_chunks)
    return OrbitResult(torch.cat(frames), torch.cat(alphas), times.float(), cams)


__all__ = ["OrbitConfig", "OrbitResult", "ORBIT_MODES", "orbit_render", "time_path", "camera_path"]
