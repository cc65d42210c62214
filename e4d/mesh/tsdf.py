"""Truncated signed distance fusion of rendered depth maps on a voxel grid (batched torch, any device).

Signs: positive outside the object, negative inside; values are in units of the truncation band, in [-1, 1].
Each camera updates a voxel that projects into its image:

* pixel opacity below the threshold: the ray misses the object, so the voxel is outside (+1, space carving);
* otherwise the voxel takes ``clamp((depth - z) / band, -1, 1)`` unless it lies more than a band behind the
  observed surface (occluded: no update).

The result is the weighted mean; voxels no camera updated are occluded from every side, hence inside (-1), and
voxels outside the sphere the cameras frame are outside (+1). A
light ``[1, 2, 1]`` blur then removes single-voxel noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cameras import Cameras

VOXEL_VIEWS_PER_CHUNK = 1 << 25
"""Voxel x camera pairs evaluated at once (bounds the temporary memory of a fusion: about 40 bytes each)."""


@dataclass
class Grid:
    """A regular grid of ``res^3`` voxel centres ``lo + (i + 0.5) * voxel``."""

    lo: Tensor
    """``[3]`` lower corner."""
    voxel: float
    """Voxel edge length."""
    res: int
    """Voxels per side."""

    def centres(self) -> Tensor:
        """``[res^3, 3]`` voxel centres, x slowest (the layout of :class:`TSDF` values ``[x, y, z]``)."""
        ax = (torch.arange(self.res, device=self.lo.device, dtype=self.lo.dtype) + 0.5) * self.voxel
        gx, gy, gz = torch.meshgrid(ax, ax, ax, indexing="ij")
        return torch.stack([gx, gy, gz], -1).reshape(-1, 3) + self.lo

    def to_world(self, idx: Tensor) -> Tensor:
        """Continuous voxel indices ``[..., 3]`` (as marching cubes returns them) to world points."""
        return self.lo + (idx + 0.5) * self.voxel


@dataclass
class TSDF:
    """Fused distances ``values [res, res, res]`` (x, y, z index order) on ``grid``; ``band`` is the truncation
    distance in world units."""

    values: Tensor
    grid: Grid
    band: float

    def sample(self, points: Tensor) -> Tensor:
        """Trilinear TSDF ``[P]`` at world ``points [P, 3]`` (in world units; +band outside the grid)."""
        g = self.grid
        u = (points - g.lo) / (g.voxel * g.res) * 2.0 - 1.0  # align_corners=False: -1 is the grid's outer face
        vol = self.values[None, None].permute(0, 1, 4, 3, 2)  # grid_sample wants [D=z, H=y, W=x]
        out = F.grid_sample(vol, u[None, None, None].to(vol.dtype), mode="bilinear", padding_mode="border",
                            align_corners=False)
        return out.reshape(-1) * self.band

    def gradient(self, points: Tensor) -> Tensor:
        """Central-difference gradient ``[P, 3]`` of :meth:`sample` (one voxel apart)."""
        h = self.grid.voxel
        eye = torch.eye(3, device=points.device, dtype=points.dtype) * h
        plus = torch.stack([self.sample(points + eye[i]) for i in range(3)], -1)
        minus = torch.stack([self.sample(points - eye[i]) for i in range(3)], -1)
        return (plus - minus) / (2.0 * h)


def fuse(depth: Tensor, alpha: Tensor, cams: Cameras, grid: Grid, band: float, alpha_threshold: float,
         center: Tensor, radius: float) -> TSDF:
    """Fuse ``depth [V, H, W]`` and ``alpha [V, H, W]`` seen by ``cams`` (V cameras) into a :class:`TSDF`.

    The object lies inside the sphere (``center [3]``, ``radius``) the cameras frame; voxels outside it are outside
    (the grid's corners are not in every camera's frame, so the cameras could not carve them).
    """
    V, H, W = depth.shape
    if alpha.shape != depth.shape or len(cams) != V or (cams.height, cams.width) != (H, W):
        raise ValueError(f"fuse needs depth and alpha [V, H, W] from V cameras of that size; got depth "
                         f"{tuple(depth.shape)}, alpha {tuple(alpha.shape)}, {len(cams)} cameras of "
                         f"{cams.width}x{cams.height}")
    dev, dt = depth.device, depth.dtype
    cams = cams.to(device=dev, dtype=dt)
    # Premultiplied depth and opacity are interpolated separately, so pixels at the silhouette do not mix depths
    # with the empty background; their ratio is the expected depth again.
    maps = torch.stack([depth * alpha, alpha], 1)  # [V, 2, H, W]
    centres = grid.centres().to(dev, dt)
    acc = torch.zeros(centres.shape[0], device=dev, dtype=dt)
    wsum = torch.zeros_like(acc)
    step = max(1, VOXEL_VIEWS_PER_CHUNK // V)
    for s in range(0, centres.shape[0], step):
        p = centres[s:s + step]
        cam = p[None] @ cams.w2c[:, :3, :3].transpose(1, 2) + cams.w2c[:, None, :3, 3]  # [V, P, 3]
        z = cam[..., 2]
        uv = (cam @ cams.K.transpose(1, 2))[..., :2] / z.clamp_min(1e-6)[..., None]
        norm = torch.stack([uv[..., 0] / W, uv[..., 1] / H], -1) * 2.0 - 1.0
        seen = (norm.abs() <= 1.0).all(-1) & (z > 1e-6)
        samp = F.grid_sample(maps, norm[:, None], mode="bilinear", padding_mode="zeros", align_corners=False)
        pd, pa = samp[:, 0, 0], samp[:, 1, 0]  # [V, P]
        hit = pa >= alpha_threshold
        sdf = ((pd / pa.clamp_min(1e-6) - z) / band).clamp(-1.0, 1.0)
        obs = torch.where(hit, sdf, torch.ones_like(sdf))
        w = (seen & (~hit | (sdf > -1.0))).to(dt)
        acc[s:s + step] = (obs * w).sum(0)
        wsum[s:s + step] = w.sum(0)
    values = torch.where(wsum > 0, acc / wsum.clamp_min(1e-6), torch.full_like(acc, -1.0))
    outside = (centres - center.to(dev, dt)).norm(dim=-1) > radius
    values = torch.where(outside, torch.ones_like(values), values)
    return TSDF(blur(values.reshape(grid.res, grid.res, grid.res)), grid, band)


def blur(volume: Tensor) -> Tensor:
    """Separable ``[1, 2, 1] / 4`` filter along each axis (replicated borders): removes the single-voxel sign flips
    of noisy depth, which marching cubes would turn into bubbles, at the cost of rounding sub-voxel detail."""
    k = volume.new_tensor([0.25, 0.5, 0.25])
    v = volume[None, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = 3
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = 1  # F.pad lists the last axis first
        v = F.conv3d(F.pad(v, pad, mode="replicate"), k.reshape(shape))
    return v[0, 0]


__all__ = ["Grid", "TSDF", "fuse", "blur", "VOXEL_VIEWS_PER_CHUNK"]
