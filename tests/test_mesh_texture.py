"""The optional baked UV texture (e4d.mesh.texture, xatlas) on the analytic moving sphere, CPU.

The sphere's colour is analytic (red at the top, blue at the bottom: tests/mesh_scene.py), so every texel can be
checked against the colour of the surface point it maps to.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from mesh_scene import RADIUS, moving_sphere
from e4d.mesh import MeshConfig, extract_mesh_4d, read_animated_glb, write_animated_glb
from e4d.mesh.texture import rasterize_uv

CFG = MeshConfig(resolution=32, views=8, view_size=40, decimate_faces=0, texture_size=128)


def _need_xatlas() -> None:
    """xatlas is an optional extra: skipped where it is missing, except in CI (tests/requirements-ci.txt has it)."""
    try:
        import xatlas  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("xatlas missing in CI (tests/requirements-ci.txt installs it)")
        pytest.skip("xatlas not installed (pip install xatlas)")


@pytest.fixture(scope="module")
def textured():
    _need_xatlas()
    return extract_mesh_4d(moving_sphere(), [0.0, 1.0], CFG, backend="reference")


def test_rasterize_uv_covers_two_triangles_exactly():
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    face, bary = rasterize_uv(uv, faces, 8, 12)
    assert bool((face >= 0).all()), "the two triangles tile the square: every texel centre is covered"
    torch.testing.assert_close(bary.sum(-1), torch.ones(96))
    centre = (bary[:, :, None] * uv[faces[face]]).sum(1)  # interpolated uv = the texel centre
    ys, xs = torch.meshgrid(torch.arange(8), torch.arange(12), indexing="ij")
    expect = torch.stack([(xs.flatten() + 0.5) / 12, (ys.flatten() + 0.5) / 8], -1)
    torch.testing.assert_close(centre, expect)
    upper = expect[:, 1] > expect[:, 0]  # above the diagonal (0,0)-(1,1): the second triangle
    assert bool((face[upper] == 1).all() and (face[~upper] == 0).all())


def test_texture_colours_match_the_analytic_sphere(textured):
    tex = textured.texture
    assert tex is not None and textured.info["texture"] == list(tex.image.shape[:2])
    assert bool((tex.vmapping[tex.faces] == textured.faces[0]).all()), "the atlas keeps the mesh's triangles"
    h, w = tex.image.shape[:2]
    face, bary = rasterize_uv(tex.uv, tex.faces, h, w)
    hit = face >= 0
    assert float(hit.float().mean()) > 0.3, "the charts should fill a good part of the atlas"
    v = textured.vertices[textured.reference_index]
    points = (v[tex.vmapping[tex.faces[face[hit]]]] * bary[hit][..., None]).sum(1)
    top = (points[:, 2] - v[:, 2].mean()) / RADIUS
    texels = tex.image.view(-1, 3)[hit]
    assert float((texels[:, 0] - (0.5 + 0.4 * top).clamp(0, 1)).abs().mean()) < 0.06
    assert float((texels[:, 1] - 0.3).abs().mean()) < 0.03
    # the texture agrees with the vertex colours where they are (same renders, same weighting)
    vc = textured.colors[textured.reference_index][tex.vmapping]
    px = (tex.uv * torch.tensor([w, h])).long().clamp(max=torch.tensor([w - 1, h - 1]))
    at_vertices = tex.image[px[:, 1], px[:, 0]]
    assert float((at_vertices - vc).abs().mean()) < 0.05


def test_textured_glb_round_trip(textured, tmp_path):
    path = write_animated_glb(textured, tmp_path / "tex.glb", fps=2.0)
    back = read_animated_glb(path)
    tex = textured.texture
    m2 = int(tex.vmapping.shape[0])
    assert back.positions.shape == (2, m2, 3)  # seams split vertices, the same way in every frame
    expect = torch.stack(textured.vertices)[:, tex.vmapping].numpy()
    np.testing.assert_allclose(back.positions, expect, atol=1e-5)
    np.testing.assert_array_equal(back.faces, tex.faces.numpy())
    assert back.colors is None, "a textured mesh has no COLOR_0 (glTF would multiply the two)"
    np.testing.assert_allclose(back.uv, tex.uv.numpy())
    assert back.texture.shape == tuple(tex.image.shape)
    assert np.abs(back.texture.astype(np.float64) / 255 - tex.image.numpy()).max() <= 0.5 / 255 + 1e-6
    import trimesh

    (geom,) = trimesh.load(str(path)).geometry.values()  # an independent reader finds the uvs and the image
    assert geom.visual.uv.shape == (m2, 2)
    assert geom.visual.material.baseColorTexture.size == (tex.image.shape[1], tex.image.shape[0])


def test_texture_needs_fixed_topology_and_names_the_fix():
    with pytest.raises(ValueError, match="fixed_topology"):
        CFG.replace(fixed_topology=False).validate()
    with pytest.raises(ValueError, match="texture_size"):
        CFG.replace(texture_size=8).validate()


def test_missing_xatlas_says_how_to_install(monkeypatch):
    from e4d.mesh.texture import uv_atlas

    monkeypatch.setitem(sys.modules, "xatlas", None)
    with pytest.raises(ImportError, match="pip install xatlas"):
        uv_atlas(torch.zeros(3, 3), torch.tensor([[0, 1, 2]]), 64)


def test_cli_mesh_texture_reaches_the_config(tmp_path, capsys):
    """``python -m e4d export --mesh --mesh-texture N`` sets MeshConfig.texture_size (checked before any work)."""
    from e4d.cli import main
    from e4d.export import save_native

    model = tmp_path / "sphere.e4d.safetensors"
    save_native(moving_sphere(n=50), model)
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "exp"), "--count", "2", "--mesh",
                 "--mesh-independent", "--mesh-texture", "256"]) == 2
    assert "texture_size=256" in capsys.readouterr().err
