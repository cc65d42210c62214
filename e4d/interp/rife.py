"""RIFE (the :mod:`e4d.rife` networks) behind the :class:`~e4d.interp.base.Interpolator` contract.

The network runs on its own device/dtype; results come back on the inputs' device and dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..rife.ifnet4 import IFNet4
from ..rife.ifnet36 import IFNet36
from ..limits import check_finite_fields
from ..rife.warp import warp
from .base import Interpolator, TimeArg, check_pair, time_vector


def pad_to(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad right and bottom to a multiple (reference §6: the padding amount changes the results)."""
    H, W = x.shape[-2:]
    ph, pw = -H % multiple, -W % multiple
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


@dataclass
class RifeConfig:
    """Inference settings of a RIFE interpolator."""

    pad_multiple: Optional[int] = None
    """Pad H, W to this multiple. None: 64 for 4.x (ComfyUI-Frame-Interpolation), 32 for v3.6 (Efficient4D),
    raised to what the scale needs (4 * max(scale list))."""
    scale: float = 1.0
    """Divides the scale list: <1 coarser flow (large images), >1 finer."""
    ensemble: bool = False
    """Official 4.6/4.7/4.17 ensemble (reverse pass averaged). v3.6 always averages the reverse pass."""
    max_depth: int = 5
    """Midpoint-only models: bisection depth for non-dyadic t (error <= 2^-depth)."""

    def validate(self) -> None:
        """Raise ValueError naming the field, its rule, the value and the fix."""
        check_finite_fields(self)  # NaN passes every range check below
        if self.scale <= 0:
            raise ValueError(f"RifeConfig.scale must be > 0, got {self.scale}; use 1.0 (0.5 for 4K frames)")
        if self.pad_multiple is not None and self.pad_multiple < 1:
            raise ValueError(f"RifeConfig.pad_multiple must be None or >= 1, got {self.pad_multiple}; use None")
        if self.max_depth < 1:
            raise ValueError(f"RifeConfig.max_depth must be >= 1, got {self.max_depth}; use 5")


