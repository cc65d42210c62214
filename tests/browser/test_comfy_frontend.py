"""The player inside the real ComfyUI frontend (comfyui-frontend-package 1.32.9, served by ComfyUI 0.3.75 started
WITHOUT --front-end-root): load a workflow (Load 4D Gaussians -> Preview 4D) through the frontend's own
``app.loadGraphData``, queue it through ``app.queuePrompt``, and check that the player appears in the node's DOM
widget and draws the object. Screenshots land in $E4D_ARTIFACTS/browser.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from e4d_images import foreground, png_to_array

pytestmark = [pytest.mark.browser, pytest.mark.comfy]

REPO = Path(__file__).resolve().parents[2]
NATIVE = "blob.e4d.safetensors"


def _start_with_frontend(base: Path, timeout: float = 240.0):
    """Like comfy_harness.start_server, but serving the installed comfyui-frontend-package (no --front-end-root)."""
    from comfy_env import comfy_root, stubs_dir
    from comfy_harness import PACK_NAME, ComfyServer, free_port

    root = comfy_root()
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user/default"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_NAME
    link.symlink_to(REPO, target_is_directory=True)
    # A returning user: no first-run template browser over the canvas.
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(
        {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False,
         "Comfy.Workflow.ShowMissingNodesWarning": False}))
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    port = free_port()
    log_path = base / "server.log"
    # The harness's launcher: a torchvision stub that only ComfyUI's own start-up sees (tests/comfy_launch.py).
    launcher = REPO / "tests" / "comfy_launch.py"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(launcher), str(root), str(stubs_dir()), "--cpu", "--listen",
                                 "127.0.0.1", "--port", str(port), "--disable-auto-launch", "--disable-api-nodes",
                                 "--base-directory", str(base)], cwd=str(root), env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    server = ComfyServer(base, port, proc, log_path)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        server.check_alive()
        if f"Cannot import {link}" in server.log_text():
            server.stop()
            raise RuntimeError(f"ComfyUI could not import the pack; log:\n{server.log_tail(60)}")
        try:
            if server.request("/system_stats", timeout=2.0)[0] == 200:
                return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    server.stop()
    raise TimeoutError(f"ComfyUI did not start in {timeout:.0f} s; log:\n{server.log_tail(60)}")


@pytest.fixture(scope="module")
def comfy_frontend(tmp_path_factory):
    from comfy_env import require_comfy

    require_comfy()
    if importlib.util.find_spec("comfyui_frontend_package") is None:
        msg = "comfyui-frontend-package==1.32.9 not installed (tests/requirements-ci.txt)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    from e4d.export import save_native
    from e4d_scene import moving_blob

    base = tmp_path_factory.mktemp("comfy_fe")
    (base / "input").mkdir()
    save_native(moving_blob(3000), base / "input" / NATIVE)
    server = _start_with_frontend(base)
    yield server
    server.stop()


def _workflow() -> dict:
    """UI-format (litegraph) workflow: Load 4D Gaussians -> Preview 4D."""
    return {
        "last_node_id": 2, "last_link_id": 1, "version": 0.4, "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
        "nodes": [
            {"id": 1, "type": "E4D_Load4DGaussians", "pos": [20, 60], "size": [320, 110], "flags": {}, "order": 0,
             "mode": 0, "inputs": [], "properties": {},
             "outputs": [{"name": "gaussians", "type": "E4D_GAUSSIANS4D", "links": [1], "slot_index": 0}],
             "widgets_values": [NATIVE, ""]},
            {"id": 2, "type": "E4D_Preview4D", "pos": [380, 40], "size": [520, 620], "flags": {}, "order": 1,
             "mode": 0, "inputs": [{"name": "gaussians", "type": "E4D_GAUSSIANS4D", "link": 1}], "outputs": [],
             "properties": {}, "widgets_values": ["white", False, 3.0, 300000]},
        ],
        "links": [[1, 1, 0, 2, 0, "E4D_GAUSSIANS4D"]], "groups": [], "config": {},
    }


def test_preview_node_plays_inside_comfyui(comfy_frontend, chromium_path, artifacts_dir):
    from e4d_cdp import Chromium

    server = comfy_frontend
    with Chromium(chromium_path, width=1280, height=800, timeout=120) as b:
        b.goto(server.url + "/")
        b.wait_for("window.app && window.app.graph && window.app.extensionManager !== undefined", timeout=120)
        exts = b.evaluate("window.app.extensions.map((e) => e.name)")
        assert "efficient4d.preview" in exts, f"extension not registered; extensions: {exts}; console: {b.console[-15:]}"
        b.evaluate(f"window.app.loadGraphData({json.dumps(_workflow())})")
        b.wait_for("window.app.graph.getNodeById(2)?.e4dPlayer !== undefined", timeout=30)
        b.evaluate("(() => { const c = window.app.canvas; c.ds.scale = 1; c.ds.offset = [40, 110];"
                   " c.setDirty(true, true); })()")
        b.evaluate("window.app.queuePrompt(0, 1)")
        try:
            b.wait_for("window.app.graph.getNodeById(2).e4dPlayer.visible > 0", timeout=180)
        except Exception:
            b.screenshot(artifacts_dir / "comfyui_failed.png")
            raise AssertionError(f"the player never drew; server log:\n{server.log_tail(40)}\n"
                                 f"console: {b.console[-20:]}")
        b.evaluate("(async () => { const p = window.app.graph.getNodeById(2).e4dPlayer; p.pause(); p.setTime(0.5);"
                   " await p.whenSorted(); p.renderNow({finish: true}); })()")
        count = b.evaluate("window.app.graph.getNodeById(2).e4dPlayer.count")
        assert count == 3000
        b.screenshot(artifacts_dir / "comfyui_page.png")
        rect = b.evaluate("(() => { const r = window.app.graph.getNodeById(2).e4dPlayer.canvas.getBoundingClientRect();"
                          " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
        assert rect["width"] > 100 and rect["height"] > 100, f"player canvas too small or hidden: {rect}"
        img = png_to_array(b.screenshot(artifacts_dir / "comfyui_player.png", clip=rect))
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
        b.screenshot(artifacts_dir / "comfyui_player_orbited.png", clip=rect)
        # the file came through ComfyUI's /view from its temp folder
        files = list((server.base / "temp" / "efficient4d").glob("e4d_preview_*.e4dc"))
        assert len(files) == 1
