"""E4D_ExtractMesh4D called through ``execute`` with ComfyUI's folders redirected (tiny sphere scene, CPU)."""
from __future__ import annotations

import pytest
import torch

from comfy_env import comfy, comfy_dirs, require_comfy  # noqa: F401  (fixtures)

require_comfy()

from comfy_api.latest import io  # noqa: E402

from mesh_scene import moving_sphere  # noqa: E402
from e4d.mesh import MeshConfig, read_animated_glb  # noqa: E402
from nodes.mesh import NODES, ExtractMesh4D  # noqa: E402

TINY = dict(times=2, resolution=32, views=8, view_size=40, decimate_faces=0)


def test_schema_defaults_come_from_mesh_config():
    schema = ExtractMesh4D.GET_SCHEMA()
    assert schema.node_id == "E4D_ExtractMesh4D" and NODES == [ExtractMesh4D]
    widgets = {i.id: i for i in schema.inputs}
    cfg = MeshConfig()
    for name in ("resolution", "views", "view_size", "fixed_topology", "reference_time", "smoothing",
                 "refit_iterations", "rigidity", "decimate_faces"):
        assert widgets[name].default == getattr(cfg, name), name
    assert widgets["filename_prefix"].default == "efficient4d/mesh"
    assert len(schema.outputs) == (3 if hasattr(io, "Mesh") else 2)


def test_execute_writes_glb_and_sequence(comfy_dirs):
    out = ExtractMesh4D.execute(moving_sphere(), sequence_format="ply", filename_prefix="e4d/obj", **TINY)
    glb_rel, folder = out.result[:2]
    glb = comfy_dirs["output"] / glb_rel
    assert glb_rel == "e4d/obj_00001_.glb" and glb.is_file()
    back = read_animated_glb(glb)
    assert back.positions.shape[0] == 2
    assert sorted(p.name for p in (comfy_dirs["output"] / "e4d" / "obj_00001_meshes").iterdir()) == [
        "mesh_0000.ply", "mesh_0001.ply"]
    assert folder.endswith("obj_00001_meshes")
    # the in-node mesh player (web/js/e4d_preview.js) fetches this entry through /view
    assert out.ui["e4d_mesh"] == [{"filename": "obj_00001_.glb", "subfolder": "e4d", "type": "output"}]
    if hasattr(io, "Mesh"):
        mesh = out.result[2]
        assert mesh.vertices.shape == (2, back.positions.shape[1], 3) and mesh.faces.shape[0] == 2
        # glTF +Y-up axes, as in the GLB
        torch.testing.assert_close(mesh.vertices[1, :, 1], torch.from_numpy(back.positions[1, :, 2]))


def test_refuses_a_prefix_outside_the_output_folder_before_working(comfy_dirs):
    with pytest.raises(ValueError, match="filename_prefix"):
        ExtractMesh4D.execute(moving_sphere(), filename_prefix="../escape", **TINY)
    assert not any(comfy_dirs["output"].iterdir())


def test_texture_size_bakes_a_textured_glb(comfy_dirs):
    pytest.importorskip("xatlas")  # optional extra; CI installs it (tests/test_mesh_texture.py fails there without)
    out = ExtractMesh4D.execute(moving_sphere(), sequence_format="none", filename_prefix="e4d/tex",
                                texture_size=64, **TINY)
    back = read_animated_glb(comfy_dirs["output"] / out.result[0])
    assert back.texture is not None and back.uv is not None and back.colors is None
