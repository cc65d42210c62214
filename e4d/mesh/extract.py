"""4D Gaussians -> triangle meshes through time: the public entry point :func:`extract_mesh_4d`.

Per requested time: slice the Gaussians (eq. 4-6), render expected depth, opacity and colour from ``views``
cameras around the object (:mod:`e4d.mesh.views`), fuse the depths into a TSDF (:mod:`e4d.mesh.tsdf`). Then either
marching cubes at every time (independent meshes), or marching cubes once at the reference time and the vertices
tracked through time with the Gaussians' motion (:mod:`e4d.mesh.track`): one vertex set, one face list, an
animatable mesh. Vertex colours come from the colour renders: each vertex is projected into every camera where
it is visible (the rendered depth there matches its own) and the colours are averaged, weighted by how squarely
the camera faces the surface.
"""
from __future__ import annotations

import logging
import time as _time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cameras import Cameras
from ..gaussians4d import Gaussians4D
from ..progress import ProgressCallback, report
from ..slicing import TimesLike, as_times, slice_at
from .config import MeshConfig
from .surface import compact, decimate, drop_small_components, marching_cubes, vertex_normals
from .register import RegisterConfig
from .texture import UVTexture, bake_texture
from .track import track
from .tsdf import TSDF, Grid, fuse
from .views import object_bounds, render_depth_colour, sphere_cameras

log = logging.getLogger(__name__)


@dataclass
class MeshSequence:
    """Triangle meshes at T times, in the world frame of :mod:`e4d.cameras` (+Z up).

    Attributes:
        times: ``[T]`` normalized times.
        vertices: T tensors ``[M_t, 3]`` (float32, CPU); with ``fixed_topology`` all have the same M.
        faces: T tensors ``[F_t, 3]`` (long); with ``fixed_topology`` the same tensor at every time.
        colors: T tensors ``[M_t, 3]`` in [0, 1] (sRGB, as rendered).
        fixed_topology: one mesh moved through time (vertex i is the same surface point at every time).
        reference_index: index of the time the fixed-topology mesh was extracted at.
        info: timings (seconds) and sizes.
        texture: the fixed-topology mesh's UV atlas and baked colour texture (``MeshConfig.texture_size``), or None.
    """

    times: Tensor
    vertices: List[Tensor]
    faces: List[Tensor]
    colors: List[Tensor]
    fixed_topology: bool
    reference_index: int = 0
    info: Dict[str, Any] = field(default_factory=dict)
    texture: Optional[UVTexture] = None

    def __post_init__(self) -> None:
        T = int(self.times.shape[0])
        if not (len(self.vertices) == len(self.faces) == len(self.colors) == T):
            raise ValueError(f"MeshSequence needs one vertices/faces/colors entry per time (T={T}); got "
                             f"{len(self.vertices)}, {len(self.faces)}, {len(self.colors)}")
        for v, f, c in zip(self.vertices, self.faces, self.colors):
            if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or c.shape != v.shape:
                raise ValueError(f"MeshSequence entries must be vertices [M, 3], faces [F, 3], colors [M, 3]; got "
                                 f"{tuple(v.shape)}, {tuple(f.shape)}, {tuple(c.shape)}")
        if self.fixed_topology and len({int(v.shape[0]) for v in self.vertices}) != 1:
            raise ValueError("a fixed-topology MeshSequence needs the same vertex count at every time, got "
                             f"{[int(v.shape[0]) for v in self.vertices]}")
        if self.texture is not None and not self.fixed_topology:
            raise ValueError("a MeshSequence texture belongs to a fixed-topology mesh; got fixed_topology=False")

    def __len__(self) -> int:
        return int(self.times.shape[0])


def _grid(bounds, res: int) -> Grid:
    return Grid(bounds.lo, bounds.size / res, res)


