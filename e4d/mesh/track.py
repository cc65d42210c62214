"""Fixed topology through time: move the reference mesh's vertices with the motion of the 4D Gaussians.

Each 4D Gaussian's conditional mean moves linearly in time (Yang et al. 2024, eq. 5): its velocity is
``Sigma_{xyz,t} / Sigma_{t,t}``, i.e. between two times ``t_a`` and ``t_b`` it moves by exactly
``mu_{xyz|t_b} - mu_{xyz|t_a}``. A Gaussian only exists around its temporal centre (its temporal marginal
``p(t)`` fades it in and out), so a vertex follows the motion step by step, from one requested time to the next:

1. its ``k`` nearest Gaussians at ``t_a`` (among those alive at both times) vote with their step
   ``mu(t_b) - mu(t_a)``, weighted by opacity x ``sqrt(p(t_a) p(t_b))`` x a Gaussian kernel of the distance
   (bandwidth: the vertex's mean neighbour distance);
2. the step field is smoothed over the mesh (uniform Laplacian), which keeps neighbouring vertices together;
3. the vertices are projected onto that time's fused surface along their normals, a few steps
   ``x <- x - d(x) n(x)`` (``d`` the TSDF distance), alternating with one smoothing step of the displacement, so
   the surface cannot drift while its detail (relative to the reference) is kept.

Tracking runs forward and backward from the reference time, so errors accumulate over at most half the clip.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import Tensor

from ..slicing import Gaussians3D
from .surface import smooth, uniform_laplacian, vertex_normals
from .tsdf import TSDF

DISTANCES_PER_CHUNK = 1 << 25
"""Vertex x Gaussian distances evaluated at once in the nearest-neighbour search."""


def knn(points: Tensor, cloud: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Squared distances and indices ``[P, k]`` of the ``k`` nearest ``cloud [N, 3]`` points of each of
    ``points [P, 3]`` (brute force in chunks; exact)."""
    k = min(k, cloud.shape[0])
    step = max(1, DISTANCES_PER_CHUNK // max(cloud.shape[0], 1))
    d2, idx = [], []
    for s in range(0, points.shape[0], step):
        d = torch.cdist(points[s:s + step], cloud).square_()
        v, i = torch.topk(d, k, dim=1, largest=False)
        d2.append(v)
        idx.append(i)
    return torch.cat(d2), torch.cat(idx)


def gaussian_step(verts: Tensor, slices: Gaussians3D, a: int, b: int, k: int) -> Tensor:
    """Displacement ``[M, 3]`` of ``verts`` (at slice ``a``) to slice ``b`` from the motion of nearby Gaussians."""
    w_g = (slices.opacities[a] * slices.opacities[b]).sqrt()  # both already hold opacity x marginal, 0 if culled
    alive = (w_g > 1e-4).nonzero().squeeze(-1)
    if alive.numel() == 0:
        return torch.zeros_like(verts)
    pa, pb = slices.means[a, alive], slices.means[b, alive]
    d2, idx = knn(verts, pa, k)
    h2 = d2.mean(dim=1, keepdim=True).clamp_min(1e-12)  # adaptive bandwidth: the vertex's neighbour spacing
    w = w_g[alive][idx] * torch.exp(-0.5 * d2 / h2)
    w = w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return (w[..., None] * (pb - pa)[idx]).sum(dim=1)


def project_to_surface(verts: Tensor, normals: Tensor, tsdf: TSDF) -> Tensor:
    """One step of ``verts [M, 3]`` towards the zero level of ``tsdf`` along the mesh's own unit ``normals [M, 3]``
    (not the TSDF gradient, which is noisy and would let vertices slide along the surface), by the signed distance
    clamped to the truncation band (beyond it the TSDF carries no distance)."""
    d = tsdf.sample(verts).clamp(-tsdf.band, tsdf.band)
    return verts - d[:, None] * normals


def _normals(verts: Tensor, faces: Tensor, adj: Tensor) -> Tensor:
    """Vertex normals averaged over the one-ring twice: marching-cubes slivers have unreliable normals of their own."""
    n = smooth(vertex_normals(verts, faces), adj, 2)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def track(verts_ref: Tensor, faces: Tensor, slices: Gaussians3D, tsdfs: List[Optional[TSDF]], ref: int,
          neighbours: int = 16, smoothing: int = 3, refit_iterations: int = 3,
          on_step: Optional[Callable[[], None]] = None) -> Tensor:
    """Vertex positions ``[T, M, 3]`` of the reference mesh (``verts_ref [M, 3]`` at slice ``ref``) at every slice.

    Args:
        verts_ref, faces: the mesh at slice ``ref`` (faces ``[F, 3]``, long).
        slices: the Gaussians sliced at the T times (:func:`e4d.slicing.slice_at`).
        tsdfs: the fused surface per time (``None`` entries are not refitted).
        neighbours, smoothing, refit_iterations: see :class:`e4d.mesh.MeshConfig`.
        on_step: called after each time step (progress; may raise to cancel).
    """
    T = slices.batch
    if verts_ref.ndim != 2 or verts_ref.shape[1] != 3 or not 0 <= ref < T or len(tsdfs) != T:
        raise ValueError(f"track needs verts_ref [M, 3], 0 <= ref < T and one TSDF entry per slice; got verts "
                         f"{tuple(verts_ref.shape)}, ref={ref}, T={T}, {len(tsdfs)} TSDFs")
    adj = uniform_laplacian(faces, verts_ref.shape[0], verts_ref)
    out = verts_ref.new_zeros(T, *verts_ref.shape)
    out[ref] = verts_ref
    for order in (range(ref + 1, T), range(ref - 1, -1, -1)):
        cur = verts_ref
        for b in order:
            a = b - 1 if b > ref else b + 1
            start = cur
            cur = cur + smooth(gaussian_step(cur, slices, a, b, neighbours), adj, smoothing)
            if tsdfs[b] is not None:
                for _ in range(refit_iterations):
                    cur = project_to_surface(cur, _normals(cur, faces, adj), tsdfs[b])
                    cur = start + smooth(cur - start, adj, 1)
                if refit_iterations:
                    cur = project_to_surface(cur, _normals(cur, faces, adj), tsdfs[b])
            out[b] = cur
            if on_step is not None:
                on_step()
    return out


__all__ = ["track", "gaussian_step", "project_to_surface", "knn", "DISTANCES_PER_CHUNK"]
