"""Pick and prepare an interpolator: RIFE from a checkpoint file, or the weights-free flow fallback."""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Optional, Union

from ..rife.loader import load_rife_model
from .base import Interpolator
from .flow import FlowInterpolator
from .rife import RifeConfig, RifeInterpolator


def load_interpolator(path: Optional[Union[str, Path]] = None, config: Optional[RifeConfig] = None,
                      device=None, dtype=None) -> Interpolator:
    """RIFE from a checkpoint file, or the OpenCV flow fallback when ``path`` is None."""
    if path is None:
        return FlowInterpolator()
    path = Path(path)
    interp = RifeInterpolator(load_rife_model(path), path.name, config)
    if device is not None or dtype is not None:
        interp.to(device, dtype)
    return interp


def configure(interp: Interpolator, device=None, dtype=None, scale: Optional[float] = None,
              ensemble: Optional[bool] = None) -> Interpolator:
    """A ready-to-run copy of ``interp`` on ``device``/``dtype`` with a new config; ``interp`` itself is untouched.

    RIFE nets are copied (about 20 MB) so a cached loader output never changes device or precision behind the
    user's back; the flow fallback has no weights and is returned as is.
    """
    if not isinstance(interp, RifeInterpolator):
        return interp
    cfg = replace(interp.config, **{k: v for k, v in (("scale", scale), ("ensemble", ensemble)) if v is not None})
    new = RifeInterpolator(copy.deepcopy(interp.net), "", cfg)
    new.name = interp.name
    new.net.to(device=device, dtype=dtype)
    return new