def surface_colors(points: Tensor, normals: Tensor, cams: Cameras, depth: Tensor, alpha: Tensor, rgb: Tensor,
                   tolerance: float, alpha_threshold: float) -> Tuple[Tensor, Tensor]:
    """Colours ``[P, 3]`` of surface ``points [P, 3]`` (outward unit ``normals [P, 3]``) from the renders
    ``rgb [V, H, W, 3]`` where they are visible (their depth within ``tolerance`` of the rendered ``depth [V, H, W]``,
    opacity above ``alpha_threshold``), weighted by the squared cosine between the normal and the direction to the
    camera; also ``seen [P]`` (some camera sees the point; its colour is 0.5 grey otherwise)."""
    V, H, W = depth.shape
    cams = cams.to(device=points.device, dtype=points.dtype)
    cam = points[None] @ cams.w2c[:, :3, :3].transpose(1, 2) + cams.w2c[:, None, :3, 3]  # [V, P, 3]
    z = cam[..., 2]
    uv = (cam @ cams.K.transpose(1, 2))[..., :2] / z.clamp_min(1e-6)[..., None]
    norm = (torch.stack([uv[..., 0] / W, uv[..., 1] / H], -1) * 2.0 - 1.0)[:, None]  # [V, 1, P, 2]
    maps = torch.cat([(depth * alpha)[:, None], alpha[:, None], rgb.permute(0, 3, 1, 2)], 1)
    s = F.grid_sample(maps, norm, mode="bilinear", padding_mode="zeros", align_corners=False)[:, :, 0]  # [V, 5, P]
    d_obs = s[:, 0] / s[:, 1].clamp_min(1e-6)
    to_cam = cams.centers()[:, None] - points[None]
    facing = (normals[None] * to_cam).sum(-1) / to_cam.norm(dim=-1).clamp_min(1e-12)
    visible = (s[:, 1] >= alpha_threshold) & ((d_obs - z).abs() <= tolerance) & (facing > 0)
    w = torch.where(visible, facing.clamp_min(0) ** 2, torch.zeros_like(facing))  # [V, P]
    col = (w[..., None] * s[:, 2:].transpose(1, 2)).sum(0) / w.sum(0)[:, None].clamp_min(1e-12)
    seen = w.sum(0) > 0
    return torch.where(seen[:, None], col, torch.full_like(col, 0.5)).clamp(0.0, 1.0), seen


def vertex_colors(verts: Tensor, faces: Tensor, cams: Cameras, depth: Tensor, alpha: Tensor, rgb: Tensor,
                  tolerance: float, alpha_threshold: float) -> Tensor:
    """Colours ``[M, 3]`` of ``verts`` from the renders (:func:`surface_colors` at the vertices, with the mesh's
    vertex normals); grey where no camera sees a vertex."""
    return surface_colors(verts, vertex_normals(verts, faces), cams, depth, alpha, rgb, tolerance,
                          alpha_threshold)[0]


