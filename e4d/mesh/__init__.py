"""Meshes from fitted 4D Gaussians: per-time watertight surfaces and one fixed-topology animated mesh.

* :func:`extract_mesh_4d` (:mod:`e4d.mesh.extract`): depth/colour renders -> TSDF fusion -> marching cubes, and the
  reference mesh tracked through time with the Gaussians' motion; returns a :class:`MeshSequence`.
* :func:`write_animated_glb` / :func:`write_mesh_sequence` (:mod:`e4d.mesh.glb`): one animated GLB (morph targets +
  animation + vertex colours, or a baked UV texture) and per-time GLB/PLY/OBJ files, written atomically.
* :func:`bake_texture` (:mod:`e4d.mesh.texture`): the optional UV atlas (xatlas) and colour texture of the
  fixed-topology mesh (``MeshConfig.texture_size``).
* :func:`cli_export` (:mod:`e4d.mesh.cli`): a saved model file -> those files.

Importing is cheap: scikit-image, pygltflib, trimesh, fast-simplification and xatlas are imported when used.
"""
from .cli import cli_export
from .config import MeshConfig, reduced_for_cpu
from .extract import MeshSequence, extract_mesh_4d
from .glb import read_animated_glb, write_animated_glb, write_mesh_sequence
from .texture import UVTexture, bake_texture

__all__ = ["MeshConfig", "reduced_for_cpu", "MeshSequence", "extract_mesh_4d", "write_animated_glb",
           "read_animated_glb", "write_mesh_sequence", "cli_export", "UVTexture", "bake_texture"]
