"""Slicing 4D Gaussians at a time t into 3D Gaussians (Yang et al. 2024, §3.2, eq. (4)-(6)).

Each 4D Gaussian N(mu, Sigma) over (x, y, z, t) factorizes as p(t) * p(x, y, z | t). Rendering at time t uses

* the conditional 3D mean    ``mu_{xyz|t} = mu_{1:3} + Sigma_{1:3,4} Sigma_{4,4}^-1 (t - mu_t)``,
* the conditional covariance ``Sigma_{3|t} = Sigma_{1:3,1:3} - Sigma_{1:3,4} Sigma_{4,4}^-1 Sigma_{4,1:3}``,
* the temporal marginal      ``p(t) = exp(-1/2 (t - mu_t)^2 / Sigma_{4,4})``, which multiplies the opacity,

and Gaussians with ``p(t) <= 0.05`` are culled. The conditional covariance does not depend on t, so it is
computed once for all times. Shapes stay static (culled Gaussians get opacity 0 and ``visible = False``) so many
times can be rendered in one batched rasterizer call; :meth:`Gaussians3D.compact` drops them for one time.
Everything here is differentiable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .gaussians4d import Gaussians4D
from .rotation4d import covariance_4d
from .sh import apply_time_basis, num_sh_bases

CULL_THRESHOLD = 0.05
"""Gaussians whose temporal marginal p(t) is at or below this are culled (4DGS's official value)."""

TimesLike = Union[Tensor, Sequence[float], float]


@dataclass
class Gaussians3D:
    """3D Gaussians of B time slices (same N in every slice; culled ones have opacity 0 and visible False).

    Attributes:
        means: ``[B, N, 3]`` conditional means.
        covs: ``[B, N, 3, 3]`` conditional covariances (a broadcast view: identical for every time).
        opacities: ``[B, N]`` activated opacity x temporal marginal, 0 where culled.
        sh: ``[B, N, K, 3]`` view-dependent SH coefficients with the temporal basis applied.
        sh_degree: SH degree of ``sh`` (K = (sh_degree + 1) ** 2).
        visible: ``[B, N]`` bool, False where culled; None = all visible.
    """

    means: Tensor
    covs: Tensor
    opacities: Tensor
    sh: Tensor
    sh_degree: int = 0
    visible: Optional[Tensor] = None

    def __post_init__(self) -> None:
        if self.means.ndim != 3 or self.means.shape[-1] != 3:
            raise ValueError(f"Gaussians3D.means must be [B, N, 3], got {tuple(self.means.shape)}")
        b, n = self.means.shape[:2]
        k = num_sh_bases(self.sh_degree)
        checks = {"covs": (b, n, 3, 3), "opacities": (b, n), "sh": (b, n, k, 3)}
        if self.visible is not None:
            checks["visible"] = (b, n)
        for name, shape in checks.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"Gaussians3D.{name} must be {list(shape)} (B={b}, N={n}, sh_degree="
                                 f"{self.sh_degree}), got {list(getattr(self, name).shape)}")

    @property
    def batch(self) -> int:
        return int(self.means.shape[0])

    @property
    def num(self) -> int:
        return int(self.means.shape[1])

    def compact(self, b: int = 0) -> Tuple["Gaussians3D", Tensor]:
        """Slice ``b`` with culled Gaussians removed (batch 1, N' <= N) and the kept indices ``[N']``."""
        keep = (self.opacities[b] > 0) if self.visible is None else self.visible[b]
        idx = keep.nonzero().squeeze(-1)
        pick = lambda t: t[b, idx][None]  # noqa: E731
        return Gaussians3D(pick(self.means), pick(self.covs), pick(self.opacities), pick(self.sh),
                           self.sh_degree, None), idx


def conditional_mean(mu_xyz: Tensor, mu_t: Tensor, cov_xyz_t: Tensor, var_t: Tensor, times: Tensor) -> Tensor:
    """``mu_{xyz|t} = mu_{1:3} + Sigma_{1:3,4} / Sigma_{4,4} * (t - mu_t)``, ``[B, N, 3]``.

    Args: ``mu_xyz [N, 3]``, ``mu_t [N]``, ``cov_xyz_t [N, 3]`` (= Sigma_{1:3,4}), ``var_t [N]`` (= Sigma_{4,4}),
    ``times [B]``.
    """
    gain = cov_xyz_t / var_t[:, None]  # [N, 3]: the regression coefficient of xyz on t
    dt = times[:, None] - mu_t[None, :]  # [B, N]
    return mu_xyz[None] + dt[..., None] * gain[None]


