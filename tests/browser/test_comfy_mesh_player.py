"""The mesh player inside the real ComfyUI frontend of every lane (``comfy_frontend`` of conftest.py): a workflow
Load 4D Gaussians -> Extract Mesh 4D (tiny settings, CPU) is loaded through ``app.loadGraphData`` and queued through
``app.queuePrompt``; the node's result opens the animated GLB it wrote in three.js inside the node (through /view),
which must show the file's frames and vertex positions and draw the object. Screenshots land in
$E4D_ARTIFACTS/browser.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from comfy_tiny import error_text
from e4d_comfyui import APP_LOADED, gaussians_into, queue_from_frontend
from e4d_images import foreground, png_to_array

pytestmark = [pytest.mark.browser, pytest.mark.comfy]

TIMES = 3
PREFIX = "e4d_ci_mesh/blob"


def _workflow(native: str, outputs: list) -> dict:
    """Load 4D Gaussians -> Extract Mesh 4D with CI-sized settings."""
    widgets = [TIMES, 32, 8, 40, True, 0.5, 3, 4, 0.001, 0, 3.0, 0.5, 16, 0.01, 4.0, "none", PREFIX, 0]
    return gaussians_into(native, "E4D_ExtractMesh4D", [420, 560], widgets, outputs)


def test_extract_mesh_node_plays_its_glb_inside_comfyui(comfy_frontend, chromium_path, artifacts_dir):
    from e4d.mesh.glb import read_animated_glb, to_y_up
    from e4d_cdp import Chromium

    server = comfy_frontend
    info = server.get("/object_info/E4D_ExtractMesh4D")["E4D_ExtractMesh4D"]
    outputs = list(zip(info["output_name"], info["output"]))
    node = "window.app.graph.getNodeById(2)"
    with Chromium(chromium_path, width=1280, height=800, timeout=120) as b:
        b.goto(server.url + "/")
        b.wait_for(APP_LOADED, timeout=120)
        b.evaluate(f"window.app.loadGraphData({json.dumps(_workflow(server.native, outputs))})")
        b.evaluate("(() => { const c = window.app.canvas; c.ds.scale = 1; c.ds.offset = [40, -260];"
                   " c.setDirty(true, true); })()")  # the node is tall: scroll its player into the window
        try:
            entry = queue_from_frontend(b, server, timeout=180)
            assert entry["status"]["status_str"] == "success", error_text(entry)
            b.wait_for(f"{node}.e4dMeshLoading !== undefined", timeout=30)
            b.evaluate(f"{node}.e4dMeshLoading")
            assert b.evaluate(f"{node}.e4dMeshPlayer.frames") == TIMES
        except Exception as e:
            b.screenshot(artifacts_dir / f"comfyui_mesh_{server.lane}_failed.png")
            raise AssertionError(f"the mesh player never showed the GLB on ComfyUI {server.lane}: {e}\nserver log:\n"
                                 f"{server.log_tail(40)}\nconsole: {b.console[-20:]}") from e
        glbs = sorted((server.base / "output").glob(f"{PREFIX}_*.glb"))
        assert glbs, "the node wrote no GLB"
        back = read_animated_glb(glbs[-1])
        M = back.positions.shape[1]
        assert b.evaluate(f"{node}.e4dMeshPlayer.vertices") == M
        b.evaluate(f"(() => {{ const p = {node}.e4dMeshPlayer; p.pause(); p.setTime(0.5); p.renderNow(); }})()")
        shown = np.asarray(b.evaluate(f"Array.from({node}.e4dMeshPlayer.vertexPositions())")).reshape(M, 3)
        err = np.abs(shown - to_y_up(back.positions[1].astype(np.float64))).max()
        assert err < 1e-5, f"three.js in ComfyUI shows vertices {err:.2e} away from the file's middle frame"
        b.screenshot(artifacts_dir / f"comfyui_mesh_{server.lane}_page.png")
        rect = b.evaluate(f"(() => {{ const r = {node}.e4dMeshPlayer.canvas.getBoundingClientRect();"
                          " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
        assert rect["width"] > 100 and rect["height"] > 100, f"mesh player canvas too small or hidden: {rect}"
        fg = foreground(png_to_array(b.screenshot(artifacts_dir / f"comfyui_mesh_{server.lane}_player.png",
                                                  clip=rect)))
        assert 0.005 < fg.mean() < 0.6, f"mesh player canvas in the node: {fg.mean():.3%} drawn (object missing?)"
        errors = [m for m in b.console if "Efficient4D" in m or "Multiple instances of Three.js" in m]
        assert not errors, f"console: {errors}"
