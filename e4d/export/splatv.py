"""``.splatv`` export for the public splaTV viewer (antimatter15/splaTV, ``hybrid.js``, the viewer of its
``index.html``).

splaTV renders "spacetime" Gaussians: a static 3D Gaussian whose position follows a cubic polynomial in
``dt = t - trbf_center`` and whose opacity is multiplied by ``exp(-(dt / trbf_scale)^2)``. A sliced native 4D
Gaussian is exactly of that kind (paper eq. 5-6), so the mapping is exact up to float16 rounding:

* position        = mu_xyz (the conditional mean at t = mu_t),
* motion (linear) = Sigma_{1:3,4} / Sigma_44 (the conditional-mean velocity), quadratic and cubic terms 0,
* covariance      = the conditional covariance (independent of t) as scales + quaternion, no rotation over time,
* trbf_center     = mu_t, trbf_scale = sqrt(2 Sigma_44), so exp(-(dt/scale)^2) = exp(-1/2 dt^2 / Sigma_44),
* colour          = degree 0 at the Gaussian's temporal centre; alpha = sigmoid(opacity_logit).

Differences that remain: splaTV culls at a marginal of 0.02 (ours: :data:`~e4d.slicing.CULL_THRESHOLD`), plays t
in [0, 1] as ``sin(now)/2 + 1/2`` and has no view-dependent colour.

File layout (little-endian)::

    u32 magic 0x674b, u32 J (JSON length)
    J bytes  JSON list of chunks: [{"type": "splat", "size": bytes, "texwidth": 4096, "texheight": H,
                                    "cameras": [{id, img_name, width, height, position, rotation, fx, fy}, ...]}]
    then the chunk: a RGBA32UI texture of 4096 x H texels, 4 texels (16 words) per Gaussian, 1024 per row:
      words 0-2  f32 x, y, z           3  half2(qw, qx)     4  half2(qy, qz)
      5  half2(sx, sy)   6  half2(sz, 0)                    7  u8 r, g, b, a
      8-12  half2 motion_0..8 (velocity then 6 zeros)       13-14  half2 omega_0..3 (zeros)
      15 half2(trbf_center, trbf_scale)

Cameras use splaTV's convention: ``rotation`` is camera-to-world (rows), ``position`` the centre, OpenCV axes. In
the viewer, keys 0-9 and +/- jump to them (its start view is fixed, not taken from the file).
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from ..atomic import atomic_path
from ..gaussians4d import Gaussians4D
from .common import check_gaussians
from .compact4d import condition_on_time, gaussian_covariances, rgb_and_opacity
from .factor3d import covariance_to_scale_rotation

MAGIC = 0x674B
TEX_WIDTH = 4096
SPLATS_PER_ROW = TEX_WIDTH // 4
PAD_TRBF_CENTER = 60000.0
"""Temporal centre given to padding slots: far outside [0, 1], so splaTV's marginal is 0 and they never draw."""

PathLike = Union[str, os.PathLike]


def default_cameras():
    """8 cameras around the object (elevation 15 deg, radius 1.6, 1080 px SyncDreamer field of view)."""
    from e4d.cameras import orbit_path

    return orbit_path(8, elevation_deg=15.0, radius=1.6, size=1080)


def splatv_cameras(cameras) -> list[dict]:
    """:class:`e4d.cameras.Cameras` -> splaTV camera dicts (c2w rotation rows, centre, fx, fy, image size)."""
    out = []
    centres = cameras.centers()
    for i in range(len(cameras)):
        R = cameras.w2c[i, :3, :3].double()
        out.append({"id": i, "img_name": f"{i:05d}", "width": int(cameras.width), "height": int(cameras.height),
                    "position": [float(x) for x in centres[i]], "rotation": R.T.tolist(),
                    "fx": float(cameras.K[i, 0, 0]), "fy": float(cameras.K[i, 1, 1])})
    return out


