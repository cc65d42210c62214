"""E4D_ExtractMesh4D: 4D Gaussians -> an animated GLB (fixed topology) + per-time meshes, and core MESH per time."""
from __future__ import annotations

import inspect
import os

import torch
from comfy_api.latest import io

from . import _common as C
from . import _devices as D
from . import _paths as P
from ._widgets import field_input
from .types import E4D_GAUSSIANS4D

CATEGORY = "Efficient4D/export"
SEQUENCE_CHOICES = ("glb", "ply", "obj", "none")
UI_KEY = "e4d_mesh"
"""The node's UI output naming the animated GLB for the in-node mesh player (web/js/e4d_preview.js)."""


def _mesh_output() -> list:
    """The core MESH output where this ComfyUI has the type (``io.Mesh``), else nothing."""
    if not hasattr(io, "Mesh"):
        return []
    return [io.Mesh.Output(display_name="MESH",
                           tooltip="The mesh at each time as a core MESH batch (glTF +Y-up axes, like the GLB): "
                                   "connect to Save GLB or the mesh post-processing nodes.")]


def core_mesh(seq):
    """A core ``MESH`` batch of the sequence, in glTF's +Y-up axes: ``vertices [T, M, 3]``, ``faces [T, F, 3]``;
    per-time meshes of different sizes are zero-padded (with ``vertex_counts``/``face_counts`` where the core type
    takes them, else the padded faces are degenerate ``(0, 0, 0)`` triangles)."""
    from comfy_api.latest import Types

    from e4d.mesh.glb import to_y_up

    T = len(seq)
    m = max(int(v.shape[0]) for v in seq.vertices)
    f = max(int(x.shape[0]) for x in seq.faces)
    verts = torch.zeros(T, m, 3)
    faces = torch.zeros(T, f, 3, dtype=torch.long)
    colors = torch.zeros(T, m, 3)
    for b in range(T):
        n, k = seq.vertices[b].shape[0], seq.faces[b].shape[0]
        verts[b, :n] = torch.from_numpy(to_y_up(seq.vertices[b].numpy()))
        faces[b, :k] = seq.faces[b]
        colors[b, :n] = seq.colors[b]
    params = inspect.signature(Types.MESH.__init__).parameters
    extra = {}
    if "vertex_colors" in params:
        extra["vertex_colors"] = colors
    if "vertex_counts" in params and not seq.fixed_topology:
        extra["vertex_counts"] = torch.tensor([int(v.shape[0]) for v in seq.vertices])
        extra["face_counts"] = torch.tensor([int(x.shape[0]) for x in seq.faces])
    return Types.MESH(verts, faces, **extra)


