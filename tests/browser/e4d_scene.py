"""Synthetic 4D Gaussian scenes for the player tests and the frame-time benchmark.

:func:`moving_blob` is an ellipsoid of coloured Gaussians sliding along +Y over the clip. Motion comes from two
sources at once, so both halves of the GPU slicing are exercised: each Gaussian's 4D covariance is rotated in the
(y, t) plane (its conditional mean moves, eq. 5), and Gaussians with later temporal centres sit further along +Y
(the temporal marginal hands over from one to the next, eq. 6). The blob centre at time t is ``(0, v (t - 0.5), 0)``.
"""
from __future__ import annotations

import math

import torch

from e4d.gaussians4d import Gaussians4D
from e4d.sh import rgb_to_sh0


def yt_rotation_quaternions(velocity: float, n: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Quaternion pair ``(q_l, q_r)`` ``[n, 4]`` of a rotation in the (y, t) plane whose conditional-mean velocity
    along +y is about ``velocity`` for Gaussians much longer in t than in y.

    ``M_l(cos p, 0, sin p, 0) @ M_r(cos p, 0, -sin p, 0)`` is a rotation by ``2p`` in the (y, t) plane
    (:mod:`e4d.rotation4d`), giving ``Sigma_yt / Sigma_tt -> tan(2p)``.
    """
    p = 0.5 * math.atan(velocity)
    ql = torch.tensor([math.cos(p), 0.0, math.sin(p), 0.0], dtype=dtype).expand(n, 4).clone()
    qr = torch.tensor([math.cos(p), 0.0, -math.sin(p), 0.0], dtype=dtype).expand(n, 4).clone()
    return ql, qr


def moving_blob(n: int = 4000, velocity: float = 0.5, sigma_t: float = 0.1, scale: float = 0.02,
                opacity: float = 0.8, seed: int = 0, static_time: bool = False) -> Gaussians4D:
    """An ellipsoid (semi-axes 0.12, 0.12, 0.25) of ``n`` Gaussians moving along +Y at ``velocity`` per clip.

    ``static_time=True`` gives every Gaussian a huge temporal scale (alive at every t, no motion): the
    benchmark's "same count, nothing culled" case.
    """
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    d = torch.randn(n, 3, generator=g, dtype=f64)
    d = d / d.norm(dim=-1, keepdim=True)
    base = d * torch.rand(n, 1, generator=g, dtype=f64) ** (1 / 3) * torch.tensor([0.12, 0.12, 0.25], dtype=f64)
    mu_t = torch.rand(n, generator=g, dtype=f64)
    if static_time:
        means = torch.cat([base, mu_t[:, None]], 1)
        log_scales = torch.tensor([math.log(scale)] * 3 + [math.log(100.0)], dtype=f64).expand(n, 4).clone()
        ql = torch.tensor([1.0, 0, 0, 0], dtype=f64).expand(n, 4).clone()
        qr = ql.clone()
    else:
        shift = torch.zeros(n, 3, dtype=f64)
        shift[:, 1] = velocity * (mu_t - 0.5)
        means = torch.cat([base + shift, mu_t[:, None]], 1)
        log_scales = torch.tensor([math.log(scale)] * 3 + [math.log(sigma_t)], dtype=f64).expand(n, 4).clone()
        ql, qr = yt_rotation_quaternions(velocity, n)
    # Saturated colours by position (never near the white background): red-ish top, blue-ish bottom.
    z = (base[:, 2] / 0.25).clamp(-1, 1)
    rgb = torch.stack([0.55 + 0.4 * z, 0.25 + 0.2 * (base[:, 0] / 0.12), 0.55 - 0.4 * z], 1).clamp(0.05, 0.95)
    sh = rgb_to_sh0(rgb)[:, None, None, :]
    logit = torch.full((n,), math.log(opacity / (1 - opacity)), dtype=f64)
    return Gaussians4D(means.float(), log_scales.float(), ql.float(), qr.float(), logit.float(), sh.float())


def blob_centre(t: float, velocity: float = 0.5) -> tuple[float, float, float]:
    """World position of :func:`moving_blob`'s centre at time ``t``."""
    return (0.0, velocity * (t - 0.5), 0.0)
