"""A tiny analytic 4D scene for the mesh tests: a shell of Gaussians on a sphere translating along x.

Every Gaussian is rotated in the x-t plane (the quaternion pair of :mod:`e4d.rotation4d` that gives a pure x-t
rotation), so its conditional mean moves linearly in time (eq. 5) with the same velocity: the sphere translates
rigidly. Colour goes from red at the top (+z) to blue at the bottom.
"""
from __future__ import annotations

import math

import torch

from e4d.gaussians4d import Gaussians4D
from e4d.sh import rgb_to_sh0

RADIUS = 0.3


def xt_rotation_angle(velocity: float, sx: float, st: float) -> float:
    """Angle of the x-t rotation giving conditional-mean velocity ``velocity`` (bisection of
    ``cos s (st^2 - sx^2) / (s^2 sx^2 + c^2 st^2)``, monotone on [0, pi/2))."""
    lo, hi = 0.0, 1.5
    for _ in range(60):
        th = 0.5 * (lo + hi)
        c, s = math.cos(th), math.sin(th)
        vel = c * s * (st ** 2 - sx ** 2) / (s * s * sx ** 2 + c * c * st ** 2)
        lo, hi = (th, hi) if vel < velocity else (lo, th)
    return 0.5 * (lo + hi)


def moving_sphere(n: int = 600, radius: float = RADIUS, velocity: float = 0.2, sx: float = 0.035,
                  st: float = 2.0) -> Gaussians4D:
    """``n`` Gaussians (std ``sx``) on a Fibonacci sphere of ``radius``, centred at the origin at t = 0.5 and
    moving along x; the speed in the world is ``velocity`` (direction set by the rotation's orientation)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = i * math.pi * (3 - math.sqrt(5))
    p = torch.stack([torch.sqrt(1 - z * z) * torch.cos(phi), torch.sqrt(1 - z * z) * torch.sin(phi), z], -1) * radius
    a = 0.5 * xt_rotation_angle(velocity, sx, st)
    q = torch.tensor([math.cos(a), 0.0, 0.0, math.sin(a)], dtype=torch.float64).expand(n, 4).clone()
    means = torch.cat([p, torch.full((n, 1), 0.5, dtype=torch.float64)], 1)
    log_scales = torch.tensor([math.log(sx)] * 3 + [math.log(st)], dtype=torch.float64).expand(n, 4).clone()
    opacity_logit = torch.full((n,), math.log(0.95 / 0.05), dtype=torch.float64)
    top = p[:, 2] / radius
    rgb = torch.stack([0.5 + 0.4 * top, torch.full_like(top, 0.3), 0.5 - 0.4 * top], -1)
    return Gaussians4D(means, log_scales, q, q.clone(), opacity_logit, rgb_to_sh0(rgb)[:, None, None]).to(dtype=torch.float32)


def sphere_centre_x(t: float, shift: float = 0.2) -> float:
    """x of :func:`fading_sphere`'s centre at time ``t``: ``shift`` over the clip, non-linear (eases in and out)."""
    return shift * (0.5 - 0.5 * math.cos(math.pi * t)) - 0.5 * shift


def fading_sphere(generations: int = 9, n: int = 400, radius: float = RADIUS, sx: float = 0.035,
                  st: float = 0.06) -> Gaussians4D:
    """A sphere that moves along x (:func:`sphere_centre_x`) although no Gaussian moves: ``generations`` shells of
    ``n`` static Gaussians, shell ``k`` at the sphere's place at time ``k / (generations - 1)`` and alive only
    around it (temporal std ``st``), so the motion is carried by Gaussians fading in and out, as a fit often does.
    Velocities are zero everywhere: only the per-time surfaces say where the sphere went."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = i * math.pi * (3 - math.sqrt(5))
    p = torch.stack([torch.sqrt(1 - z * z) * torch.cos(phi), torch.sqrt(1 - z * z) * torch.sin(phi), z], -1) * radius
    means = []
    for k in range(generations):
        t = k / (generations - 1)
        c = torch.tensor([sphere_centre_x(t), 0.0, 0.0], dtype=torch.float64)
        means.append(torch.cat([p + c, torch.full((n, 1), t, dtype=torch.float64)], 1))
    means = torch.cat(means)
    m = means.shape[0]
    q = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64).expand(m, 4).clone()  # no x-t coupling: static
    log_scales = torch.tensor([math.log(sx)] * 3 + [math.log(st)], dtype=torch.float64).expand(m, 4).clone()
    opacity_logit = torch.full((m,), math.log(0.95 / 0.05), dtype=torch.float64)
    top = (p[:, 2] / radius).repeat(generations)
    rgb = torch.stack([0.5 + 0.4 * top, torch.full_like(top, 0.3), 0.5 - 0.4 * top], -1)
    return Gaussians4D(means, log_scales, q, q.clone(), opacity_logit,
                       rgb_to_sh0(rgb)[:, None, None]).to(dtype=torch.float32)
