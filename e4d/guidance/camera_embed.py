"""Zero-1-to-3 camera conditioning: relative spherical coordinates in our +Z-up convention.

Zero123 (Liu et al. 2023) was trained on Objaverse renders in Blender's +Z-up world, with the polar angle measured
from +Z and the azimuth ``atan2(y, x)`` (counter-clockwise seen from +Z), i.e. the same axes as ``e4d.cameras``.
Our elevation is measured up from the XY plane, so ``polar = 90 - elevation`` and therefore
``Δpolar = -Δelevation``. The azimuth grows in the same direction in both, so ``Δazimuth`` is used as is.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..cameras import Cameras

Variant = Literal["zero123-xl", "stable-zero123"]
VARIANTS: tuple[str, ...] = ("zero123-xl", "stable-zero123")


def orbit_coordinates(cams: Cameras) -> tuple[Tensor, Tensor, Tensor]:
    """Azimuth, elevation (degrees) and radius ``[V]`` of cameras looking at the origin.

    Uses the stored orbit coordinates when the Cameras carry them, otherwise derives them from the camera centres
    (any camera in the view matrix folder layout qualifies).
    """
    if cams.azimuth is not None and cams.elevation is not None and cams.radius is not None:
        return cams.azimuth.float(), cams.elevation.float(), cams.radius.float()
    c = cams.centers().float()  # [V, 3]
    r = c.norm(dim=-1).clamp_min(1e-8)
    el = torch.rad2deg(torch.asin((c[:, 2] / r).clamp(-1.0, 1.0)))
    az = torch.rad2deg(torch.atan2(c[:, 1], c[:, 0]))
    return az, el, r


def zero123_camera_embedding(d_elevation_deg: Tensor, d_azimuth_deg: Tensor, d_radius: Tensor,
                             ref_elevation_deg: Tensor, variant: str) -> Tensor:
    """The 4-vector Zero123 appends to the CLIP image embedding, ``[B, 1, 4]``.

    * zero123 / zero123-xl: ``[Δpolar, sin Δaz, cos Δaz, Δradius]`` (radians; Δpolar = -Δelevation).
    * stable-zero123: ``[Δpolar, sin Δaz, cos Δaz, polar of the reference view]`` with the reference polar
      ``90° - ref_elevation`` in radians (Stability's release replaced Δradius by the absolute reference polar;
      ComfyUI's StableZero123_Conditioning passes 90° for a reference at elevation 0).

    Args:
        d_elevation_deg, d_azimuth_deg: ``[B]`` target minus reference, degrees (elevation up-positive).
        d_radius: ``[B]`` target minus reference radius (world units; 0 for same-radius views).
        ref_elevation_deg: ``[B]`` absolute elevation of the reference (input) camera, degrees.
        variant: ``"zero123-xl"`` or ``"stable-zero123"``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"zero123 variant must be one of {VARIANTS}, got {variant!r}")
    shapes = {t.shape for t in (d_elevation_deg, d_azimuth_deg, d_radius, ref_elevation_deg)}
    if len(shapes) != 1 or d_elevation_deg.ndim != 1:
        raise ValueError(f"camera embedding inputs must all be [B], got shapes {sorted(map(tuple, shapes))}")
    d_polar = torch.deg2rad(-d_elevation_deg.float())
    d_az = torch.deg2rad(d_azimuth_deg.float())
    if variant == "stable-zero123":
        last = torch.deg2rad(90.0 - ref_elevation_deg.float())
    else:
        last = d_radius.float()
    return torch.stack([d_polar, torch.sin(d_az), torch.cos(d_az), last], dim=-1)[:, None, :]


def sample_relative_views(batch: int, elevation_range: tuple[float, float], azimuth_range: tuple[float, float],
                          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Random ``(Δelevation, Δazimuth)`` in degrees, ``[B]`` each, uniform in ``[lo, hi)`` (CPU float32).

    Drawn with ``generator`` on its own device so that a seeded fit is reproducible on any device.
    """
    dev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(2, batch, generator=generator, device=dev).float().cpu()
    d_el = elevation_range[0] + (elevation_range[1] - elevation_range[0]) * u[0]
    d_az = azimuth_range[0] + (azimuth_range[1] - azimuth_range[0]) * u[1]
    return d_el, d_az


def wrap_degrees(x: Tensor) -> Tensor:
    """Angles wrapped into ``[-180, 180)`` degrees."""
    return torch.remainder(x + 180.0, 360.0) - 180.0


__all__ = ["orbit_coordinates", "zero123_camera_embedding", "sample_relative_views", "wrap_degrees", "VARIANTS"]