class RifeInterpolator(Interpolator):
    """RIFE 4.x or HD v3.6 behind the :class:`Interpolator` contract."""

    def __init__(self, net: Union[IFNet4, IFNet36], source: str = "", config: Optional[RifeConfig] = None) -> None:
        self.net = net
        self.config = config or RifeConfig()
        self.config.validate()
        self.version = "3.6" if isinstance(net, IFNet36) else net.config.version
        self.midpoint_only = isinstance(net, IFNet36)
        if self.config.ensemble and not self.midpoint_only and not net.config.supports_ensemble:
            raise ValueError(f"RIFE {self.version} has no ensemble mode; set ensemble=False")
        self.name = f"rife {self.version}" + (f" ({source})" if source else "")

    # -- device handling -----------------------------------------------------------------------
    def to(self, device=None, dtype=None) -> "RifeInterpolator":
        self.net.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def pad_multiple(self) -> int:
        """The padding multiple in use: the config value, or 64 (4.x) / 32 (v3.6), combined with what scale needs."""
        max_scale = 4.0 if self.midpoint_only else max(self.net.config.base_scales)
        need = max(1, math.ceil(4 * max_scale / self.config.scale - 1e-9))
        if self.config.pad_multiple is None:
            return math.lcm(32 if self.midpoint_only else 64, need)
        if self.config.pad_multiple % need:
            raise ValueError(f"pad_multiple={self.config.pad_multiple} does not fit scale={self.config.scale}: "
                             f"padded sizes must be multiples of {need} (4 x the largest downscale); use "
                             f"pad_multiple={math.lcm(self.config.pad_multiple, need)}")
        return self.config.pad_multiple

    # -- one network pass on padded tensors ------------------------------------------------------
    def _pass(self, p0: Tensor, p1: Tensor, t: Tensor, debug: Optional[dict] = None) -> tuple[Tensor, Tensor, Tensor]:
        if self.midpoint_only:
            return self.net(p0, p1, scale=self.config.scale, debug=debug)
        B, _, H, W = p0.shape
        plane = t.view(B, 1, 1, 1).expand(B, 1, H, W).to(p0.dtype)
        return self.net(p0, p1, plane, scale=self.config.scale, ensemble=self.config.ensemble, debug=debug)

    @staticmethod
    def _blend(x0: Tensor, x1: Tensor, flow: Tensor, m: Tensor) -> Tensor:
        return warp(x0, flow[:, :2]) * m + warp(x1, flow[:, 2:4]) * (1 - m)

    def _bisect(self, p0: Tensor, p1: Tensor, t: Tensor, e0: Optional[Tensor], e1: Optional[Tensor]):
        """Midpoint-only models: recursive midpoints on the PADDED tensors (Efficient4D --cycle2 semantics)."""
        lo, hi = torch.zeros_like(t), torch.ones_like(t)
        a, b, ea, eb = p0, p1, e0, e1
        out, eout = p0.clone(), None if e0 is None else e0.clone()
        done = (t <= 0) | (t >= 1)
        at_one = t >= 1
        out[at_one] = p1[at_one]
        if eout is not None:
            eout[at_one] = e1[at_one]
        tol = 2.0 ** -(self.config.max_depth + 1)
        for depth in range(self.config.max_depth):
            todo = ~done
            if not bool(todo.any()):
                break
            idx = todo.nonzero().flatten()
            mid, flow, m = self._pass(a[idx], b[idx], t[idx])
            emid = None if ea is None else self._blend(ea[idx], eb[idx], flow, m)
            tm = (lo[idx] + hi[idx]) / 2
            hit = ((tm - t[idx]).abs() <= tol) | (depth == self.config.max_depth - 1)
            out[idx[hit]] = mid[hit]
            if eout is not None:
                eout[idx[hit]] = emid[hit]
            done[idx[hit]] = True
            left = t[idx] < tm  # continue in [lo, tm] (mid becomes the right frame) or [tm, hi]
            a, b = a.clone(), b.clone()
            b[idx[left]], a[idx[~left]] = mid[left], mid[~left]
            hi[idx[left]], lo[idx[~left]] = tm[left], tm[~left]
            if ea is not None:
                ea, eb = ea.clone(), eb.clone()
                eb[idx[left]], ea[idx[~left]] = emid[left], emid[~left]
        return out, eout

    @torch.no_grad()
    def interpolate_with_extra(self, img0: Tensor, img1: Tensor, t: TimeArg = 0.5, extra0: Optional[Tensor] = None,
                               extra1: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        check_pair(img0, img1, extra0, extra1)
        B, _, H, W = img0.shape
        dev, dt = self.device, self.dtype
        tv = time_vector(t, B, dev, torch.float32)
        mult = self.pad_multiple()
        # inputs are clamped to [0, 1] before the network (ComfyUI-Frame-Interpolation, vs-rife)
        p0 = pad_to(img0.to(dev, dt).clamp(0, 1), mult)
        p1 = pad_to(img1.to(dev, dt).clamp(0, 1), mult)
        e0 = None if extra0 is None else pad_to(extra0.to(dev, dt), mult)
        e1 = None if extra1 is None else pad_to(extra1.to(dev, dt), mult)
        if self.midpoint_only:
            out, eout = self._bisect(p0, p1, tv, e0, e1)
        else:
            out, flow, m = self._pass(p0, p1, tv)
            eout = None if e0 is None else self._blend(e0, e1, flow, m)
        out = out[:, :, :H, :W].clamp(0, 1).to(img0.device, img0.dtype)
        if eout is not None:
            eout = eout[:, :, :H, :W].to(extra0.device, extra0.dtype)
        return out, eout

    @torch.no_grad()
    def debug_pass(self, img0: Tensor, img1: Tensor, t: TimeArg = 0.5) -> dict:
        """One network pass with intermediates at the padded size (parity tests)."""
        dbg: dict = {}
        mult = self.pad_multiple()
        p0 = pad_to(img0.to(self.device, self.dtype).clamp(0, 1), mult)
        p1 = pad_to(img1.to(self.device, self.dtype).clamp(0, 1), mult)
        dbg["out"] = self._pass(p0, p1, time_vector(t, img0.shape[0], self.device, torch.float32), dbg)[0]
        return dbg
