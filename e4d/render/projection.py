"""EWA projection of 3D Gaussians to the image plane, shared by the reference and the Triton rasterizers.

It reproduces gsplat 1.5.3's classic 3DGS projection (``fully_fused_projection`` without packing):

* cull means outside ``near_plane < z < far_plane`` (camera space) and opacities below 1/255;
* EWA projection with the pinhole Jacobian, whose ``x/z, y/z`` are clamped to 1.3x the field of view as gsplat
  does (keeps Gaussians far outside the image from blowing up), then a 0.3 px^2 low-pass (``eps2d``) on the
  2D covariance;
* drop Gaussians with a non-positive 2D determinant or whose opacity-aware (<= 3.33 sigma) box misses the image.

Every function broadcasts over leading dimensions (``K [..., 3, 3]`` against means ``[..., 3]``), so one call can
project the Gaussians of many images. Differentiable except for the culling masks and box radii.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4
BOX_SIGMAS = 3.33


@dataclass(frozen=True)
class RasterSettings:
    """Rasterizer settings; defaults are gsplat 1.5.3's ``rasterization`` defaults."""

    near_plane: float = 0.01
    """Gaussians with camera depth below this are dropped."""
    far_plane: float = 1e10
    """Gaussians with camera depth above this are dropped."""
    eps2d: float = 0.3
    """Low-pass filter added to the diagonal of every projected 2D covariance, in px^2."""
    max_elements: int = 0
    """Reference only: its memory budget, in elements (0: 2^23 on a GPU, where fewer, larger chunks mean fewer
    kernel launches, and 2^17 on a CPU, where chunks that stay in the cache run twice as fast). Pixels x Gaussians evaluated at once (a batch of tiles meets its Gaussians in
    depth-sorted chunks of at most this many), and (image, Gaussian) pairs projected at once (at least one
    image). The peak is about 20 x this x the dtype's bytes (670 MB in fp32 for 2^23) plus the tile lists and
    per-Gaussian tensors kept for the backward, whatever the number of Gaussians."""
    tile_size: int = 16
    """Reference only: side of the square pixel tiles; a tile composites only the Gaussians whose box meets it."""


def element_budget(settings: RasterSettings, device: torch.device) -> int:
    """The reference renderer's ``max_elements`` on ``device`` (its default 0 means a per-device size)."""
    if settings.max_elements > 0:
        return int(settings.max_elements)
    return 1 << (17 if torch.device(device).type == "cpu" else 23)


def world_to_camera(means: Tensor, covs: Tensor, w2c: Tensor) -> Tuple[Tensor, Tensor]:
    """Means ``[..., 3]`` and covariances ``[..., 3, 3]`` in camera space (``R x + t``, ``R Sigma R^T``) for
    ``w2c [..., 4, 4]`` broadcast against them."""
    R, t = w2c[..., :3, :3], w2c[..., :3, 3]
    return (R @ means[..., None])[..., 0] + t, R @ covs @ R.transpose(-1, -2)


def ewa_jacobian(mean_c: Tensor, K: Tensor, width: int, height: int) -> Tensor:
    """Jacobian ``[..., 2, 3]`` of the pinhole projection at camera-space means ``[..., 3]``, clamped like gsplat.

    ``J = [[fx/z, 0, -fx x'/z^2], [0, fy/z, -fy y'/z^2]]`` where ``x' = z clamp(x/z, -lim_neg, lim_pos)``
    with limits ``(W - cx)/fx + 0.3 tan_fovx`` and ``cx/fx + 0.3 tan_fovx`` (likewise for y).
    """
    fx, fy, cx, cy = K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]
    x, y, z = mean_c.unbind(-1)
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx = z * torch.minimum(lim_xp, torch.maximum(-lim_xn, x / z))
    ty = z * torch.minimum(lim_yp, torch.maximum(-lim_yn, y / z))
    zero = torch.zeros_like(z)
    row0 = torch.stack([(fx / z).expand_as(z), zero, -fx * tx / (z * z)], -1)
    row1 = torch.stack([zero, (fy / z).expand_as(z), -fy * ty / (z * z)], -1)
    return torch.stack([row0, row1], -2)


def project_pinhole(mean_c: Tensor, cov_c: Tensor, K: Tensor, width: int, height: int,
                    eps2d: float) -> Tuple[Tensor, Tensor]:
    """Pixel means ``[..., 2]`` and low-passed 2D covariances ``J Sigma_c J^T + eps2d I`` ``[..., 2, 2]``."""
    J = ewa_jacobian(mean_c, K, width, height)
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    cov2d = cov2d + eps2d * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    z = mean_c[..., 2]
    mean2d = torch.stack([K[..., 0, 0] * mean_c[..., 0] / z + K[..., 0, 2],
                          K[..., 1, 1] * mean_c[..., 1] / z + K[..., 1, 2]], -1)
    return mean2d, cov2d


def depth_keep(z: Tensor, opacities: Tensor, settings: RasterSettings) -> Tensor:
    """Gaussians kept before projection: depth within the planes and opacity >= 1/255 (bool, ``z``'s shape)."""
    return (z >= settings.near_plane) & (z <= settings.far_plane) & (opacities >= ALPHA_THRESHOLD)


def conic_and_box(mean2d: Tensor, cov2d: Tensor, opacities: Tensor, width: int,
                  height: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Conics ``[..., 3]`` (a, b, c of the inverse 2D covariance ``[[a, b], [b, c]]``), box radii ``[..., 2]``
    (pixels, no grad) and the on-image mask ``[...]`` (positive determinant and box overlapping the image).

    The radius is gsplat's opacity-aware extent ``ceil(min(3.33, sqrt(2 ln(255 o))) sqrt(Sigma_xx))`` per axis:
    beyond it ``alpha < 1/255``. The conic of a culled Gaussian is finite (its determinant is replaced by 1), so
    gradients through masked entries stay 0 rather than NaN.
    """
    det = cov2d[..., 0, 0] * cov2d[..., 1, 1] - cov2d[..., 0, 1] * cov2d[..., 1, 0]
    with torch.no_grad():
        extend = torch.sqrt(2.0 * torch.log(opacities.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp(max=BOX_SIGMAS)
        rx = torch.ceil(extend * cov2d[..., 0, 0].clamp_min(0).sqrt())
        ry = torch.ceil(extend * cov2d[..., 1, 1].clamp_min(0).sqrt())
        on = ((det > 0) & (mean2d[..., 0] + rx > 0) & (mean2d[..., 0] - rx < width)
              & (mean2d[..., 1] + ry > 0) & (mean2d[..., 1] - ry < height))
    det = torch.where(det > 0, det, torch.ones_like(det))
    conic = torch.stack([cov2d[..., 1, 1] / det, -cov2d[..., 0, 1] / det, cov2d[..., 0, 0] / det], -1)
    return conic, torch.stack([rx, ry], -1), on


__all__ = ["RasterSettings", "element_budget", "world_to_camera", "ewa_jacobian", "project_pinhole", "depth_keep",
           "conic_and_box", "ALPHA_THRESHOLD", "MAX_ALPHA", "MIN_TRANSMITTANCE", "BOX_SIGMAS"]
