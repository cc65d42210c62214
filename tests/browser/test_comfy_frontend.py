"""The player inside the real ComfyUI frontend of every lane (``comfy_frontend`` of conftest.py: ComfyUI 0.3.75 with
comfyui-frontend-package 1.32.9, ComfyUI 0.30.0 with 1.47.12): load a workflow (Load 4D Gaussians -> Preview 4D)
through the frontend's own ``app.loadGraphData``, queue it through ``app.queuePrompt``, and check that the player
appears in the node's DOM widget and draws the object. Screenshots land in $E4D_ARTIFACTS/browser.
"""
from __future__ import annotations

import json

import pytest

from comfy_tiny import error_text
from e4d_comfyui import APP_LOADED, gaussians_into, queue_from_frontend
from e4d_images import foreground, png_to_array

pytestmark = [pytest.mark.browser, pytest.mark.comfy]


def _workflow(native: str) -> dict:
    """Load 4D Gaussians -> Preview 4D."""
    return gaussians_into(native, "E4D_Preview4D", [520, 620], ["white", False, 3.0, 300000])


def test_preview_node_plays_inside_comfyui(comfy_frontend, chromium_path, artifacts_dir):
    from e4d_cdp import Chromium

    server = comfy_frontend
    with Chromium(chromium_path, width=1280, height=800, timeout=120) as b:
        b.goto(server.url + "/")
        b.wait_for(APP_LOADED, timeout=120)
        exts = b.evaluate("window.app.extensions.map((e) => e.name)")
        assert "efficient4d.preview" in exts, f"extension not registered; extensions: {exts}; console: {b.console[-15:]}"
        b.evaluate(f"window.app.loadGraphData({json.dumps(_workflow(server.native))})")
        b.wait_for("window.app.graph.getNodeById(2)?.e4dPlayer !== undefined", timeout=30)
        b.evaluate("(() => { const c = window.app.canvas; c.ds.scale = 1; c.ds.offset = [40, 110];"
                   " c.setDirty(true, true); })()")
        previews = server.base / "temp" / "efficient4d"
        old_previews = set(previews.glob("e4d_preview_*.e4dc"))  # the template test shares this server
        try:
            entry = queue_from_frontend(b, server, timeout=180)
            assert entry["status"]["status_str"] == "success", error_text(entry)
            b.wait_for("window.app.graph.getNodeById(2).e4dPlayer.visible > 0", timeout=60)
        except Exception as e:
            b.screenshot(artifacts_dir / f"comfyui_{server.lane}_failed.png")
            raise AssertionError(f"the player never drew on ComfyUI {server.lane}: {e}\nserver log:\n"
                                 f"{server.log_tail(40)}\nconsole: {b.console[-20:]}") from e
        b.evaluate("(async () => { const p = window.app.graph.getNodeById(2).e4dPlayer; p.pause(); p.setTime(0.5);"
                   " await p.whenSorted(); p.renderNow({finish: true}); })()")
        count = b.evaluate("window.app.graph.getNodeById(2).e4dPlayer.count")
        assert count == 3000
        b.screenshot(artifacts_dir / f"comfyui_{server.lane}_page.png")
        rect = b.evaluate("(() => { const r = window.app.graph.getNodeById(2).e4dPlayer.canvas.getBoundingClientRect();"
                          " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
        assert rect["width"] > 100 and rect["height"] > 100, f"player canvas too small or hidden: {rect}"
        img = png_to_array(b.screenshot(artifacts_dir / f"comfyui_{server.lane}_player.png", clip=rect))
        fg = foreground(img)
        assert 0.005 < fg.mean() < 0.6, f"player canvas in the node: {fg.mean():.3%} drawn (object missing?)"
        # Orbiting inside the node turns the player's camera and leaves the graph canvas where it was.
        before = b.evaluate("[window.app.graph.getNodeById(2).e4dPlayer._cam.az, ...window.app.canvas.ds.offset]")
        cx, cy = rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2
        b.drag(cx, cy, cx + 120, cy)
        after = b.evaluate("[window.app.graph.getNodeById(2).e4dPlayer._cam.az, ...window.app.canvas.ds.offset]")
        assert abs(after[0] - before[0]) > 20, f"drag in the node did not orbit: {before} -> {after}"
        assert after[1:] == before[1:], f"the drag also panned the graph: {before[1:]} -> {after[1:]}"
        b.evaluate("(async () => { const p = window.app.graph.getNodeById(2).e4dPlayer;"
                   " await p.whenSorted(); p.renderNow({finish: true}); })()")
        b.screenshot(artifacts_dir / f"comfyui_{server.lane}_player_orbited.png", clip=rect)
        # the file came through ComfyUI's /view from its temp folder
        files = set(previews.glob("e4d_preview_*.e4dc")) - old_previews
        assert len(files) == 1, files
