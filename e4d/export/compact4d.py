"""Compact 4D Gaussian file for the in-browser player (``web/js/e4d_player.js``).

The player slices the 4D Gaussians at time t on the GPU (paper eq. 4-6), so the file carries, per Gaussian,
the 4D mean, the full 4D covariance (its upper triangle) and a colour. Layout (all little-endian)::

    offset 0   4 bytes  magic  b"E4DC"
    offset 4   u32      version (1)
    offset 8   u32      N, number of Gaussians
    offset 12  u32      J, byte length of the JSON header (padded with spaces to a multiple of 4)
    offset 16  J bytes  JSON header, UTF-8; ``fields`` lists every array with its byte offset counted from the end
                        of the header (16 + J), its dtype and shape
    then       f32 [N, 4]   means (x, y, z, t); world +Z up, t in the clip's time units
               f32 [N, 10]  upper triangle of the 4D covariance Sigma, row-major:
                            xx xy xz xt yy yz yt zz zt tt
               u8  [N, 4]   r, g, b (degree-0 colour 0.5 + C0 * dc) and a = sigmoid(opacity_logit), x255

The covariance is stored in float32 on purpose: the conditional covariance Sigma_xyz - Sigma_xt Sigma_tx / Sigma_tt
subtracts two close numbers for thin, fast-moving Gaussians and float16 would cancel them to noise.
50,000 Gaussians take 3.0 MB.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..atomic import atomic_path
from ..gaussians4d import Gaussians4D
from ..rotation4d import covariance_4d
from ..slicing import CULL_THRESHOLD, conditional_covariance
from .common import check_gaussians, dc_rgb

MAGIC = b"E4DC"
VERSION = 1
COV_ORDER = ("xx", "xy", "xz", "xt", "yy", "yz", "yt", "zz", "zt", "tt")
_TRIU = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (3, 3)]

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------- the 4D maths
def gaussian_covariances(g: Gaussians4D) -> Tensor:
    """``[N, 4, 4]`` float64 4D covariances ``Sigma = R S S^T R^T`` of 4D Gaussians ``g`` (paper eq. 4).

    Uses the core's :func:`e4d.rotation4d.covariance_4d`, so the player shows exactly what the renderer draws;
    computed in float64 on the CPU because the conditional covariance later subtracts two close numbers.
    """
    ls, ql, qr = (getattr(g, k).detach().to("cpu", torch.float64) for k in ("log_scales", "rot_l", "rot_r"))
    return covariance_4d(ls, ql, qr)


def condition_on_time(cov: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Split 4D covariances ``[N, 4, 4]`` for slicing (paper eq. 5-6, :mod:`e4d.slicing`).

    Returns ``(velocity [N, 3], cov3 [N, 3, 3], var_t [N])``: the conditional mean at time t is
    ``mu_xyz + velocity * (t - mu_t)``, the conditional covariance is ``cov3`` (independent of t) and the
    temporal marginal is ``exp(-0.5 (t - mu_t)^2 / var_t)``.
    """
    var_t = cov[:, 3, 3].clamp_min(1e-20)
    cross = cov[:, :3, 3]
    return cross / var_t[:, None], conditional_covariance(cov[:, :3, :3], cross, var_t), var_t


def rgb_and_opacity(g: Gaussians4D) -> tuple[Tensor, Tensor]:
    """Degree-0 colour ``[N, 3]`` in [0, 1] and opacity ``[N]`` in (0, 1) of 4D Gaussians ``g``.

    View-dependent bands are dropped (the player draws degree 0); with temporal harmonics the colour is taken at
    each Gaussian's temporal centre, where its opacity peaks.
    """
    sh = g.sh.detach().to("cpu", torch.float64)
    if sh.ndim == 4:  # [N, 1 + time_degree, K, 3]: every temporal cosine is 1 at the Gaussian's own centre
        dc = sh[:, :, 0, :].sum(dim=1)
    elif sh.ndim == 3:  # [N, K, 3]
        dc = sh[:, 0, :]
    else:
        raise ValueError(f"Gaussians4D.sh must be [N, 1+time_degree, K, 3] or [N, K, 3], got {tuple(sh.shape)}")
    rgb = dc_rgb(dc)
    opacity = torch.sigmoid(g.opacity_logit.detach().to("cpu", torch.float64).reshape(-1))
    return rgb, opacity


# ----------------------------------------------------------------------------------------------- the file
@dataclass
class Compact4D:
    """A compact 4D file in memory (what :func:`read_compact4d` returns)."""

    header: dict
    """The JSON header (format, version, count, time_range, center, radius, cull_threshold, fields, extras)."""
    means: np.ndarray
    """``[N, 4]`` float32 (x, y, z, t)."""
    cov: np.ndarray
    """``[N, 10]`` float32 upper triangle of Sigma in :data:`COV_ORDER`."""
    rgba: np.ndarray
    """``[N, 4]`` uint8 colour and opacity."""

    def covariance(self) -> np.ndarray:
        """The full symmetric ``[N, 4, 4]`` covariances (float64)."""
        out = np.zeros((len(self.cov), 4, 4))
        for k, (i, j) in enumerate(_TRIU):
            out[:, i, j] = out[:, j, i] = self.cov[:, k]
        return out


