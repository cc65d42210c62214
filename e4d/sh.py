"""Colour bases: real spherical harmonics (view direction) and the temporal cosine basis (4DGS's 4D
spherindrical harmonics, Yang et al. 2024 §3.1).

Conventions follow 3DGS/gsplat so our colours match gsplat's ``sh_degree`` path exactly:
``rgb = max(SH(dir) + 0.5, 0)``, with ``dir = mean - camera_centre`` normalized, basis order and signs as gsplat
(and the INRIA 3DGS code): index 0 is the constant band, 1..3 are ``(-y, z, -x)``, and so on up to degree 3.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)
MAX_SH_DEGREE = 3


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients up to ``degree``: ``(degree + 1) ** 2``."""
    if not 0 <= int(degree) <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
    return (int(degree) + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis values ``[..., (degree+1)**2]`` at directions ``[..., 3]`` (normalized here)."""
    k = num_sh_bases(degree)
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2 * zz - xx - yy),
                SH_C2[3] * x * z, SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * x * y * z, SH_C3[2] * y * (4 * zz - xx - yy),
                SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
    basis = torch.stack(out, dim=-1)
    assert basis.shape[-1] == k
    return basis


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Raw SH value ``[..., 3]`` (before the +0.5 offset) of coefficients ``[..., K, 3]`` at ``dirs [..., 3]``.

    Only the first ``(degree+1)**2`` coefficients are used (``K`` may be larger), as in gsplat.
    """
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k or coeffs.shape[-1] != 3:
        raise ValueError(f"eval_sh: coefficients must be [..., K>={k}, 3] for degree {degree}, got {tuple(coeffs.shape)}")
    basis = sh_basis(degree, dirs)  # [..., k]
    return (basis[..., None] * coeffs[..., :k, :]).sum(dim=-2)


def rotate_sh(sh: Tensor, degree: int, rot: Tensor) -> Tensor:
    """SH coefficients ``[N, K, 3]`` of colours seen along directions ``d``, re-expressed for a rotated world (the
    colour seen along ``d`` before is seen along ``rot @ d`` after; ``rot``: ``[3, 3]`` proper rotation). Band by
    band, ``sh'_l = pinv(Y_l(D R^T)) Y_l(D) sh_l`` on fixed random directions ``D`` (exact: a rotation maps each
    band's span onto itself); the constant band is unchanged."""
    if sh.ndim != 3 or sh.shape[1] < num_sh_bases(degree) or sh.shape[2] != 3:
        raise ValueError(f"rotate_sh: sh must be [N, K>={num_sh_bases(degree)}, 3] for degree {degree}, "
                         f"got {tuple(sh.shape)}")
    if degree == 0:
        return sh
    gen = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(64, 3, generator=gen, dtype=torch.float64), dim=-1)
    r = rot.to(torch.float64)
    before, after = sh_basis(degree, dirs), sh_basis(degree, dirs @ r.T)  # [64, K]
    out = sh.clone()
    for band in range(1, degree + 1):
        sl = slice(band * band, (band + 1) * (band + 1))
        m = torch.linalg.pinv(after[:, sl]) @ before[:, sl]  # [2l+1, 2l+1]
        out[:, sl] = torch.einsum("ij,njc->nic", m.to(sh.dtype), sh[:, sl])
    return out


def sh_to_rgb(values: Tensor) -> Tensor:
    """The 3DGS/gsplat colour activation: ``max(values + 0.5, 0)`` (no upper clamp, as in gsplat)."""
    return torch.clamp_min(values + 0.5, 0.0)


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """DC coefficient giving colour ``rgb`` (inverse of ``sh_to_rgb(SH_C0 * c)``)."""
    return (rgb - 0.5) / SH_C0


def temporal_basis(time_degree: int, dt: Tensor, period: float) -> Tensor:
    """Temporal basis ``[..., 1 + time_degree]``: ``cos(2 pi n dt / period)`` for ``n = 0..time_degree``.

    ``dt`` is the time offset from the Gaussian's temporal centre, ``t - mu_t`` (the official 4DGS code uses this
    offset; being a cosine, its sign does not matter). ``n = 0`` gives the constant 1, so with ``time_degree = 0``
    the colour is static.
    """
    if int(time_degree) < 0:
        raise ValueError(f"time_degree must be >= 0, got {time_degree}")
    if not period > 0:
        raise ValueError(f"time_period must be > 0, got {period}")
    n = torch.arange(int(time_degree) + 1, device=dt.device, dtype=dt.dtype)
    return torch.cos((2.0 * math.pi / period) * dt[..., None] * n)


def apply_time_basis(sh: Tensor, dt: Tensor, period: float) -> Tensor:
    """Collapse 4D colour coefficients ``sh [N, 1+Td, K, 3]`` at offsets ``dt [B, N]`` to ``[B, N, K, 3]``.

    With ``Td = 0`` this returns a broadcast view of ``sh[:, 0]`` (no copy).
    """
    if sh.ndim != 4 or sh.shape[-1] != 3:
        raise ValueError(f"colour coefficients must be [N, 1+time_degree, K, 3], got {tuple(sh.shape)}")
    n, d = sh.shape[0], sh.shape[1]
    if dt.ndim != 2 or dt.shape[1] != n:
        raise ValueError(f"dt must be [B, N] with N={n}, got {tuple(dt.shape)}")
    if d == 1:
        return sh[:, 0].expand(dt.shape[0], *sh[:, 0].shape)
    basis = temporal_basis(d - 1, dt, period)  # [B, N, D]
    return torch.einsum("bnd,ndkc->bnkc", basis, sh)
