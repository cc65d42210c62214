"""Triangle-mesh steps: marching cubes on a fused grid, floater removal, decimation, normals, mesh Laplacian.

Marching cubes is scikit-image's ``measure.marching_cubes`` (Lewiner et al. 2003 tables, which give a consistent,
watertight surface without the ambiguous-case holes of the original 1987 tables). Chosen over PyMCubes because it
is a widely used, actively released BSD library with wheels for every platform ComfyUI runs on, and it is already
in the GPU image; ComfyUI core's own marching cubes (Hunyuan3D nodes) is not importable from the core package,
which never imports ComfyUI. Decimation is the quadric edge collapse of ``fast-simplification`` (the library
``trimesh`` itself calls for ``simplify_quadric_decimation``).
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np
import torch
from torch import Tensor

from .tsdf import TSDF


def marching_cubes(tsdf: TSDF) -> Tuple[Tensor, Tensor]:
    """The zero level of ``tsdf``: world vertices ``[M, 3]`` (its dtype/device) and faces ``[F, 3]`` (long), with
    counter-clockwise triangles seen from outside (normals point out of the object)."""
    try:
        from skimage.measure import marching_cubes as _mc
    except ImportError as e:
        raise ImportError("mesh extraction needs scikit-image for marching cubes: pip install scikit-image") from e
    vol = tsdf.values.detach().float().cpu().numpy()
    if not (vol.min() < 0.0 < vol.max()):
        raise ValueError(f"the fused volume has no surface (values in [{vol.min():.3f}, {vol.max():.3f}], need both "
                         "signs); the object may be empty or larger than the fusion grid")
    # Pad with one outside layer so every surface closes inside the grid (watertight even where it touches it).
    vol = np.pad(vol, 1, mode="constant", constant_values=1.0)
    # With the default gradient_direction='descent' scikit-image winds the triangles counter-clockwise seen from
    # the side of larger values, which is outside for a distance that grows outwards.
    verts, faces, _, _ = _mc(vol, level=0.0, allow_degenerate=False)
    v = torch.from_numpy(np.ascontiguousarray(verts - 1.0)).to(tsdf.values.device, tsdf.values.dtype)
    f = torch.from_numpy(np.ascontiguousarray(faces.astype(np.int64))).to(tsdf.values.device)
    return tsdf.grid.to_world(v), f


def drop_small_components(verts: Tensor, faces: Tensor, min_fraction: float) -> Tuple[Tensor, Tensor]:
    """Remove connected pieces with fewer than ``min_fraction`` of the faces, and closed pieces enclosing no
    positive volume (cavities inside the object, whose normals point inwards), and the vertices left unused."""
    if faces.shape[0] == 0:
        return verts, faces
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f = faces.cpu().numpy()
    n = verts.shape[0]
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    _, label = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)), directed=False)
    face_label = label[f[:, 0]]
    counts = np.bincount(face_label)
    v = verts.detach().double().cpu().numpy()
    # Signed volume of each piece by the divergence theorem: sum of a . (b x c) / 6 over its triangles.
    vol6 = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]]))
    volume = np.bincount(face_label, weights=vol6) / 6.0
    keep = (counts[face_label] >= min_fraction * len(f)) & (volume[face_label] > 0)
    return compact(verts, faces[torch.from_numpy(keep).to(faces.device)])


def compact(verts: Tensor, faces: Tensor) -> Tuple[Tensor, Tensor]:
    """Drop vertices no face uses and renumber the faces."""
    used = torch.zeros(verts.shape[0], dtype=torch.bool, device=verts.device)
    used[faces.reshape(-1)] = True
    new_id = torch.cumsum(used.long(), 0) - 1
    return verts[used], new_id[faces]


def decimate(verts: Tensor, faces: Tensor, target_faces: int) -> Tuple[Tensor, Tensor]:
    """Quadric decimation to about ``target_faces`` triangles (no-op when the mesh already has fewer)."""
    if target_faces <= 0 or faces.shape[0] <= target_faces:
        return verts, faces
    try:
        import fast_simplification
    except ImportError as e:
        raise ImportError(f"decimation to {target_faces} faces needs the fast-simplification package, which is not "
                          "installed: pip install fast-simplification, or set decimate_faces=0 to keep the full "
                          "marching-cubes mesh") from e
    reduction = 1.0 - target_faces / faces.shape[0]
    v, f = fast_simplification.simplify(verts.detach().cpu().numpy().astype(np.float64),
                                        faces.cpu().numpy().astype(np.int64), target_reduction=reduction)
    return (torch.from_numpy(np.asarray(v)).to(verts.device, verts.dtype),
            torch.from_numpy(np.asarray(f, dtype=np.int64)).to(faces.device))


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals ``[M, 3]``."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    fn = torch.linalg.cross(b - a, c - a)  # length = 2 x area: area weighting for free
    n = torch.zeros_like(verts).index_add_(0, faces.reshape(-1), fn.repeat_interleave(3, 0))
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class Adjacency(NamedTuple):
    """Row-normalized adjacency of a mesh graph as an edge list: ``A @ x`` is
    ``index_add(rows, weights * x[cols])``. Not a torch sparse tensor: scatter-adds run on every device (MPS's sparse
    support is partial) and raise no sparse-invariant warnings."""
    rows: Tensor
    """Receiving vertex of each directed edge ``[E]``."""
    cols: Tensor
    """Sending vertex of each directed edge ``[E]``."""
    weights: Tensor
    """``1 / degree(rows)`` per edge ``[E]``."""


def uniform_laplacian(faces: Tensor, num_vertices: int, like: Tensor) -> Adjacency:
    """Row-normalized adjacency ``A [M, M]`` of the mesh graph: ``A @ x`` averages each vertex's neighbours (an
    isolated vertex averages to zero)."""
    i = torch.cat([faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]])
    j = torch.cat([faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]])
    key = torch.unique(i * num_vertices + j)  # each undirected edge once per direction
    i, j = key // num_vertices, key % num_vertices
    deg = torch.bincount(i, minlength=num_vertices).to(like.dtype)
    return Adjacency(i.to(like.device), j.to(like.device), (1.0 / deg[i]).to(like.device))


def neighbour_mean(values: Tensor, adjacency: Adjacency) -> Tensor:
    """``A @ values`` for per-vertex ``values [M, C]``: the mean of each vertex's neighbours."""
    rows, cols, w = adjacency
    out = torch.zeros_like(values)
    return out.index_add_(0, rows, values[cols] * w.to(values.dtype)[:, None])


def smooth(values: Tensor, adjacency: Adjacency, iterations: int, weight: float = 0.5) -> Tensor:
    """``iterations`` steps of ``x <- x + weight * (mean of neighbours - x)`` on per-vertex ``values [M, C]``."""
    for _ in range(int(iterations)):
        values = values + weight * (neighbour_mean(values, adjacency) - values)
    return values


__all__ = ["marching_cubes", "drop_small_components", "compact", "decimate", "vertex_normals", "Adjacency",
           "uniform_laplacian", "neighbour_mean", "smooth"]