def compact4d_bytes(g: Gaussians4D, time_range: Sequence[float] = (0.0, 1.0), extras: Optional[dict] = None) -> bytes:
    """Encode 4D Gaussians ``g`` into the compact player format (see the module docstring).

    Args:
        g: :class:`e4d.gaussians4d.Gaussians4D` (means ``[N, 4]``, log_scales ``[N, 4]``, rot_l/rot_r ``[N, 4]``,
            opacity_logit ``[N]``, sh ``[N, 1+Tdeg, K, 3]``); any device/dtype, read on CPU.
        time_range: the clip's time span ``(t0, t1)``, which the player's slider covers.
        extras: additional JSON-serialisable header entries (e.g. ``{"background": "white", "autoplay": True}``).
    """
    n = check_gaussians(g, "compact 4D export")
    t0, t1 = float(time_range[0]), float(time_range[1])
    if not t1 > t0:
        raise ValueError(f"time_range must have t1 > t0, got {tuple(time_range)}")
    means = g.means.detach().to("cpu", torch.float64)
    cov = gaussian_covariances(g)
    rgb, opacity = rgb_and_opacity(g)
    tri = torch.stack([cov[:, i, j] for i, j in _TRIU], -1)

    centre = means[:, :3].median(dim=0).values  # robust to a few far-away floaters
    radius = float(torch.quantile((means[:, :3] - centre).norm(dim=-1), 0.98)) if n > 1 else 0.5
    means32 = means.numpy().astype("<f4")
    tri32 = tri.numpy().astype("<f4")
    rgba = np.concatenate([rgb.numpy(), opacity.numpy()[:, None]], 1)
    rgba8 = np.clip(np.round(rgba * 255.0), 0, 255).astype(np.uint8)

    fields, off = [], 0
    for name, arr, dt in (("means", means32, "float32"), ("cov", tri32, "float32"), ("rgba", rgba8, "uint8")):
        fields.append({"name": name, "dtype": dt, "shape": list(arr.shape), "offset": off})
        off += arr.nbytes
    header = {"format": "e4d-compact4d", "version": VERSION, "count": n, "time_range": [t0, t1],
              "cull_threshold": CULL_THRESHOLD, "center": [float(x) for x in centre], "radius": max(radius, 1e-3),
              "up": [0.0, 0.0, 1.0], "sh_degree": 0, "cov_order": list(COV_ORDER), "fields": fields}
    header.update(extras or {})
    js = json.dumps(header, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)  # keeps the float arrays 4-byte aligned
    return b"".join([MAGIC, struct.pack("<III", VERSION, n, len(js)), js,
                     means32.tobytes(), tri32.tobytes(), rgba8.tobytes()])


def write_compact4d(g: Gaussians4D, path: PathLike, time_range: Sequence[float] = (0.0, 1.0),
                    extras: Optional[dict] = None) -> Path:
    """Write :func:`compact4d_bytes` to ``path`` atomically (a cancelled write leaves no partial file)."""
    data = compact4d_bytes(g, time_range, extras)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def read_compact4d(path_or_bytes: Union[PathLike, bytes]) -> Compact4D:
    """Parse a compact 4D file (path or bytes); raises ValueError with the reason for anything malformed."""
    data = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    if len(data) < 16 or data[:4] != MAGIC:
        raise ValueError(f"not an Efficient4D compact file: magic {bytes(data[:4])!r}, expected {MAGIC!r}")
    version, n, jlen = struct.unpack_from("<III", data, 4)
    if version != VERSION:
        raise ValueError(f"compact 4D version {version} is not supported (this reader knows {VERSION}); re-export")
    header = json.loads(bytes(data[16:16 + jlen]).decode("utf-8"))
    arrays, base = {}, 16 + jlen
    for f in header["fields"]:
        dt = np.dtype("<f4") if f["dtype"] == "float32" else np.dtype(np.uint8)
        count = int(np.prod(f["shape"]))
        start = base + f["offset"]
        end = start + count * dt.itemsize
        if end > len(data):
            raise ValueError(f"compact 4D file is truncated: field {f['name']} ends at {end}, file has {len(data)} bytes")
        arrays[f["name"]] = np.frombuffer(data, dtype=dt, count=count, offset=start).reshape(f["shape"])
    if header.get("count") != n:
        raise ValueError(f"compact 4D header count {header.get('count')} != {n} in the binary header")
    return Compact4D(header, arrays["means"], arrays["cov"], arrays["rgba"])