def extract_mesh_4d(g: Gaussians4D, times: TimesLike, config: Optional[MeshConfig] = None,
                    callback: Optional[ProgressCallback] = None, backend: str = "auto") -> MeshSequence:
    """Triangle meshes of the 4D Gaussians ``g`` at ``times [T]`` (normalized), watertight and vertex-coloured.

    Args:
        g: fitted 4D Gaussians (any device; the work runs there: a GPU makes it seconds).
        times: ``[T]`` normalized times (e.g. ``torch.linspace(0, 1, 16)`` or the fit's frame times).
        config: :class:`MeshConfig` (resolution, views, fixed topology, smoothing, decimation...).
        callback: ``callback(step, total, info)`` after every unit of work (``info["stage"]`` names it); raising
            from it (e.g. :class:`e4d.progress.Cancelled`) stops the extraction.
        backend: renderer backend (see :func:`e4d.render.render`).
    Returns:
        :class:`MeshSequence` on the CPU (vertices in world units, +Z up).
    Raises:
        ValueError: no opaque Gaussian at the times, or no surface in the fused grid.
        ImportError: scikit-image missing, or fast-simplification missing while ``decimate_faces > 0``.
    """
    if not isinstance(g, Gaussians4D):
        raise TypeError(f"extract_mesh_4d needs a Gaussians4D, got {type(g).__name__}")
    cfg = (config or MeshConfig()).validate()
    tic = _time.perf_counter()
    g = g.detach()
    t = as_times(times, g.means)
    T = int(t.shape[0])
    ref = int((t - cfg.reference_time).abs().argmin()) if cfg.fixed_topology else 0
    total = 2 * T if cfg.fixed_topology else T
    step = 0

    def tick(stage: str, **info: Any) -> None:
        nonlocal step
        step += 1
        report(callback, step, total, stage=stage, **info)

    with torch.no_grad():
        slices = slice_at(g, t)
        bounds = object_bounds(slices)
        grid = _grid(bounds, cfg.resolution)
        band = cfg.truncation * grid.voxel
        cams = sphere_cameras(cfg.views, bounds, cfg.view_size)
        colour = lambda v, f, maps: vertex_colors(v, f, cams, *maps, 1.5 * band,  # noqa: E731
                                                  cfg.alpha_threshold)
        tsdfs: List[TSDF] = []
        vs, fs, cs = [], [], []
        ref_maps = None
        for b in range(T):
            g3, _ = slices.compact(b)
            with_colour = not cfg.fixed_topology or b == ref
            depth, alpha, rgb = render_depth_colour(g3, cams, backend, colour=with_colour)
            tsdf = fuse(depth, alpha, cams, grid, band, cfg.alpha_threshold, bounds.center, bounds.radius)
            if cfg.fixed_topology:
                tsdfs.append(tsdf)
                if b == ref:
                    ref_maps = (depth, alpha, rgb)
            else:
                v, f = _surface(tsdf, cfg)
                cs.append(colour(v, f, (depth, alpha, rgb)).float().cpu())
                vs.append(v.float().cpu())
                fs.append(f.cpu())
            tick("fuse" if cfg.fixed_topology else "surface", time=float(t[b]))
        fused_s = _time.perf_counter() - tic
        track_s = 0.0
        texture, bake_s = None, 0.0
        if cfg.fixed_topology:
            v0, f0 = _surface(tsdfs[ref], cfg)  # marching cubes reads the grid on the CPU: the fusion is done
            tick("surface", time=float(t[ref]))
            track_tic = _time.perf_counter()
            reg = RegisterConfig(iterations=cfg.refit_iterations, rigidity=cfg.rigidity)
            coarse = RegisterConfig(iterations=cfg.coarse_iterations, rigidity=cfg.coarse_rigidity)
            verts = track(v0, f0, g, t, tsdfs, ref, cfg.track_neighbours, cfg.smoothing, cfg.substeps,
                          reg if cfg.refit_iterations else None, coarse if cfg.coarse_iterations else None,
                          cfg.coarse_faces, on_step=lambda: tick("track"))
            vs = [verts[b].float().cpu() for b in range(T)]
            track_s = _time.perf_counter() - track_tic
            c0 = colour(v0, f0, ref_maps).float().cpu()
            fs = [f0.cpu()] * T
            cs = [c0] * T
            if cfg.texture_size:
                bake_tic = _time.perf_counter()
                at = lambda p, n: surface_colors(p, n, cams, *ref_maps, 1.5 * band,  # noqa: E731
                                                 cfg.alpha_threshold)
                texture = bake_texture(v0, f0, c0.to(v0), at, cfg.texture_size)
                bake_s = _time.perf_counter() - bake_tic
    # Stage times count asynchronous device work where it is first waited for (fusion: in the marching cubes).
    info = {"seconds": round(_time.perf_counter() - tic, 3), "per_time_seconds": round(fused_s, 3),
            "track_seconds": round(track_s, 3),
            "vertices": [int(v.shape[0]) for v in vs], "faces": [int(f.shape[0]) for f in fs],
            "voxel": grid.voxel, "grid": cfg.resolution, "views": cfg.views}
    if texture is not None:
        info["texture"], info["texture_seconds"] = list(texture.image.shape[:2]), round(bake_s, 3)
    return MeshSequence(t.float().cpu(), vs, fs, cs, cfg.fixed_topology, ref, info, texture)


def _surface(tsdf: TSDF, cfg: MeshConfig):
    v, f = marching_cubes(tsdf)
    v, f = drop_small_components(v, f, cfg.min_component)
    v, f = decimate(v, f, cfg.decimate_faces)
    return compact(v, f)


__all__ = ["MeshSequence", "extract_mesh_4d", "vertex_colors", "surface_colors"]