def _half2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pack two float arrays as IEEE half floats into uint32 (a in the low 16 bits), like GLSL packHalf2x16."""
    lo = np.asarray(a, dtype=np.float16).view(np.uint16).astype(np.uint32)
    hi = np.asarray(b, dtype=np.float16).view(np.uint16).astype(np.uint32)
    return lo | (hi << 16)


def splatv_texture(g: Gaussians4D) -> tuple[np.ndarray, int]:
    """The splaTV texture words ``[H * 1024, 16]`` (uint32) of 4D Gaussians ``g`` and the texture height H."""
    n = int(g.means.shape[0])
    cov4 = gaussian_covariances(g)
    velocity, cov3, var_t = condition_on_time(cov4)
    scales, quats = covariance_to_scale_rotation(cov3)
    rgb, opacity = rgb_and_opacity(g)
    means = g.means.detach().to("cpu", torch.float64)
    height = max(1, math.ceil(n / SPLATS_PER_ROW))
    words = np.zeros((height * SPLATS_PER_ROW, 16), dtype=np.uint32)
    words[n:, 15] = _half2(np.full(len(words) - n, PAD_TRBF_CENTER), np.ones(len(words) - n))
    w = words[:n]
    w[:, 0:3] = means[:, :3].numpy().astype("<f4").view(np.uint32)
    q, s, v = quats.numpy(), scales.numpy(), velocity.numpy()
    w[:, 3] = _half2(q[:, 0], q[:, 1])
    w[:, 4] = _half2(q[:, 2], q[:, 3])
    w[:, 5] = _half2(s[:, 0], s[:, 1])
    w[:, 6] = _half2(s[:, 2], np.zeros(n))
    rgba = np.clip(np.round(torch.cat([rgb, opacity[:, None]], 1).numpy() * 255.0), 0, 255).astype(np.uint8)
    w[:, 7] = rgba.view("<u4")[:, 0]
    w[:, 8] = _half2(v[:, 0], v[:, 1])
    w[:, 9] = _half2(v[:, 2], np.zeros(n))  # motion_3..8 (quadratic, cubic) stay 0
    w[:, 15] = _half2(means[:, 3].numpy(), np.sqrt(2.0 * var_t.numpy()))
    return words, height


def splatv_bytes(g: Gaussians4D, cameras=None) -> bytes:
    """Encode 4D Gaussians ``g`` as a ``.splatv`` file (see the module docstring); ``cameras`` default to
    :func:`default_cameras`."""
    check_gaussians(g, "splatv export")
    words, height = splatv_texture(g)
    body = words.astype("<u4").tobytes()
    cams = splatv_cameras(cameras if cameras is not None else default_cameras())
    header = json.dumps([{"type": "splat", "size": len(body), "texwidth": TEX_WIDTH, "texheight": height,
                          "cameras": cams}]).encode("utf-8")
    return struct.pack("<II", MAGIC, len(header)) + header + body


def save_splatv(g: Gaussians4D, path: PathLike, cameras=None) -> Path:
    """Write :func:`splatv_bytes` to ``path`` atomically."""
    data = splatv_bytes(g, cameras)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def read_splatv(path_or_bytes: Union[PathLike, bytes]) -> dict[str, Any]:
    """Decode a ``.splatv``: ``header`` (chunk list) and per-slot arrays ``pos [M, 3]``, ``quat [M, 4]``,
    ``scale [M, 3]``, ``rgba [M, 4]``, ``motion [M, 9]``, ``omega [M, 4]``, ``trbf [M, 2]`` (M includes padding)."""
    data = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    magic, jlen = struct.unpack_from("<II", data, 0)
    if magic != MAGIC:
        raise ValueError(f"not a splatv file: magic {magic:#x}, expected {MAGIC:#x}")
    header = json.loads(bytes(data[8:8 + jlen]))
    chunk = header[0]
    if chunk.get("type") != "splat":
        raise ValueError(f"first splatv chunk must be of type 'splat', got {chunk.get('type')!r}")
    words = np.frombuffer(data, dtype="<u4", count=chunk["size"] // 4, offset=8 + jlen).reshape(-1, 16)

    def unhalf(col: int) -> np.ndarray:
        u = words[:, col]
        return np.stack([(u & 0xFFFF).astype(np.uint16).view(np.float16),
                         (u >> 16).astype(np.uint16).view(np.float16)], -1).astype(np.float64)

    return {"header": header, "pos": words[:, 0:3].copy().view("<f4"),
            "quat": np.concatenate([unhalf(3), unhalf(4)], -1), "scale": np.concatenate([unhalf(5), unhalf(6)[:, :1]], -1),
            "rgba": words[:, 7:8].copy().view(np.uint8).reshape(-1, 4),
            "motion": np.concatenate([unhalf(c) for c in range(8, 13)], -1)[:, :9],
            "omega": np.concatenate([unhalf(13), unhalf(14)], -1), "trbf": unhalf(15)}
