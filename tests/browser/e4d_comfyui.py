"""Driving the real ComfyUI frontend in a page of ``e4d_cdp.Chromium``: app readiness and queueing."""
from __future__ import annotations

import json
import time

APP_LOADED = "window.app && window.app.graph && window.app.extensionManager !== undefined"
"""JS condition: the frontend's app is up (graph and extension manager exist)."""


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
