"""Pure-torch dense rasterizer of 3D Gaussians: runs on any device and is the check of the gsplat path.

It reproduces gsplat 1.5.3's classic 3DGS pipeline (``rasterization(..., rasterize_mode="classic")``):

* cull means outside ``near_plane < z < far_plane`` (camera space);
* EWA projection with the pinhole Jacobian, whose ``x/z, y/z`` are clamped to 1.3x the field of view as gsplat
  does (keeps Gaussians far outside the image from blowing up), then a 0.3 px^2 low-pass (``eps2d``) on the
  2D covariance;
* drop Gaussians with opacity < 1/255 or whose opacity-aware 3.33-sigma box misses the image;
* per pixel (centre at +0.5), ``alpha = min(0.999, o * exp(-1/2 d^T Sigma2d^-1 d))``, skipped below 1/255,
  front-to-back compositing sorted by camera depth, stopping before transmittance would drop to <= 1e-4;
* ``rgb = sum_i c_i alpha_i T_i + T_final * background``, ``alpha = 1 - T_final``.

It evaluates every Gaussian at every pixel (chunked), so it is meant for small cases: a few thousand Gaussians
at <= 128^2. Differentiable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor

from ..sh import SH_C0, eval_sh, sh_to_rgb

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
    max_elements: int = 1 << 22
    """Reference only: pixels x Gaussians evaluated per chunk (bounds memory)."""


def world_to_camera(means: Tensor, covs: Tensor, w2c: Tensor) -> Tuple[Tensor, Tensor]:
    """Means ``[N, 3]`` and covariances ``[N, 3, 3]`` in camera space: ``R x + t`` and ``R Sigma R^T``."""
    R, t = w2c[:3, :3], w2c[:3, 3]
    return means @ R.T + t, R @ covs @ R.T


def ewa_jacobian(mean_c: Tensor, K: Tensor, width: int, height: int) -> Tensor:
    """Jacobian ``[N, 2, 3]`` of the pinhole projection at camera-space means, clamped like gsplat.

    ``J = [[fx/z, 0, -fx x'/z^2], [0, fy/z, -fy y'/z^2]]`` where ``x' = z clamp(x/z, -lim_neg, lim_pos)``
    with limits ``(W - cx)/fx + 0.3 tan_fovx`` and ``cx/fx + 0.3 tan_fovx`` (likewise for y).
    """
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x, y, z = mean_c.unbind(-1)
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx = z * torch.minimum(lim_xp, torch.maximum(-lim_xn, x / z))
    ty = z * torch.minimum(lim_yp, torch.maximum(-lim_yn, y / z))
    zero = torch.zeros_like(z)
    row0 = torch.stack([fx / z, zero, -fx * tx / (z * z)], -1)
    row1 = torch.stack([zero, fy / z, -fy * ty / (z * z)], -1)
    return torch.stack([row0, row1], -2)


def project_pinhole(mean_c: Tensor, cov_c: Tensor, K: Tensor, width: int, height: int,
                    eps2d: float) -> Tuple[Tensor, Tensor]:
    """Pixel means ``[N, 2]`` and low-passed 2D covariances ``J Sigma_c J^T + eps2d I`` ``[N, 2, 2]``."""
    J = ewa_jacobian(mean_c, K, width, height)
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    cov2d = cov2d + eps2d * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    z = mean_c[:, 2]
    mean2d = torch.stack([K[0, 0] * mean_c[:, 0] / z + K[0, 2], K[1, 1] * mean_c[:, 1] / z + K[1, 2]], -1)
    return mean2d, cov2d


def composite(alpha: Tensor, colors: Tensor, background: Tensor) -> Tuple[Tensor, Tensor]:
    """Front-to-back compositing of depth-sorted ``alpha [P, M]`` with ``colors [M, D]``: ``[P, D]``, ``[P, 1]``.

    Stops (exclusively) at the first Gaussian that would bring the transmittance to <= 1e-4, as gsplat does.
    """
    if alpha.shape[1] == 0:
        return background.expand(alpha.shape[0], -1), alpha.new_zeros(alpha.shape[0], 1)
    with torch.no_grad():
        # Transmittance is non-increasing, so "T after i > 1e-4" selects exactly gsplat's processed prefix.
        include = torch.cumprod(1.0 - alpha, dim=1) > MIN_TRANSMITTANCE
    alpha = alpha * include
    T = torch.cumprod(1.0 - alpha, dim=1)
    T_before = torch.cat([torch.ones_like(T[:, :1]), T[:, :-1]], dim=1)
    rgb = (alpha * T_before) @ colors + T[:, -1:] * background
    return rgb, 1.0 - T[:, -1:]


def rasterize_image(means: Tensor, covs: Tensor, opacities: Tensor, colors: Tensor, w2c: Tensor, K: Tensor,
                    width: int, height: int, background: Tensor,
                    settings: RasterSettings = RasterSettings()) -> Tuple[Tensor, Tensor]:
    """One image from world-space Gaussians: ``rgb [H, W, D]`` and ``alpha [H, W, 1]``.

    Args: ``means [N, 3]``, ``covs [N, 3, 3]``, ``opacities [N]``, ``colors [N, D]`` (already activated),
    ``w2c [4, 4]``, ``K [3, 3]``, ``background [D]``.
    """
    mean_c, cov_c = world_to_camera(means, covs, w2c)
    z = mean_c[:, 2]
    keep = (z >= settings.near_plane) & (z <= settings.far_plane) & (opacities >= ALPHA_THRESHOLD)
    idx = keep.nonzero().squeeze(-1)
    mean_c, cov_c, opac, col = mean_c[idx], cov_c[idx], opacities[idx], colors[idx]
    mean2d, cov2d = project_pinhole(mean_c, cov_c, K, width, height, settings.eps2d)
    det = cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] * cov2d[:, 1, 0]
    with torch.no_grad():
        # gsplat's opacity-aware bounding box: cull Gaussians whose box lies entirely off the image.
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp(max=BOX_SIGMAS)
        rx = torch.ceil(extend * cov2d[:, 0, 0].clamp_min(0).sqrt())
        ry = torch.ceil(extend * cov2d[:, 1, 1].clamp_min(0).sqrt())
        on = ((det > 0) & (mean2d[:, 0] + rx > 0) & (mean2d[:, 0] - rx < width)
              & (mean2d[:, 1] + ry > 0) & (mean2d[:, 1] - ry < height))
        sel = on.nonzero().squeeze(-1)
        sel = sel[torch.argsort(mean_c[sel, 2], stable=True)]  # front to back
    mean2d, cov2d, det, opac, col = mean2d[sel], cov2d[sel], det[sel], opac[sel], col[sel]
    # conic = inverse of the 2x2 covariance
    ca, cb, cc = cov2d[:, 1, 1] / det, -cov2d[:, 0, 1] / det, cov2d[:, 0, 0] / det
    ys, xs = torch.meshgrid(torch.arange(height, device=means.device, dtype=means.dtype) + 0.5,
                            torch.arange(width, device=means.device, dtype=means.dtype) + 0.5, indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)  # [P, 2]
    m = max(int(sel.numel()), 1)
    chunk = max(1, settings.max_elements // m)
    rgbs, alphas = [], []
    for start in range(0, pix.shape[0], chunk):
        d = mean2d[None] - pix[start:start + chunk, None]  # [P, M, 2]
        dx, dy = d[..., 0], d[..., 1]
        sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
        alpha = (opac * torch.exp(-sigma)).clamp(max=MAX_ALPHA)
        alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
        rgb, acc = composite(alpha, col, background)
        rgbs.append(rgb)
        alphas.append(acc)
    return torch.cat(rgbs).reshape(height, width, -1), torch.cat(alphas).reshape(height, width, 1)


def view_colors(means: Tensor, sh: Tensor, sh_degree: int, w2c: Tensor) -> Tensor:
    """Activated colours ``[N, 3]`` seen from camera ``w2c`` (gsplat's convention: ``max(SH(dir) + 0.5, 0)``)."""
    if sh_degree == 0:
        return sh_to_rgb(SH_C0 * sh[:, 0])
    campos = torch.linalg.inv(w2c)[:3, 3]
    return sh_to_rgb(eval_sh(sh_degree, sh, means - campos))


def render_reference(means: Tensor, covs: Tensor, opacities: Tensor, sh: Tensor, sh_degree: int,
                     w2c: Tensor, K: Tensor, width: int, height: int, backgrounds: Tensor,
                     settings: RasterSettings = RasterSettings()) -> Tuple[Tensor, Tensor]:
    """Batched reference render: ``rgb [B, C, H, W, 3]``, ``alpha [B, C, H, W, 1]``.

    Args: ``means [B, N, 3]``, ``covs [B, N, 3, 3]``, ``opacities [B, N]``, ``sh [B, N, K, 3]``,
    ``w2c [B, C, 4, 4]``, ``K [B, C, 3, 3]``, ``backgrounds [B, C, 3]``.
    """
    B, C = w2c.shape[:2]
    rgb_rows, alpha_rows = [], []
    for b in range(B):
        rgb_row, alpha_row = [], []
        for c in range(C):
            col = view_colors(means[b], sh[b], sh_degree, w2c[b, c])
            rgb, acc = rasterize_image(means[b], covs[b], opacities[b], col, w2c[b, c], K[b, c],
                                       width, height, backgrounds[b, c], settings)
            rgb_row.append(rgb)
            alpha_row.append(acc)
        rgb_rows.append(torch.stack(rgb_row))
        alpha_rows.append(torch.stack(alpha_row))
    return torch.stack(rgb_rows), torch.stack(alpha_rows)
