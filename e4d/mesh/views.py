"""Cameras around the object and the depth / colour renders the surface is fused from.

Depth needs no backend change: every Gaussian gets, as its colour, its own camera-space depth (a constant per
Gaussian and camera, so one time slice is rendered once per camera), over a black background. The rasterizer then
returns ``sum_i w_i z_i`` (premultiplied depth) and ``alpha = sum_i w_i``; ``premultiplied / alpha`` is the
expected depth along the pixel's ray. The depth goes in as the DC SH coefficient, inverting the colour activation
``rgb = max(SH_C0 * dc + 0.5, 0)`` of :mod:`e4d.sh` (depths are positive, so the clamp never acts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..cameras import SYNCDREAMER_FOCAL_256, Cameras, orbit_cameras
from ..render import render_sliced
from ..sh import SH_C0
from ..slicing import Gaussians3D

MAX_ELEVATION = 80.0
"""Fusion cameras stay below this elevation (degrees): the +Z-up look-at has no roll at the poles."""
VIEWS_PER_CALL = 16
"""Cameras rendered per rasterizer call (bounds the memory of the per-camera colour copies)."""


@dataclass
class Bounds:
    """The object's region: a cube ``[lo, lo + size]^3`` and the sphere (centre, radius) the cameras frame."""

    lo: Tensor
    """``[3]`` lower corner of the fusion cube."""
    size: float
    """Side length of the cube."""
    center: Tensor
    """``[3]`` centre of the object (of the cube)."""
    radius: float
    """Radius of a sphere around ``center`` holding the object."""


def object_bounds(slices: Gaussians3D, min_opacity: float = 0.05, margin: float = 0.05) -> Bounds:
    """Box of the Gaussians of every slice with opacity above ``min_opacity`` (means +- 2 standard deviations),
    made a cube and grown by ``margin`` of its side on every face."""
    keep = slices.opacities > min_opacity  # [B, N]
    if not bool(keep.any()):
        raise ValueError(f"no Gaussian has opacity above {min_opacity} at the requested times; nothing to mesh "
                         "(is the model fitted, and are the times inside its clip [0, 1]?)")
    std = torch.diagonal(slices.covs, dim1=-2, dim2=-1).clamp_min(0).sqrt()  # [B, N, 3]
    lo = torch.where(keep[..., None], slices.means - 2 * std, torch.full_like(std, math.inf)).amin(dim=(0, 1))
    hi = torch.where(keep[..., None], slices.means + 2 * std, torch.full_like(std, -math.inf)).amax(dim=(0, 1))
    center = 0.5 * (lo + hi)
    side = float((hi - lo).max()) * (1.0 + 2.0 * margin)
    reach = (slices.means - center).norm(dim=-1) + 2 * std.amax(dim=-1)  # [B, N]: a sphere, tighter than the box's
    radius = float(torch.where(keep, reach, torch.zeros_like(reach)).max()) * (1.0 + margin)
    return Bounds(center - 0.5 * side, side, center, radius)


def sphere_cameras(n: int, bounds: Bounds, size: int) -> Cameras:
    """``n`` cameras evenly spread over the sphere (a Fibonacci lattice, elevations clamped to +-80 deg), looking at
    the object's centre from a distance at which its bounding sphere fills the view (SyncDreamer's 49 deg field)."""
    focal = SYNCDREAMER_FOCAL_256 * size / 256.0
    half_fov = math.atan(0.5 * size / focal)
    dist = bounds.radius / math.sin(half_fov) * 1.02
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    el = torch.rad2deg(torch.asin(z)).clamp(-MAX_ELEVATION, MAX_ELEVATION)
    az = torch.remainder(torch.rad2deg(i * math.pi * (3.0 - math.sqrt(5.0))), 360.0)
    cams = orbit_cameras(az, el, dist, size, focal)
    shift = torch.eye(4).expand(n, 4, 4).clone()  # look at the object's centre instead of the origin
    shift[:, :3, 3] = -bounds.center.detach().float().cpu()
    return Cameras(cams.w2c @ shift, cams.K, size, size, cams.azimuth, cams.elevation, cams.radius)


def _expand(t: Tensor, v: int) -> Tensor:
    return t.expand(v, *t.shape[1:])


def render_depth_colour(g3: Gaussians3D, cams: Cameras, backend: str = "auto",
                        colour: bool = True) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Expected depth, opacity and straight colour of one time slice (``g3`` with batch 1) from every camera.

    Returns ``depth [V, H, W]`` (camera z; 0 where nothing was hit), ``alpha [V, H, W]`` and ``rgb [V, H, W, 3]``
    (colour divided by opacity, i.e. not mixed with any background; clamped to [0, 1]; None unless ``colour``).
    """
    if g3.batch != 1:
        raise ValueError(f"render_depth_colour needs one time slice (batch 1), got batch {g3.batch}")
    cams = cams.to(device=g3.means.device, dtype=g3.means.dtype)
    depth, alpha, rgb = [], [], []
    for s in range(0, len(cams), VIEWS_PER_CALL):
        c = cams[list(range(s, min(s + VIEWS_PER_CALL, len(cams))))]
        v = len(c)
        R, t = c.w2c[:, :3, :3], c.w2c[:, :3, 3]
        z = (g3.means[0] @ R[:, 2].T + t[:, 2]).T  # [v, N] camera depth of every mean
        dc = torch.zeros(v, g3.num, 1, 3, dtype=z.dtype, device=z.device)
        dc[..., 0, 0] = (z - 0.5) / SH_C0  # inverts rgb = SH_C0 * dc + 0.5
        dc[..., 0, 1:] = -0.5 / SH_C0  # other channels render 0
        depth_g = Gaussians3D(_expand(g3.means, v), _expand(g3.covs, v), _expand(g3.opacities, v), dc, 0, None)
        w2c, K = c.w2c[:, None], c.K[:, None]
        out = render_sliced(depth_g, w2c, K, c.width, c.height, background=0.0, backend=backend)
        a = out.alpha[:, 0, ..., 0]
        depth.append(torch.where(a > 1e-4, out.rgb[:, 0, ..., 0] / a.clamp_min(1e-4), torch.zeros_like(a)))
        alpha.append(a)
        if not colour:
            continue
        colour_g = Gaussians3D(_expand(g3.means, v), _expand(g3.covs, v), _expand(g3.opacities, v),
                               _expand(g3.sh, v), g3.sh_degree, None)
        col = render_sliced(colour_g, w2c, K, c.width, c.height, background=0.0, backend=backend).rgb[:, 0]
        rgb.append((col / a[..., None].clamp_min(1e-4)).clamp(0.0, 1.0))
    return torch.cat(depth), torch.cat(alpha), (torch.cat(rgb) if colour else None)


__all__ = ["Bounds", "object_bounds", "sphere_cameras", "render_depth_colour", "MAX_ELEVATION", "VIEWS_PER_CALL"]
