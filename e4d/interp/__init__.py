"""Frame interpolation, model-agnostic: the :class:`Interpolator` contract, its RIFE and OpenCV-flow
implementations, and the time densification of view matrices and frame batches (paper §4.1).

:mod:`e4d.rife` is the RIFE model package this one builds on (it never imports ``e4d.interp``).
"""
from .base import Interpolator
from .flow import FlowConfig, FlowInterpolator
from .load import configure, load_interpolator
from .rife import RifeConfig, RifeInterpolator
from .sequences import interpolate_frames, interpolate_sequences, interpolate_view_matrix

__all__ = ["Interpolator", "RifeInterpolator", "RifeConfig", "FlowInterpolator", "FlowConfig", "load_interpolator",
           "configure", "interpolate_view_matrix", "interpolate_frames", "interpolate_sequences"]
