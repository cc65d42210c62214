"""Non-rigid registration of the tracked mesh onto one time's fused surface (as-rigid-as-possible ICP).

The Gaussians' motion only predicts where the reference mesh goes next (a fit often represents motion partly by
fading Gaussians in and out, so their velocities undershoot); this step corrects it against the surface fused at
that time. Local-global iterations in the manner of Sorkine & Alexa 2007 (ARAP) with ICP correspondences:

1. correspondences, both ways, between the mesh vertices and points sampled on the TSDF's zero level: each vertex
   to its nearest surface point (point-to-plane: it may slide along the surface) and each surface point to its
   nearest vertex (point-to-point: it pulls lagging parts, e.g. a swinging foot, along); pairs further apart than a
   shrinking distance, or with normals more than 60 degrees apart, are rejected;
2. the best rotation per vertex between its rest one-ring (the reference mesh) and its current one (SVD);
3. positions solving the quadratic energy ``data + rigidity * sum_edges |x_i - x_j - R_ij (x0_i - x0_j)|^2`` with
   the correspondences and rotations fixed, by preconditioned conjugate gradients (a sparse solve that also runs on
   the GPU).

Rigidity is relative to the reference mesh, not to the previous time, so the shape does not creep over many steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from .surface import vertex_normals
from .tsdf import TSDF

NORMAL_AGREEMENT = 0.5
"""Correspondences whose normals have a cosine below this are rejected (another part of the body facing away)."""
CG_ITERATIONS = 40
"""Conjugate-gradient steps per linear solve (warm-started from the current positions)."""
DISTANCES_PER_CHUNK = 1 << 25
"""Point x point distances evaluated at once in the nearest-neighbour searches."""


def nearest(points: Tensor, cloud: Tensor) -> Tuple[Tensor, Tensor]:
    """Distance ``[P]`` and index ``[P]`` of the nearest ``cloud [N, 3]`` point to each of ``points [P, 3]``."""
    step = max(1, DISTANCES_PER_CHUNK // max(cloud.shape[0], 1))
    d, i = [], []
    for s in range(0, points.shape[0], step):
        v, j = torch.cdist(points[s:s + step], cloud).min(dim=1)
        d.append(v)
        i.append(j)
    return torch.cat(d), torch.cat(i)


def surface_samples(tsdf: TSDF, count: int, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """Up to ``count`` points ``[P, 3]`` on the zero level of ``tsdf`` and their outward unit normals ``[P, 3]``:
    voxel centres within one voxel of the surface (a random subset), moved onto it along the TSDF gradient."""
    g = tsdf.grid
    near = (tsdf.values.abs() * tsdf.band < g.voxel).nonzero()
    if near.shape[0] == 0:
        raise ValueError("the fused volume has no voxel within one voxel of a surface; nothing to register onto")
    if near.shape[0] > count:
        pick = torch.randperm(near.shape[0], generator=generator)[:count].to(near.device)
        near = near[pick]
    p = g.to_world(near.to(tsdf.values.dtype))
    for _ in range(2):  # Newton steps onto the zero level (the TSDF is a distance inside its band)
        grad = tsdf.gradient(p)
        n = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        p = p - tsdf.sample(p)[:, None] * n
    grad = tsdf.gradient(p)
    return p, grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def directed_edges(faces: Tensor, num_vertices: int) -> Tuple[Tensor, Tensor]:
    """Both directions ``(i [E], j [E])`` of every mesh edge, once each."""
    i = torch.cat([faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]])
    j = torch.cat([faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]])
    key = torch.unique(i * num_vertices + j)
    return key // num_vertices, key % num_vertices


def best_rotations(rest: Tensor, cur: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """Per-vertex rotations ``[M, 3, 3]`` best mapping the rest one-ring edges onto the current ones (Kabsch)."""
    e0, e = rest[i] - rest[j], cur[i] - cur[j]
    cov = torch.zeros(rest.shape[0], 3, 3, device=rest.device, dtype=rest.dtype)
    cov.index_add_(0, i, e0[:, :, None] * e[:, None, :])
    u, _, vh = torch.linalg.svd(cov)
    r = vh.transpose(1, 2) @ u.transpose(1, 2)
    flip = torch.linalg.det(r) < 0  # a reflection: negate the axis of the smallest singular value
    u = torch.where(flip[:, None, None], u * u.new_tensor([1.0, 1.0, -1.0]), u)
    return vh.transpose(1, 2) @ u.transpose(1, 2)


def stiffness_scale(rest: Tensor, i: Tensor, j: Tensor) -> float:
    """``(extent / mean edge length)^2`` of the mesh ``rest [M, 3]`` with edges ``(i, j)``: a strain spread over
    the object changes each edge by its length times the strain, the surface moves by the extent times it."""
    edge = (rest[i] - rest[j]).norm(dim=-1).mean()
    extent = (rest - rest.mean(0)).square().sum(-1).mean().sqrt()
    return float((extent / edge.clamp_min(1e-12)).square())


@dataclass
class RegisterConfig:
    """How hard the registration pulls the mesh onto the surface versus keeping its reference shape."""

    iterations: int = 6
    """Local-global iterations (correspondences, rotations, solve)."""
    rigidity: float = 1.0
    """Weight of the as-rigid-as-possible term against the data term, independent of the mesh's resolution: the
    per-edge weight is ``rigidity * (extent / mean edge length)^2`` (``extent`` the mesh's RMS radius), so a
    deformation spread over the whole object costs as much as a misfit of the same size at every vertex."""
    reject_start: float = 0.094
    """Correspondences further apart than this fraction of the fused grid's side are rejected in the first
    iteration ... (a world distance, not voxels: a motion is as long at 256³ as at 128³; in voxels the finer grid
    rejected the matches of the clip's largest motions)"""
    reject_end: float = 0.023
    """... shrinking geometrically to this fraction in the last (12 and 3 voxels at 128³, where they were tuned)."""
    samples: int = 40_000
    """Points sampled on the target surface."""


def register(cur: Tensor, rest: Tensor, faces: Tensor, tsdf: TSDF, cfg: RegisterConfig,
             target: Optional[Tuple[Tensor, Tensor]] = None,
             generator: Optional[torch.Generator] = None) -> Tensor:
    """Vertices ``[M, 3]`` of the mesh (``faces [F, 3]``, at ``cur [M, 3]`` now, ``rest [M, 3]`` its reference
    shape) registered onto the zero level of ``tsdf`` (``target``: its :func:`surface_samples`, else sampled)."""
    if cur.shape != rest.shape or cur.ndim != 2 or cur.shape[1] != 3:
        raise ValueError(f"register needs cur and rest [M, 3] of one shape, got {tuple(cur.shape)} and "
                         f"{tuple(rest.shape)}")
    if cfg.iterations <= 0:
        return cur
    M = cur.shape[0]
    side = tsdf.grid.voxel * tsdf.grid.res
    target, target_n = target if target is not None else surface_samples(tsdf, cfg.samples, generator)
    target, target_n = target.to(cur.dtype), target_n.to(cur.dtype)
    i, j = directed_edges(faces, M)
    deg = torch.bincount(i, minlength=M).to(cur.dtype)
    lam = cfg.rigidity * stiffness_scale(rest, i, j)
    x = cur
    for it in range(cfg.iterations):
        frac = it / max(cfg.iterations - 1, 1)
        reject = side * cfg.reject_start * (cfg.reject_end / cfg.reject_start) ** frac
        normals = vertex_normals(x, faces)
        # vertex -> surface, point-to-plane
        d, k = nearest(x, target)
        nq = target_n[k]
        ok = (d < reject) & ((normals * nq).sum(-1) > NORMAL_AGREEMENT)
        w = ok.to(x.dtype)
        blocks = w[:, None, None] * nq[:, :, None] * nq[:, None, :]  # [M, 3, 3]
        rhs = (blocks @ target[k][:, :, None])[..., 0]
        # surface -> vertex, point-to-point, scaled to carry the same total weight per vertex as the first term
        d2, v = nearest(target, x)
        ok2 = (d2 < reject) & ((normals[v] * target_n).sum(-1) > NORMAL_AGREEMENT)
        c = ok2.to(x.dtype) * (M / target.shape[0])
        count = torch.zeros(M, device=x.device, dtype=x.dtype).index_add_(0, v, c)
        blocks = blocks + count[:, None, None] * torch.eye(3, device=x.device, dtype=x.dtype)
        rhs = rhs.index_add(0, v, c[:, None] * target)
        # a light pull to the current position keeps vertices without data well-posed
        damp = 1e-3
        blocks = blocks + damp * torch.eye(3, device=x.device, dtype=x.dtype)
        rhs = rhs + damp * x
        rot = best_rotations(rest, x, i, j)
        r_ij = 0.5 * ((rot[i] + rot[j]) @ (rest[i] - rest[j])[:, :, None])[..., 0]
        b = rhs + lam * torch.zeros_like(x).index_add_(0, i, r_ij)
        x = _solve(blocks, lam, deg, i, j, b, x)
    return x


def _solve(blocks: Tensor, lam: float, deg: Tensor, i: Tensor, j: Tensor, b: Tensor, x0: Tensor) -> Tensor:
    """Solve ``(blocks + lam * L) x = b`` (``L`` the graph Laplacian, ``blocks [M, 3, 3]`` per vertex) by
    conjugate gradients with the block-Jacobi preconditioner, starting at ``x0``."""

    def apply(x: Tensor) -> Tensor:
        lap = deg[:, None] * x - torch.zeros_like(x).index_add_(0, i, x[j])
        return (blocks @ x[:, :, None])[..., 0] + lam * lap

    eye = torch.eye(3, device=b.device, dtype=b.dtype)
    pre = torch.linalg.inv(blocks + (lam * deg)[:, None, None] * eye)
    x = x0
    r = b - apply(x)
    z = (pre @ r[:, :, None])[..., 0]
    p = z
    rz = (r * z).sum()
    for _ in range(CG_ITERATIONS):
        ap = apply(p)
        alpha = rz / (p * ap).sum().clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        z = (pre @ r[:, :, None])[..., 0]
        rz_new = (r * z).sum()
        p = z + (rz_new / rz.clamp_min(1e-30)) * p
        rz = rz_new
    return x


__all__ = ["RegisterConfig", "register", "stiffness_scale", "surface_samples", "best_rotations", "directed_edges",
           "nearest"]