class ExtractMesh4D(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from e4d.mesh import MeshConfig as M

        return io.Schema(
            node_id="E4D_ExtractMesh4D",
            display_name="Extract Mesh 4D (Efficient4D)",
            category=CATEGORY,
            description="Turn the 4D Gaussians into triangle meshes: depth renders from many cameras are fused into "
                        "a watertight surface per time (vertex-coloured). With fixed topology one mesh is extracted "
                        "at the reference time and moved with the Gaussians' motion: one animated GLB (morph "
                        "targets + animation) for Blender, three.js, game engines or core Preview 3D & Animation; "
                        "once it has run, the node plays that GLB itself (three.js). Also writes one mesh file per "
                        "time.",
            is_output_node=True,
            inputs=[
                E4D_GAUSSIANS4D.Input("gaussians", tooltip="Fitted (or loaded) 4D Gaussians."),
                io.Int.Input("times", default=16, min=1, max=1000,
                             tooltip="Number of evenly spaced times over the clip [0, 1] (16 = the view matrix's)."),
                field_input(M, "resolution", min=16, max=1024, step=16),
                field_input(M, "views", min=4, max=1024),
                field_input(M, "view_size", min=16, max=4096, step=16),
                field_input(M, "fixed_topology"),
                field_input(M, "reference_time", min=0.0, max=1.0, step=0.01),
                field_input(M, "smoothing", min=0, max=100),
                field_input(M, "refit_iterations", min=0, max=50),
                field_input(M, "rigidity", min=0.001, max=1000.0, step=0.001),
                field_input(M, "decimate_faces", min=0, max=10_000_000, step=1000),
                field_input(M, "truncation", min=1.0, max=32.0, step=0.5),
                field_input(M, "alpha_threshold", min=0.01, max=0.99, step=0.01),
                field_input(M, "track_neighbours", min=1, max=256),
                field_input(M, "min_component", min=0.0, max=0.99, step=0.01),
                io.Float.Input("fps", default=8.0, min=0.1, max=120.0, step=0.5,
                               tooltip="Time steps per second of the GLB's animation."),
                io.Combo.Input("sequence_format", options=list(SEQUENCE_CHOICES), default="glb",
                               tooltip="Format of the per-time mesh files (<prefix>_NNNNN_meshes/mesh_XXXX.*); "
                                       "none = only the animated GLB."),
                io.String.Input("filename_prefix", default="efficient4d/mesh",
                                tooltip="Name prefix inside the output folder (sub-folders allowed); a counter is "
                                        "appended."),
                # last, so workflows saved before it keep their widget values in place
                field_input(M, "texture_size", min=0, max=8192, step=64),
            ],
            outputs=[
                io.String.Output(display_name="glb_path",
                                 tooltip="The animated GLB, relative to the output folder ('' without fixed "
                                         "topology): connect to core Preview 3D & Animation's model_file."),
                io.String.Output(display_name="sequence_folder",
                                 tooltip="Folder of the per-time mesh files ('' with sequence_format none)."),
                *_mesh_output(),
            ],
        )

    @classmethod
    def execute(cls, gaussians, times: int = 16, resolution: int = 256, views: int = 48, view_size: int = 384,
                fixed_topology: bool = True, reference_time: float = 0.5, smoothing: int = 3,
                refit_iterations: int = 4, rigidity: float = 0.001, decimate_faces: int = 50_000,
                truncation: float = 3.0, alpha_threshold: float = 0.5, track_neighbours: int = 16,
                min_component: float = 0.01, fps: float = 8.0, sequence_format: str = "glb",
                filename_prefix: str = "efficient4d/mesh", texture_size: int = 0) -> io.NodeOutput:
        import folder_paths

        from e4d.mesh import MeshConfig, extract_mesh_4d, write_animated_glb, write_mesh_sequence

        cfg = MeshConfig(resolution=int(resolution), views=int(views), view_size=int(view_size),
                         truncation=float(truncation), alpha_threshold=float(alpha_threshold),
                         fixed_topology=bool(fixed_topology), reference_time=float(reference_time),
                         smoothing=int(smoothing), refit_iterations=int(refit_iterations),
                         rigidity=float(rigidity),
                         track_neighbours=int(track_neighbours), decimate_faces=int(decimate_faces),
                         min_component=float(min_component), texture_size=int(texture_size)).validate()
        if sequence_format not in SEQUENCE_CHOICES:
            raise ValueError(f"sequence_format must be one of {SEQUENCE_CHOICES}, got {sequence_format!r}")
        if not cfg.fixed_topology and sequence_format == "none":
            raise ValueError("with fixed_topology off there is no animated GLB, so sequence_format 'none' would "
                             "write nothing; choose glb, ply or obj")
        folder, name, counter, _ = P.output_target(filename_prefix)  # checks the prefix before the long work
        g = gaussians.detach().to(D.get_torch_device())
        n = int(times)
        t = torch.linspace(0.0, 1.0, n) if n > 1 else torch.zeros(1)
        seq = extract_mesh_4d(g, t, cfg, callback=C.progress_callback(2 * n))
        stem = folder / f"{name}_{counter:05}_"
        out_dir = folder_paths.get_output_directory()
        glb_rel, seq_dir = "", ""
        if seq.fixed_topology:
            glb = write_animated_glb(seq, stem.with_name(stem.name + ".glb"), fps=float(fps))
            glb_rel = os.path.relpath(glb, out_dir).replace(os.sep, "/")
        if sequence_format != "none":
            seq_dir = str(stem.with_name(stem.name + "meshes"))
            write_mesh_sequence(seq, seq_dir, (sequence_format,))
        outputs = [glb_rel, seq_dir]
        if hasattr(io, "Mesh"):
            outputs.append(core_mesh(seq))
        ui = {"text": [p for p in (glb_rel, seq_dir) if p]}
        if glb_rel:  # web/js/e4d_preview.js plays it in the node (three.js), fetched through /view
            sub, _, fname = glb_rel.rpartition("/")
            ui[UI_KEY] = [{"filename": fname, "subfolder": sub, "type": "output"}]
        return io.NodeOutput(*outputs, ui=ui)


NODES = [ExtractMesh4D]
