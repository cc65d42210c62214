"""Fixed topology through time: move the reference mesh's vertices with the 4D Gaussians, then onto each surface.

The mesh is carried outward from the reference time, one requested time to the next, forward and backward (errors
accumulate over at most half the clip). Each step has two parts:

1. **Prediction** from the Gaussians alive during the step (of the proxy, below, when there is one). Each 4D
   Gaussian's conditional mean moves linearly in time with velocity ``Sigma_{xyz,t} / Sigma_{t,t}`` (Yang et al.
   2024, eq. 5), but a Gaussian only exists around its temporal centre (its marginal ``p(t)`` fades it in and out;
   in a fit it often lives for a few frames), so the velocity field is integrated over ``substeps`` sub-steps, each
   evaluated with the Gaussians alive at that sub-step's middle: a vertex's velocity is the mean of its nearest
   Gaussians' velocities, weighted by opacity x ``p(t)`` x a Gaussian kernel of the distance (bandwidth: the
   vertex's mean neighbour distance). The step is smoothed over the mesh (uniform Laplacian).
2. **Correction** (:mod:`e4d.mesh.register`): as-rigid-as-possible ICP onto the surface fused at that time, rigid
   relative to the reference mesh. The Gaussians' velocities undershoot where the fit moves content by fading
   Gaussians in and out; the registration recovers that motion from the surfaces. A coarse proxy of the mesh
   (decimated) is registered first, stiffly, and its motion is handed to the mesh (each vertex follows its nearest
   proxy vertices): a stiff fine mesh would need many iterations to pass a large motion along a limb, a soft one
   slides along the surface. The mesh itself is then registered softly, to follow the articulations.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
from torch import Tensor

from ..gaussians4d import Gaussians4D
from ..rotation4d import covariance_4d
from ..slicing import CULL_THRESHOLD
from .register import RegisterConfig, register, surface_samples
from .surface import Adjacency, compact, decimate, smooth, uniform_laplacian, vertex_normals
from .tsdf import TSDF

log = logging.getLogger(__name__)

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


@dataclass
class Motion:
    """What the prediction needs of the 4D Gaussians (``N`` of them): the linear motion of their conditional means."""

    mean_xyz: Tensor
    """``[N, 3]`` spatial means."""
    mean_t: Tensor
    """``[N]`` temporal centres."""
    velocity: Tensor
    """``[N, 3]`` ``Sigma_{xyz,t} / Sigma_{t,t}``."""
    var_t: Tensor
    """``[N]`` temporal variances ``Sigma_{t,t}``."""
    opacity: Tensor
    """``[N]`` activated opacities."""

    @classmethod
    def of(cls, g: Gaussians4D) -> "Motion":
        cov = covariance_4d(g.log_scales, g.rot_l, g.rot_r)
        var_t = cov[:, 3, 3].clamp_min(1e-20)
        return cls(g.means[:, :3], g.means[:, 3], cov[:, :3, 3] / var_t[:, None], var_t,
                   torch.sigmoid(g.opacity_logit))

    def marginal(self, t: float, idx: Tensor) -> Tensor:
        """Temporal marginal ``p(t)`` of the Gaussians ``idx [...]`` (0 where culled)."""
        dt = t - self.mean_t[idx]
        p = torch.exp(-0.5 * dt * dt / self.var_t[idx])
        return torch.where(p > CULL_THRESHOLD, p, torch.zeros_like(p))

    def centres(self, t: float, idx: Tensor) -> Tensor:
        """Conditional means ``[..., 3]`` of the Gaussians ``idx [...]`` at time ``t``."""
        return self.mean_xyz[idx] + (t - self.mean_t[idx])[..., None] * self.velocity[idx]

    def alive_between(self, t_a: float, t_b: float) -> Tensor:
        """Indices ``[A]`` of the opaque Gaussians alive at some moment of ``[t_a, t_b]`` (either order)."""
        lo, hi = min(t_a, t_b), max(t_a, t_b)
        nearest_t = self.mean_t.clamp(lo, hi)  # the moment of the interval where the marginal peaks
        p = torch.exp(-0.5 * (nearest_t - self.mean_t).square() / self.var_t)
        return ((p > CULL_THRESHOLD) & (self.opacity * p > 1e-4)).nonzero().squeeze(-1)


def predict_step(verts: Tensor, motion: Motion, t_a: float, t_b: float, substeps: int, k: int) -> Tensor:
    """Displacement ``[M, 3]`` of ``verts [M, 3]`` from time ``t_a`` to ``t_b``: the Gaussians' velocity field
    integrated over ``substeps`` Euler sub-steps, each weighting the Gaussians by how alive they are at its middle.

    The neighbours are searched once per step (``2 k`` nearest among the Gaussians alive at some moment of it, at
    the step's middle); each sub-step re-weights them by their marginal and their distance at that moment."""
    alive = motion.alive_between(t_a, t_b)
    if alive.numel() == 0:
        return torch.zeros_like(verts)
    _, near = knn(verts, motion.centres(0.5 * (t_a + t_b), alive), 2 * k)
    near = alive[near]  # [M, 2k] Gaussian indices
    x = verts
    dt = (t_b - t_a) / substeps
    for s in range(substeps):
        tm = t_a + (s + 0.5) * dt
        d2 = (motion.centres(tm, near) - x[:, None]).square().sum(-1)
        w_g = motion.opacity[near] * motion.marginal(tm, near)
        # adaptive bandwidth: the mean distance to the neighbours alive now
        h2 = (d2 * (w_g > 0)).sum(1, keepdim=True) / (w_g > 0).sum(1, keepdim=True).clamp_min(1)
        w = w_g * torch.exp(-0.5 * d2 / h2.clamp_min(1e-12))
        w = w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
        x = x + dt * (w[..., None] * motion.velocity[near]).sum(dim=1)
    return x - verts


@dataclass
class Proxy:
    """A coarse copy of the mesh whose stiff registration carries the large motions to the fine mesh (the
    local-global iterations of a fine mesh spread a motion over a few edges per iteration only)."""

    rest: Tensor
    """``[P, 3]`` coarse vertices at the reference time."""
    faces: Tensor
    """``[G, 3]`` its faces."""
    adj: Adjacency
    """Its row-normalized adjacency (:func:`e4d.mesh.surface.uniform_laplacian`)."""
    bind_index: Tensor
    """``[M, k]`` coarse vertices each fine vertex follows ..."""
    bind_weight: Tensor
    """``[M, k]`` ... and their weights (rows sum to 1)."""

    @classmethod
    def of(cls, verts: Tensor, faces: Tensor, target_faces: int, k: int = 4) -> Optional["Proxy"]:
        """The proxy of ``verts [M, 3]``, ``faces [F, 3]`` decimated to ``target_faces`` (None when the mesh is
        not much larger than that, or decimation is not installed)."""
        if target_faces <= 0 or faces.shape[0] < 2 * target_faces:
            return None
        try:
            pv, pf = compact(*decimate(verts, faces, target_faces))
        except ImportError as e:
            log.info("tracking without a coarse proxy: %s", e)
            return None
        d2, idx = knn(verts, pv, k)
        # Bind only to coarse vertices facing the same way: two limbs that touch stay apart.
        agree = (vertex_normals(verts, faces)[:, None] * vertex_normals(pv, pf)[idx]).sum(-1) > 0
        agree[:, 0] |= ~agree.any(dim=1)
        w = torch.exp(-0.5 * d2 / d2[:, :1].clamp_min(1e-12).mul(4.0)) * agree
        return cls(pv, pf, uniform_laplacian(pf, pv.shape[0], pv), idx, w / w.sum(dim=1, keepdim=True))

    def transfer(self, displacement: Tensor) -> Tensor:
        """Fine-vertex displacements ``[M, 3]`` from coarse ones ``[P, 3]``."""
        return (self.bind_weight[..., None] * displacement[self.bind_index]).sum(dim=1)


def track(verts_ref: Tensor, faces: Tensor, g: Gaussians4D, times: Tensor, tsdfs: List[Optional[TSDF]], ref: int,
          neighbours: int = 16, smoothing: int = 3, substeps: int = 4,
          registration: Optional[RegisterConfig] = None, coarse: Optional[RegisterConfig] = None,
          coarse_faces: int = 0, on_step: Optional[Callable[[], None]] = None) -> Tensor:
    """Vertex positions ``[T, M, 3]`` of the reference mesh (``verts_ref [M, 3]`` at ``times[ref]``) at every time.

    Args:
        verts_ref, faces: the mesh at time index ``ref`` (faces ``[F, 3]``, long).
        g: the 4D Gaussians (same device and dtype as ``verts_ref``).
        times: ``[T]`` normalized times.
        tsdfs: the fused surface per time (``None`` entries are not registered onto).
        neighbours, smoothing, substeps: see :class:`e4d.mesh.MeshConfig`.
        registration: the correction of the mesh onto each time's surface (None: prediction only).
        coarse, coarse_faces: the registration of a coarse proxy (the mesh decimated to ``coarse_faces``) that
            carries the motion to the mesh before its own registration (None or 0: no proxy).
        on_step: called after each time step (progress; may raise to cancel).
    """
    T = int(times.shape[0])
    if verts_ref.ndim != 2 or verts_ref.shape[1] != 3 or not 0 <= ref < T or len(tsdfs) != T:
        raise ValueError(f"track needs verts_ref [M, 3], 0 <= ref < T and one TSDF entry per time; got verts "
                         f"{tuple(verts_ref.shape)}, ref={ref}, T={T}, {len(tsdfs)} TSDFs")
    motion = Motion.of(g)
    adj = uniform_laplacian(faces, verts_ref.shape[0], verts_ref)
    proxy = Proxy.of(verts_ref, faces, coarse_faces) if coarse is not None and registration is not None else None
    gen = torch.Generator().manual_seed(0)  # the surface samples: the same mesh on every run
    out = verts_ref.new_zeros(T, *verts_ref.shape)
    out[ref] = verts_ref
    for order in (range(ref + 1, T), range(ref - 1, -1, -1)):
        cur = verts_ref
        coarse_cur = proxy.rest if proxy is not None else None
        for b in order:
            a = b - 1 if b > ref else b + 1
            t_a, t_b = float(times[a]), float(times[b])
            target = None
            if tsdfs[b] is not None and registration is not None:
                try:
                    target = surface_samples(tsdfs[b], registration.samples, gen)
                except ValueError as e:  # nothing fused at this time: keep the predicted motion
                    log.warning("time %.4f is not registered: %s", t_b, e)
            if proxy is not None and target is not None:
                step = smooth(predict_step(coarse_cur, motion, t_a, t_b, substeps, neighbours), proxy.adj, smoothing)
                moved = register(coarse_cur + step, proxy.rest, proxy.faces, tsdfs[b], coarse, target)
                cur = cur + proxy.transfer(moved - coarse_cur)
                coarse_cur = moved
            else:
                cur = cur + smooth(predict_step(cur, motion, t_a, t_b, substeps, neighbours), adj, smoothing)
            if target is not None:
                cur = register(cur, verts_ref, faces, tsdfs[b], registration, target)
            out[b] = cur
            if on_step is not None:
                on_step()
    return out


__all__ = ["track", "predict_step", "Motion", "Proxy", "knn", "DISTANCES_PER_CHUNK"]
