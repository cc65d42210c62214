"""Native 4D Gaussians of Yang et al. 2024 ("Real-time Photorealistic Dynamic Scene Representation and Rendering
with 4D Gaussian Splatting", §3), the representation Efficient4D fits (Efficient4D §3, §4.2).

Each Gaussian has a 4D mean (x, y, z, t), four log standard deviations (3 spatial + 1 temporal) along its own
axes, a 4D rotation given by two quaternions (left- and right-isoclinic, see :mod:`e4d.rotation4d`), an opacity
logit and colour coefficients over view-direction SH x a temporal cosine basis (see :mod:`e4d.sh`).
Time is normalized: the clip spans [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from .sh import MAX_SH_DEGREE, num_sh_bases, rgb_to_sh0

TENSOR_FIELDS = ("means", "log_scales", "rot_l", "rot_r", "opacity_logit", "sh")
CONFIG_FIELDS = ("sh_degree", "time_degree", "time_period")


@dataclass
class Gaussians4D:
    """A set of N native 4D Gaussians (raw, optimizable parameters; activations are applied where used).

    Attributes:
        means: ``[N, 4]`` centres (x, y, z, t); t in normalized time.
        log_scales: ``[N, 4]`` log standard deviations along the Gaussian's axes (3 spatial, then time).
        rot_l, rot_r: ``[N, 4]`` left/right quaternions (w, x, y, z) of the 4D rotation; normalized when used.
        opacity_logit: ``[N]``; opacity = sigmoid(opacity_logit).
        sh: ``[N, 1 + time_degree, (sh_degree + 1) ** 2, 3]`` colour coefficients; ``rgb = max(SH + 0.5, 0)``.
        sh_degree: view-dependent SH degree (0..3); 0 = constant colour per Gaussian.
        time_degree: number of temporal cosine harmonics (0 = colour constant in time).
        time_period: period (normalized time) of the temporal basis ``cos(2 pi n (t - mu_t) / time_period)``.
    """

    means: Tensor
    log_scales: Tensor
    rot_l: Tensor
    rot_r: Tensor
    opacity_logit: Tensor
    sh: Tensor
    sh_degree: int = 0
    time_degree: int = 0
    time_period: float = 2.0

    def __post_init__(self) -> None:
        self.check_shapes()

    # ------------------------------------------------------------------ checks
    def check_shapes(self) -> None:
        """Raise ValueError unless every tensor has the documented shape (cheap; no device sync)."""
        if not isinstance(self.means, Tensor) or self.means.ndim != 2 or self.means.shape[1] != 4:
            raise ValueError(f"Gaussians4D.means must be [N, 4] (x, y, z, t), got "
                             f"{tuple(getattr(self.means, 'shape', ()))}")
        n = self.means.shape[0]
        expect = {"log_scales": (n, 4), "rot_l": (n, 4), "rot_r": (n, 4), "opacity_logit": (n,),
                  "sh": (n, 1 + int(self.time_degree), num_sh_bases(self.sh_degree), 3)}
        for name, shape in expect.items():
            t = getattr(self, name)
            if not isinstance(t, Tensor):
                raise TypeError(f"Gaussians4D.{name} must be a torch.Tensor, got {type(t).__name__}")
            if tuple(t.shape) != shape:
                raise ValueError(f"Gaussians4D.{name} must be {list(shape)} (N={n}, sh_degree={self.sh_degree}, "
                                 f"time_degree={self.time_degree}), got {list(t.shape)}")
            if t.device != self.means.device or t.dtype != self.means.dtype:
                raise ValueError(f"Gaussians4D.{name} is {t.dtype} on {t.device} but means is {self.means.dtype} on "
                                 f"{self.means.device}; move all tensors together with .to()")
        if not self.means.is_floating_point():
            raise TypeError(f"Gaussians4D tensors must be floating point, got {self.means.dtype}")
        if int(self.time_degree) < 0:
            raise ValueError(f"time_degree must be >= 0, got {self.time_degree}")
        if not float(self.time_period) > 0:
            raise ValueError(f"time_period must be > 0, got {self.time_period}")

    def validate(self) -> "Gaussians4D":
        """Check shapes and that no value is NaN/inf (this syncs the device); returns self."""
        self.check_shapes()
        for name in TENSOR_FIELDS:
            t = getattr(self, name)
            if not torch.isfinite(t).all():
                bad = int((~torch.isfinite(t)).sum())
                raise ValueError(f"Gaussians4D.{name} has {bad} NaN/inf values; the fit diverged or the file is "
                                 f"corrupt (lower the learning rates, or re-export the model)")
        return self

    # --------------------------------------------------------------- properties
    @property
    def num(self) -> int:
        return int(self.means.shape[0])

    def __len__(self) -> int:
        return self.num

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    @property
    def opacity(self) -> Tensor:
        """Activated opacity ``[N]``."""
        return torch.sigmoid(self.opacity_logit)

    @property
    def scales(self) -> Tensor:
        """Activated standard deviations ``[N, 4]``."""
        return torch.exp(self.log_scales)

    # ------------------------------------------------------------ conversions
    def _map(self, fn) -> "Gaussians4D":
        return Gaussians4D(**{k: fn(getattr(self, k)) for k in TENSOR_FIELDS}, **self.config())

    def to(self, device=None, dtype=None) -> "Gaussians4D":
        return self._map(lambda t: t.to(device=device, dtype=dtype))

    def detach(self) -> "Gaussians4D":
        return self._map(lambda t: t.detach())

    def clone(self) -> "Gaussians4D":
        return self._map(lambda t: t.clone())

    def select(self, index: Tensor) -> "Gaussians4D":
        """Subset by a bool mask ``[N]`` or long indices (for pruning / compaction)."""
        return self._map(lambda t: t[index])

    def requires_grad_(self, flag: bool = True) -> "Gaussians4D":
        for k in TENSOR_FIELDS:
            getattr(self, k).requires_grad_(flag)
        return self

    def config(self) -> Dict[str, Any]:
        """The non-tensor settings, JSON-serializable."""
        return {"sh_degree": int(self.sh_degree), "time_degree": int(self.time_degree),
                "time_period": float(self.time_period)}

    def state_dict(self) -> Dict[str, Tensor]:
        """The tensors by field name (detached, for safetensors); pair with :meth:`config`."""
        return {k: getattr(self, k).detach() for k in TENSOR_FIELDS}

    def parameters_dict(self) -> Dict[str, Tensor]:
        """The live tensors by field name (same objects), e.g. to build optimizer param groups."""
        return {k: getattr(self, k) for k in TENSOR_FIELDS}

    @classmethod
    def from_state_dict(cls, state: Dict[str, Tensor], config: Optional[Dict[str, Any]] = None) -> "Gaussians4D":
        """Rebuild from :meth:`state_dict` (+ :meth:`config`); missing config keys take their defaults."""
        missing = [k for k in TENSOR_FIELDS if k not in state]
        if missing:
            raise ValueError(f"4D Gaussian state lacks {missing}; expected keys {list(TENSOR_FIELDS)} "
                             f"(got {sorted(state)})")
        cfg = dict(config or {})
        unknown = set(cfg) - set(CONFIG_FIELDS)
        if unknown:
            raise ValueError(f"unknown 4D Gaussian config keys {sorted(unknown)}; allowed {list(CONFIG_FIELDS)}")
        if "sh_degree" not in cfg:
            k = state["sh"].shape[-2] if state["sh"].ndim == 4 else 1
            cfg["sh_degree"] = int(round(math.sqrt(k))) - 1
        if "time_degree" not in cfg and state["sh"].ndim == 4:
            cfg["time_degree"] = int(state["sh"].shape[1]) - 1
        return cls(**{k: state[k] for k in TENSOR_FIELDS}, **cfg)

    @staticmethod
    def cat(items: "list[Gaussians4D]") -> "Gaussians4D":
        if not items:
            raise ValueError("Gaussians4D.cat needs at least one Gaussians4D")
        cfgs = {tuple(sorted(g.config().items())) for g in items}
        if len(cfgs) != 1:
            raise ValueError(f"Gaussians4D.cat needs one config, got {[g.config() for g in items]}")
        return Gaussians4D(**{k: torch.cat([getattr(g, k) for g in items]) for k in TENSOR_FIELDS},
                           **items[0].config())

    def __repr__(self) -> str:
        return (f"Gaussians4D(num={self.num}, sh_degree={self.sh_degree}, time_degree={self.time_degree}, "
                f"time_period={self.time_period}, device={self.device}, dtype={self.dtype})")


def mean_neighbour_distance(num: int, radius: float) -> float:
    """Expected nearest-neighbour distance of ``num`` points uniform in a ball of ``radius``.

    For a Poisson process of density ``n`` this is ``Gamma(4/3) * (4 pi n / 3) ** (-1/3)``; used as the initial
    spatial standard deviation so the random cloud starts roughly space-filling without heavy overlap.
    """
    density = num / (4.0 / 3.0 * math.pi * radius ** 3)
    return math.gamma(4.0 / 3.0) * (4.0 * math.pi * density / 3.0) ** (-1.0 / 3.0)


def init_random(num: int = 50_000, radius: float = 0.5, time_range: Tuple[float, float] = (0.0, 1.0),
                sigma_t: float = 0.1, sh_degree: int = 0, time_degree: int = 0, time_period: float = 2.0,
                opacity: float = 0.1, scale: Optional[float] = None, rgb_range: Tuple[float, float] = (0.5, 1.0),
                seed: Optional[int] = 0, generator: Optional[torch.Generator] = None,
                device=None, dtype: torch.dtype = torch.float32) -> Gaussians4D:
    """Random 4D Gaussians as in Efficient4D §4.2: uniform in the ball, identity rotations, no point cloud.

    Args:
        num: number of Gaussians (paper: 50,000).
        radius: radius of the ball the spatial means are drawn from, uniformly by volume (paper: 0.5).
        time_range: temporal means are uniform in this interval (normalized time).
        sigma_t: initial temporal standard deviation (normalized time). The official generation fit uses
            sqrt((K-1)/5) frames, i.e. about 0.115 for K = 16 frames spanning [0, 1].
        sh_degree, time_degree, time_period: colour model (see :class:`Gaussians4D`).
        opacity: initial opacity of every Gaussian.
        scale: initial spatial standard deviation; ``None`` = :func:`mean_neighbour_distance` (0.012 for the default).
        rgb_range: initial colours are uniform in this range per channel (white-ish by default, matching the
            white backgrounds of the view matrix); higher SH bands and temporal coefficients start at zero.
        seed / generator: randomness source (``generator`` wins; ``seed=None`` means 0, so the init is always
            reproducible); sampling happens on the CPU in float64 so the result is identical on every device.
        device, dtype: where the tensors live.
    """
    if num < 1:
        raise ValueError(f"init_random needs num >= 1, got {num}")
    if radius <= 0 or sigma_t <= 0 or not 0 < opacity < 1:
        raise ValueError(f"init_random needs radius > 0, sigma_t > 0 and 0 < opacity < 1, got radius={radius}, "
                         f"sigma_t={sigma_t}, opacity={opacity}")
    t0, t1 = float(time_range[0]), float(time_range[1])
    if not t1 >= t0:
        raise ValueError(f"time_range must be (start, end) with end >= start, got {time_range}")
    if sh_degree > MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be in 0..{MAX_SH_DEGREE}, got {sh_degree}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0 if seed is None else int(seed))
    f64 = torch.float64
    direction = torch.randn(num, 3, generator=gen, dtype=f64)
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    r = radius * torch.rand(num, 1, generator=gen, dtype=f64) ** (1.0 / 3.0)  # uniform by volume
    t = t0 + (t1 - t0) * torch.rand(num, 1, generator=gen, dtype=f64)
    means = torch.cat([direction * r, t], dim=1)
    s = mean_neighbour_distance(num, radius) if scale is None else float(scale)
    if s <= 0:
        raise ValueError(f"init_random needs scale > 0, got {scale}")
    log_scales = torch.tensor([math.log(s)] * 3 + [math.log(sigma_t)], dtype=f64).expand(num, 4).clone()
    ident = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=f64).expand(num, 4)
    opacity_logit = torch.full((num,), math.log(opacity / (1.0 - opacity)), dtype=f64)
    lo, hi = rgb_range
    rgb = lo + (hi - lo) * torch.rand(num, 3, generator=gen, dtype=f64)
    sh = torch.zeros(num, 1 + int(time_degree), num_sh_bases(sh_degree), 3, dtype=f64)
    sh[:, 0, 0] = rgb_to_sh0(rgb)
    g = Gaussians4D(means, log_scales, ident.clone(), ident.clone(), opacity_logit, sh,
                    int(sh_degree), int(time_degree), float(time_period))
    return g.to(device=device, dtype=dtype)


__all__ = ["Gaussians4D", "init_random", "mean_neighbour_distance", "TENSOR_FIELDS", "CONFIG_FIELDS"]
