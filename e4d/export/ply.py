"""Per-timestamp standard 3D Gaussian Splatting PLY (the INRIA layout that 3DGS viewers and tools read).

Each file holds the 4D Gaussians sliced at one time (paper eq. 4-6 via :func:`e4d.slicing.slice_at`):

* ``x y z``: conditional mean; ``nx ny nz``: zeros (unused, kept for the layout);
* ``f_dc_0..2`` and ``f_rest_*``: SH coefficients with the temporal basis applied; ``f_rest`` is channel-major
  (all R coefficients of bands >= 1, then G, then B), as in the INRIA writer;
* ``opacity``: logit of (opacity x temporal marginal); ``scale_0..2``: log standard deviations and
  ``rot_0..3``: the unit quaternion (w, x, y, z) from the eigendecomposition of the conditional covariance;
* culled Gaussians (temporal marginal <= :data:`~e4d.slicing.CULL_THRESHOLD`) are dropped.

Binary little-endian float32, written atomically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..atomic import atomic_path
from ..gaussians4d import Gaussians4D
from ..progress import ProgressCallback, report
from ..sh import num_sh_bases
from .common import check_gaussians, export_slice
from .factor3d import covariance_to_scale_rotation

PathLike = Union[str, os.PathLike]


def ply_property_names(sh_degree: int) -> List[str]:
    """INRIA vertex property order for SH ``sh_degree``."""
    rest = 3 * (num_sh_bases(sh_degree) - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def covariance_to_log_scale_rotation(covs: Tensor) -> Tuple[Tensor, Tensor]:
    """Log standard deviations ``[N, 3]`` (the PLY ``scale_*`` columns) and quaternions ``[N, 4]`` of ``covs``."""
    scales, quats = covariance_to_scale_rotation(covs.double(), min_scale=1e-10)
    return torch.log(scales).float(), quats.float()


def slice_to_ply_arrays(g: Gaussians4D, time: float, sh_degree_out: Optional[int] = None,
                        rotation: Optional[Tensor] = None) -> Dict[str, np.ndarray]:
    """The PLY columns (name -> float32 ``[N']``) of ``g`` sliced at ``time``, culled Gaussians dropped.

    ``sh_degree_out`` pads (with zeros) or truncates the SH bands, e.g. 3 for viewers that expect 45 f_rest.
    ``rotation`` (``[3, 3]``) writes the slice in another world's axes (:func:`~e4d.export.common.rotate_slice`),
    e.g. a +Y-up viewer's; None keeps ours (+Z up).
    """
    check_gaussians(g, "PLY export")
    s = export_slice(g, time, rotation=rotation)
    with torch.no_grad():
        means, covs, opac, sh = s.means[0], s.covs[0], s.opacities[0], s.sh[0]  # [N',3] [N',3,3] [N'] [N',K,3]
        deg = int(g.sh_degree) if sh_degree_out is None else int(sh_degree_out)
        k_out = num_sh_bases(deg)
        if sh.shape[1] < k_out:
            sh = torch.cat([sh, sh.new_zeros(sh.shape[0], k_out - sh.shape[1], 3)], 1)
        sh = sh[:, :k_out]
        log_s, quat = covariance_to_log_scale_rotation(covs)
        o = opac.double().clamp(1e-7, 1 - 1e-7)
        cols = {"x": means[:, 0], "y": means[:, 1], "z": means[:, 2]}
        cols.update(nx=torch.zeros_like(means[:, 0]), ny=torch.zeros_like(means[:, 0]), nz=torch.zeros_like(means[:, 0]))
        for c in range(3):
            cols[f"f_dc_{c}"] = sh[:, 0, c]
        rest = sh[:, 1:].transpose(1, 2).reshape(sh.shape[0], -1)  # [N', 3 * (K - 1)], channel-major
        for i in range(rest.shape[1]):
            cols[f"f_rest_{i}"] = rest[:, i]
        cols["opacity"] = torch.log(o / (1 - o))
        for i in range(3):
            cols[f"scale_{i}"] = log_s[:, i]
        for i in range(4):
            cols[f"rot_{i}"] = quat[:, i]
        names = ply_property_names(deg)
        assert list(cols) == names, (list(cols), names)
        return {k: cols[k].detach().float().cpu().numpy() for k in names}


def write_ply(columns: Dict[str, np.ndarray], path: PathLike) -> Path:
    """Write float32 vertex columns (in the given order) as a binary little-endian PLY, atomically."""
    names = list(columns)
    n = len(next(iter(columns.values()))) if columns else 0
    if any(len(v) != n for v in columns.values()):
        raise ValueError(f"PLY columns differ in length: {[(k, len(v)) for k, v in columns.items()]}")
    data = np.empty(n, dtype=[(k, "<f4") for k in names])
    for k in names:
        data[k] = columns[k]
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n" + \
        "".join(f"property float {k}\n" for k in names) + "end_header\n"
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(data.tobytes())
    return path


def save_ply(g: Gaussians4D, time: float, path: PathLike, sh_degree_out: Optional[int] = None,
             rotation: Optional[Tensor] = None) -> Path:
    """Write the slice of ``g`` at normalized ``time`` as a standard 3DGS PLY (axes turned by ``rotation``, see
    :func:`slice_to_ply_arrays`); returns the path."""
    return write_ply(slice_to_ply_arrays(g, time, sh_degree_out, rotation), path)


def save_ply_sequence(g: Gaussians4D, times: Union[Sequence[float], Tensor], folder: PathLike,
                      prefix: str = "frame", sh_degree_out: Optional[int] = None,
                      callback: Optional[ProgressCallback] = None) -> List[Path]:
    """One PLY per time: ``folder/{prefix}_{i:04d}.ply`` (i = index into ``times``); returns the paths.

    ``callback(i, len(times), {"path": ...})`` after each file; raising from it (cancel) stops the export.
    """
    ts = [float(t) for t in (times.tolist() if isinstance(times, Tensor) else times)]
    if not ts:
        raise ValueError("save_ply_sequence needs at least one time")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, t in enumerate(ts):
        paths.append(save_ply(g, t, folder / f"{prefix}_{i:04d}.ply", sh_degree_out))
        report(callback, i + 1, len(ts), path=str(paths[-1]))
    return paths


def read_ply(path: PathLike) -> Dict[str, np.ndarray]:
    """Read a binary little-endian PLY of float32 vertex properties (as written here); name -> ``[N]``.

    The returned dict keeps the header's property order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PLY file not found: {path}")
    raw = path.read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path} is not a PLY file (no 'ply' magic or 'end_header')")
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: only binary_little_endian PLY is supported, header says {lines[1]!r}")
    n, names = None, []
    for ln in lines:
        parts = ln.split()
        if parts[:2] == ["element", "vertex"]:
            n = int(parts[2])
        elif parts[:1] == ["property"]:
            if parts[1] != "float":
                raise ValueError(f"{path}: property {parts[-1]} is {parts[1]}, only float is supported")
            names.append(parts[2])
    if n is None:
        raise ValueError(f"{path}: no 'element vertex' line in the header")
    body = raw[end + len(b"end_header\n"):]
    dt = np.dtype([(k, "<f4") for k in names])
    if len(body) < n * dt.itemsize:
        raise ValueError(f"{path} is truncated: {len(body)} bytes of vertex data, expected {n * dt.itemsize}")
    data = np.frombuffer(body[:n * dt.itemsize], dtype=dt)
    return {k: data[k].copy() for k in names}


__all__ = ["save_ply", "save_ply_sequence", "read_ply", "write_ply", "ply_property_names",
           "covariance_to_log_scale_rotation",
           "slice_to_ply_arrays"]
