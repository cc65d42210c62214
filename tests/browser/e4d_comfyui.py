"""Driving the real ComfyUI frontend in a page of ``e4d_cdp.Chromium``: app readiness and queueing."""
from __future__ import annotations

import json
import time

APP_LOADED = "window.app && window.app.graph && window.app.extensionManager !== undefined"
"""JS condition: the frontend's app is up (graph and extension manager exist)."""


def gaussians_into(native: str, node_type: str, size: list, widgets: list, outputs: list = ()) -> dict:
    """UI-format (litegraph) workflow: Load 4D Gaussians (the ``native`` file under input/) -> ``node_type`` with
    ``widgets`` (its widget values in the frontend's order) and ``outputs`` ((name, type) pairs, unlinked)."""
    return {
        "last_node_id": 2, "last_link_id": 1, "version": 0.4, "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
        "nodes": [
            {"id": 1, "type": "E4D_Load4DGaussians", "pos": [20, 60], "size": [320, 110], "flags": {}, "order": 0,
             "mode": 0, "inputs": [], "properties": {},
             "outputs": [{"name": "gaussians", "type": "E4D_GAUSSIANS4D", "links": [1], "slot_index": 0}],
             "widgets_values": [native, ""]},
            {"id": 2, "type": node_type, "pos": [380, 40], "size": size, "flags": {}, "order": 1,
             "mode": 0, "inputs": [{"name": "gaussians", "type": "E4D_GAUSSIANS4D", "link": 1}],
             "outputs": [{"name": n, "type": t, "links": [], "slot_index": i} for i, (n, t) in enumerate(outputs)],
             "properties": {}, "widgets_values": widgets},
        ],
        "links": [[1, 1, 0, 2, 0, "E4D_GAUSSIANS4D"]], "groups": [], "config": {},
    }


def queue_from_frontend(b, server, timeout: float) -> dict:
    """``app.queuePrompt`` and the /history entry of the prompt it queued (new id), once finished."""
    before = set(server.get("/history") or {})
    b.evaluate("window.app.lastNodeErrors = null; window.app.queuePrompt(0, 1)", timeout=60)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        new = {k: v for k, v in (server.get("/history") or {}).items() if k not in before}
        for entry in new.values():
            if entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
        errors = b.evaluate("window.app.lastNodeErrors")
        if errors:
            raise AssertionError(f"the server rejected the frontend's prompt: {json.dumps(errors)[:3000]}")
        server.check_alive()
        time.sleep(0.5)
    raise TimeoutError(f"no finished prompt in {timeout:.0f} s; console: {b.console[-15:]}; log:\n{server.log_tail()}")
