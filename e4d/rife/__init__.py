"""Our RIFE IFNet (HD v3.6 and 4.x), checkpoint loading, and the OpenCV-flow fallback interpolator.

Public API: :class:`Interpolator`, :class:`RifeInterpolator`, :class:`RifeOptions`, :func:`load_interpolator`,
``flow_fallback.FlowInterpolator``, ``loader.detect_version`` / ``loader.load_rife_model``.
"""
from .interpolator import Interpolator, RifeInterpolator, RifeOptions, configure, load_interpolator

__all__ = ["Interpolator", "RifeInterpolator", "RifeOptions", "configure", "load_interpolator"]
