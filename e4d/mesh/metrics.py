"""Geometry metrics of extracted meshes against a ground-truth mesh (benchmarks and tests).

* Chamfer distance: symmetric, the mean of the two one-sided mean nearest-neighbour distances (not squared)
  between points sampled uniformly on both surfaces, in world units.
* F-score at a threshold: harmonic mean of precision (predicted points within the threshold of the GT surface)
  and recall (GT points within it of the prediction).
* Tracking error: each vertex of a fixed-topology mesh is attached at the reference time to its closest GT surface
  point (triangle + barycentric coordinates), that point is followed through the GT animation, and the error is
  its distance to the vertex at every time.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

DISTANCES_PER_CHUNK = 1 << 24


def sample_surface(verts: Tensor, faces: Tensor, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """``n`` points ``[n, 3]`` uniform by area on the triangles of ``verts [M, 3]``, ``faces [F, 3]``."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    area = torch.linalg.cross(b - a, c - a).norm(dim=-1)
    idx = torch.multinomial(area.double().cpu(), n, replacement=True, generator=generator).to(verts.device)
    r = torch.rand(n, 2, generator=generator, dtype=torch.float64).to(verts.device, verts.dtype)
    flip = r.sum(-1) > 1  # fold the unit square onto the triangle
    r = torch.where(flip[:, None], 1 - r, r)
    return a[idx] + r[:, :1] * (b - a)[idx] + r[:, 1:] * (c - a)[idx]


def nearest_distance(points: Tensor, cloud: Tensor) -> Tensor:
    """Distance ``[P]`` from each of ``points [P, 3]`` to its nearest point of ``cloud [N, 3]``."""
    step = max(1, DISTANCES_PER_CHUNK // max(cloud.shape[0], 1))
    # float64: the fast matmul form of cdist loses ~1e-4 to cancellation in float32 (the exact per-pair form is
    # very slow on the GPU); in float64 the loss is ~1e-8.
    p64, c64 = points.double(), cloud.double()
    return torch.cat([torch.cdist(p64[s:s + step], c64).amin(dim=1)
                      for s in range(0, points.shape[0], step)]).to(points.dtype)


def chamfer_fscore(pred: Tensor, gt: Tensor, threshold: float = 0.01) -> Dict[str, float]:
    """Symmetric Chamfer distance and F-score@``threshold`` between point sets ``pred [P, 3]`` and ``gt [G, 3]``."""
    d_pg, d_gp = nearest_distance(pred, gt), nearest_distance(gt, pred)
    precision = float((d_pg < threshold).double().mean())
    recall = float((d_gp < threshold).double().mean())
    f = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"chamfer": 0.5 * (float(d_pg.mean()) + float(d_gp.mean())), "fscore": f, "precision": precision,
            "recall": recall}


def closest_point_on_triangles(p: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
    """Closest points and barycentric coordinates ``[..., 3]`` of points ``p`` on triangles ``(a, b, c)``
    (all ``[..., 3]``, broadcast), by the Voronoi-region cases of Ericson, Real-Time Collision Detection §5.1.5."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    eps = 1e-20
    denom = (va + vb + vc)
    v_in, w_in = vb / denom.clamp_min(eps), vc / denom.clamp_min(eps)
    bary = torch.stack([1 - v_in - w_in, v_in, w_in], -1)
    t_ab = d1 / (d1 - d3).where((d1 - d3).abs() > eps, torch.full_like(d1, eps))
    t_ac = d2 / (d2 - d6).where((d2 - d6).abs() > eps, torch.full_like(d2, eps))
    t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6)).where(((d4 - d3) + (d5 - d6)).abs() > eps,
                                                    torch.full_like(d4, eps))
    one, zero = torch.ones_like(d1), torch.zeros_like(d1)
    on_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
    bary = torch.where(on_bc[..., None], torch.stack([zero, 1 - t_bc, t_bc], -1), bary)
    on_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    bary = torch.where(on_ac[..., None], torch.stack([1 - t_ac, zero, t_ac], -1), bary)
    on_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    bary = torch.where(on_ab[..., None], torch.stack([1 - t_ab, t_ab, zero], -1), bary)
    at_c = (d6 >= 0) & (d5 <= d6)
    bary = torch.where(at_c[..., None], torch.stack([zero, zero, one], -1), bary)
    at_b = (d3 >= 0) & (d4 <= d3)
    bary = torch.where(at_b[..., None], torch.stack([zero, one, zero], -1), bary)
    at_a = (d1 <= 0) & (d2 <= 0)
    bary = torch.where(at_a[..., None], torch.stack([one, zero, zero], -1), bary)
    q = bary[..., :1] * a + bary[..., 1:2] * b + bary[..., 2:] * c
    return q, bary


def attach_to_surface(points: Tensor, verts: Tensor, faces: Tensor, candidates: int = 32) -> Tuple[Tensor, Tensor]:
    """For each of ``points [P, 3]``, the closest triangle ``[P]`` of the mesh and barycentric coordinates
    ``[P, 3]`` of the closest point on it (exact among the ``candidates`` triangles with the nearest centroids)."""
    tri = verts[faces]  # [F, 3, 3]
    centroid = tri.mean(1)
    k = min(candidates, faces.shape[0])
    step = max(1, DISTANCES_PER_CHUNK // max(faces.shape[0], 1))
    best_f, best_b = [], []
    for s in range(0, points.shape[0], step):
        p = points[s:s + step]
        _, cand = torch.topk(torch.cdist(p, centroid), k, dim=1, largest=False)  # [p, k]
        t = tri[cand]  # [p, k, 3, 3]
        q, bary = closest_point_on_triangles(p[:, None], t[..., 0, :], t[..., 1, :], t[..., 2, :])
        j = (q - p[:, None]).norm(dim=-1).argmin(dim=1)
        rows = torch.arange(p.shape[0], device=p.device)
        best_f.append(cand[rows, j])
        best_b.append(bary[rows, j])
    return torch.cat(best_f), torch.cat(best_b)


def tracking_error(tracked: Tensor, gt_verts: Tensor, gt_faces: Tensor, ref: int) -> Tensor:
    """Per-time mean tracking error ``[T]`` of ``tracked [T, M, 3]`` (a fixed-topology mesh) against the GT
    animation ``gt_verts [T, G, 3]`` (fixed topology ``gt_faces``), attaching at time ``ref``."""
    if tracked.shape[0] != gt_verts.shape[0]:
        raise ValueError(f"tracked and GT need the same number of times, got {tracked.shape[0]} and "
                         f"{gt_verts.shape[0]}")
    f, bary = attach_to_surface(tracked[ref], gt_verts[ref], gt_faces)
    tri = gt_verts[:, gt_faces[f]]  # [T, M, 3, 3]
    follow = (bary[None, :, :, None] * tri).sum(2)
    return (follow - tracked).norm(dim=-1).mean(dim=1)


__all__ = ["sample_surface", "nearest_distance", "chamfer_fscore", "closest_point_on_triangles", "attach_to_surface",
           "tracking_error"]
