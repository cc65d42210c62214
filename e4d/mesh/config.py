"""Settings of the 4D mesh extraction (:func:`e4d.mesh.extract_mesh_4d`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional


@dataclass
class MeshConfig:
    """How the 4D Gaussians become a triangle mesh per time (and one fixed-topology animated mesh)."""

    resolution: int = 256
    """Voxels along the longest side of the fusion grid (the object's box); the mesh's detail scale."""
    views: int = 48
    """Number of depth/colour cameras spread evenly over the sphere around the object (fused per time)."""
    view_size: int = 384
    """Square image size in pixels of those cameras."""
    truncation: float = 3.0
    """TSDF truncation band, in voxels: depth observations further than this behind a voxel do not update it."""
    alpha_threshold: float = 0.5
    """Rendered opacity above which a pixel belongs to the object (its silhouette); below it, space is carved."""
    fixed_topology: bool = True
    """One mesh extracted at ``reference_time`` and moved through time (an animatable mesh); off = an independent
    mesh per time (each with its own vertices and faces)."""
    reference_time: float = 0.5
    """Normalized time of the mesh that is tracked (the requested time nearest to it is used)."""
    smoothing: int = 3
    """Laplacian smoothing iterations of each tracking step's predicted displacements (0 = raw Gaussian motion)."""
    substeps: int = 4
    """Sub-steps over which the Gaussians' velocity field is integrated between two requested times (each uses
    the Gaussians alive at that moment)."""
    refit_iterations: int = 4
    """As-rigid-as-possible ICP iterations registering the tracked mesh onto each time's fused surface (0 = the
    Gaussians' motion alone)."""
    rigidity: float = 0.001
    """Weight of keeping the reference mesh's local shape (as-rigid-as-possible) against fitting each time's
    surface in that registration (see :class:`e4d.mesh.register.RegisterConfig`); low: the mesh follows
    articulations, the coarse proxy carries the large motions."""
    coarse_faces: int = 2000
    """Faces of a coarse proxy of the mesh, registered stiffly first each step to carry large motions to the mesh
    (0 = none; used only when the mesh has at least twice as many faces)."""
    coarse_iterations: int = 10
    """Registration iterations of the coarse proxy per time."""
    coarse_rigidity: float = 0.1
    """Rigidity of the coarse proxy's registration."""
    track_neighbours: int = 16
    """Gaussians (nearest to a vertex) whose motion a vertex follows."""
    decimate_faces: int = 50_000
    """Target triangle count after marching cubes (needs the ``fast-simplification`` package); 0 = keep all."""
    min_component: float = 0.01
    """Connected pieces with fewer than this fraction of the mesh's faces are dropped (floaters)."""
    texture_size: int = 0
    """Side in texels of a colour texture baked over a UV atlas of the fixed-topology mesh (needs the optional
    ``xatlas`` package: ``pip install xatlas``); it holds the renders' detail between vertices. 0 = vertex colours
    only."""

    def validate(self) -> "MeshConfig":
        """Raise ValueError naming the field, its value and the allowed range; returns self."""
        rules = [
            ("resolution", 16 <= self.resolution <= 1024, "16..1024"),
            ("views", 4 <= self.views <= 1024, "4..1024"),
            ("view_size", 16 <= self.view_size <= 4096, "16..4096"),
            ("truncation", 1.0 <= self.truncation <= 32.0, "1..32 voxels"),
            ("alpha_threshold", 0.0 < self.alpha_threshold < 1.0, "(0, 1)"),
            ("reference_time", 0.0 <= self.reference_time <= 1.0, "0..1"),
            ("smoothing", 0 <= self.smoothing <= 100, "0..100"),
            ("substeps", 1 <= self.substeps <= 64, "1..64"),
            ("refit_iterations", 0 <= self.refit_iterations <= 50, "0..50"),
            ("rigidity", 0.0 < self.rigidity <= 1000.0, "(0, 1000]"),
            ("coarse_faces", self.coarse_faces == 0 or self.coarse_faces >= 100, "0 (off) or >= 100"),
            ("coarse_iterations", 0 <= self.coarse_iterations <= 100, "0..100"),
            ("coarse_rigidity", 0.0 < self.coarse_rigidity <= 1000.0, "(0, 1000]"),
            ("track_neighbours", 1 <= self.track_neighbours <= 256, "1..256"),
            ("decimate_faces", self.decimate_faces == 0 or self.decimate_faces >= 100, "0 (off) or >= 100"),
            ("min_component", 0.0 <= self.min_component < 1.0, "[0, 1)"),
            ("texture_size", self.texture_size == 0 or 16 <= self.texture_size <= 8192, "0 (off) or 16..8192"),
        ]
        for name, ok, allowed in rules:
            if not ok:
                raise ValueError(f"MeshConfig.{name} must be in {allowed}, got {getattr(self, name)!r}")
        if self.texture_size and not self.fixed_topology:
            raise ValueError(f"MeshConfig.texture_size={self.texture_size} bakes the texture of the fixed-topology "
                             "mesh; turn fixed_topology on, or set texture_size to 0")
        return self

    def replace(self, **changes) -> "MeshConfig":
        """A copy with ``changes`` applied (unknown names raise TypeError)."""
        return dataclasses.replace(self, **changes)


def reduced_for_cpu(config: Optional[MeshConfig] = None) -> MeshConfig:
    """Small settings for CPU smoke runs and tests (coarse grid, few small views)."""
    base = config or MeshConfig()
    return base.replace(resolution=48, views=16, view_size=64, decimate_faces=0)


__all__ = ["MeshConfig", "reduced_for_cpu"]
