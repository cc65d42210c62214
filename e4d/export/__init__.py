"""Exports of fitted 4D Gaussians.

* :mod:`e4d.export.native`: the native 4D file (safetensors + metadata), lossless round trip.
* :mod:`e4d.export.ply`: per-timestamp standard 3DGS PLY (INRIA layout).
* ``e4d.export.splatv`` / ``e4d.export.splat`` / ``e4d.export.compact4d``: web-viewer formats (imported on demand).

Every exporter takes a :class:`~e4d.gaussians4d.Gaussians4D` and validates it with
:func:`e4d.export.common.check_gaussians`; 3D slices come from :func:`e4d.export.common.export_slice`.
"""
from .native import fitted_times, load_native, read_native_meta, save_native
from .ply import read_ply, save_ply, save_ply_sequence

__all__ = ["save_native", "load_native", "read_native_meta", "fitted_times", "save_ply", "save_ply_sequence", "read_ply"]