def conditional_covariance(cov_xyz: Tensor, cov_xyz_t: Tensor, var_t: Tensor) -> Tensor:
    """``Sigma_{3|t} = Sigma_{1:3,1:3} - Sigma_{1:3,4} Sigma_{4,1:3} / Sigma_{4,4}``, ``[N, 3, 3]`` (independent of t)."""
    return cov_xyz - cov_xyz_t[:, :, None] * cov_xyz_t[:, None, :] / var_t[:, None, None]


def temporal_marginal(mu_t: Tensor, var_t: Tensor, times: Tensor) -> Tensor:
    """``p(t) = exp(-1/2 (t - mu_t)^2 / Sigma_{4,4})``, ``[B, N]`` (unnormalized: 1 at the temporal centre)."""
    dt = times[:, None] - mu_t[None, :]
    return torch.exp(-0.5 * dt * dt / var_t[None, :])


def cull_mask(marginal: Tensor, threshold: float = CULL_THRESHOLD) -> Tensor:
    """Visible Gaussians: ``p(t) > threshold`` (bool, same shape as ``marginal``)."""
    return marginal > threshold


def as_times(times: TimesLike, like: Tensor) -> Tensor:
    """Times as a ``[B]`` tensor on ``like``'s device and dtype, with a clear error for bad input."""
    t = torch.as_tensor(times, dtype=like.dtype, device=like.device).reshape(-1) if not isinstance(times, Tensor) \
        else times.to(device=like.device, dtype=like.dtype)
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"times must be a non-empty 1-D sequence [B] of normalized times, got shape {tuple(t.shape)}")
    return t


def slice_at(g: Gaussians4D, times: TimesLike, cull_threshold: float = CULL_THRESHOLD) -> Gaussians3D:
    """3D Gaussians of ``g`` at each of ``times [B]`` (eq. (4)-(6)); differentiable w.r.t. every parameter.

    Args:
        g: the 4D Gaussians (N).
        times: ``[B]`` normalized times (tensor, list or a float).
        cull_threshold: marginal at or below which a Gaussian is culled (opacity 0); 0 disables culling.
    Returns:
        :class:`Gaussians3D` with means ``[B, N, 3]``, covs ``[B, N, 3, 3]``, opacities ``[B, N]``,
        sh ``[B, N, K, 3]`` and visible ``[B, N]``.
    """
    if not isinstance(g, Gaussians4D):
        raise TypeError(f"slice_at needs a Gaussians4D, got {type(g).__name__}")
    t = as_times(times, g.means)
    cov4 = covariance_4d(g.log_scales, g.rot_l, g.rot_r)  # [N, 4, 4]
    cov_xyz, cov_xyz_t = cov4[:, :3, :3], cov4[:, :3, 3]
    # Sigma_44 >= min scale^2 > 0 mathematically; the floor only guards fp underflow of extreme log-scales.
    var_t = cov4[:, 3, 3].clamp_min(1e-20)
    mu_xyz, mu_t = g.means[:, :3], g.means[:, 3]
    means = conditional_mean(mu_xyz, mu_t, cov_xyz_t, var_t, t)
    cov3 = conditional_covariance(cov_xyz, cov_xyz_t, var_t)
    marginal = temporal_marginal(mu_t, var_t, t)
    visible = cull_mask(marginal, cull_threshold)
    opac = torch.sigmoid(g.opacity_logit)[None] * marginal
    opac = torch.where(visible, opac, torch.zeros_like(opac))
    sh = apply_time_basis(g.sh, t[:, None] - mu_t[None, :], g.time_period)
    covs = cov3[None].expand(t.shape[0], *cov3.shape)
    return Gaussians3D(means, covs, opac, sh, int(g.sh_degree), visible)


def slice_compact(g: Gaussians4D, time: float, cull_threshold: float = CULL_THRESHOLD) -> Tuple[Gaussians3D, Tensor]:
    """One time slice with culled Gaussians removed (batch 1) and the indices ``[N']`` of the kept ones."""
    return slice_at(g, [float(time)], cull_threshold).compact(0)
