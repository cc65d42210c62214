"""Run a real ComfyUI (0.3.75, see ``comfy_env``) as a subprocess with this pack installed, and talk to it.

* :func:`start_server` links the repo into ``<base>/custom_nodes/`` and starts ``main.py --cpu
  --disable-api-nodes --front-end-root <empty> --base-directory <base>``; it waits for ``/system_stats`` and fails
  fast (with the log) when the log says our pack could not be imported.
* :class:`ComfyServer` wraps the HTTP API: ``object_info``, ``queue`` (POST /prompt; a 400 raises
  :class:`PromptRejected` carrying ``node_errors``), ``wait`` (polls /history), ``interrupt``.
* :func:`ui_to_api` converts a UI-format (litegraph) workflow into an API-format prompt using ``/object_info``:
  widget values are matched to widget inputs in schema order, skipping the extra values the frontend stores for
  ``control_after_generate`` and upload widgets; converted widgets fed by a link, Reroute and PrimitiveNode are
  resolved; frontend-only nodes (Note, MarkdownNote) and muted nodes are dropped.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui-efficient4d"
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
UPLOAD_KEYS = ("image_upload", "video_upload", "audio_upload", "file_upload", "animated_image_upload")
UPLOAD_PLACEHOLDERS = ("image", "video", "audio", "file")
FRONTEND_ONLY = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


class PromptRejected(RuntimeError):
    """POST /prompt answered 400: ``error`` and ``node_errors`` as ComfyUI sent them."""

    def __init__(self, body: dict):
        self.body = body
        self.error = body.get("error", {})
        self.node_errors = body.get("node_errors", {})
        super().__init__(f"prompt rejected: {json.dumps(body)[:3000]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ComfyServer:
    base: Path
    port: int
    proc: subprocess.Popen
    log_path: Path
    _object_info: Optional[dict] = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- HTTP ---------------------------------------------------------------------------------
    def request(self, path: str, data: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def get(self, path: str) -> Any:
        status, body = self.request(path)
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}: {str(body)[:500]}")
        return body

    def object_info(self, refresh: bool = False) -> dict:
        if self._object_info is None or refresh:
            self._object_info = self.get("/object_info")
        return self._object_info

    def queue(self, prompt: dict, client_id: str = "e4d-tests") -> str:
        status, body = self.request("/prompt", {"prompt": prompt, "client_id": client_id})
        if status == 400:
            raise PromptRejected(body if isinstance(body, dict) else {"error": body})
        if status != 200:
            raise RuntimeError(f"POST /prompt -> {status}: {str(body)[:1000]}")
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """The /history entry of ``prompt_id`` once it finished (success, error or interrupted)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            h = self.get(f"/history/{prompt_id}")
            if h and prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
                entry = h[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            self.check_alive()
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout:.0f} s; log tail:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def running(self) -> list:
        return self.get("/queue").get("queue_running", [])

    def interrupt(self) -> None:
        self.request("/interrupt", {})

    # -- process ------------------------------------------------------------------------------
    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; log tail:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_server(base: Path, pack_dir: Path = REPO, timeout: float = 180.0, threads: int = 2) -> ComfyServer:
    """Start ComfyUI with the pack linked into ``base/custom_nodes``; returns once ``/system_stats`` answers."""
    from comfy_env import comfy_root, stubs_dir

    root = comfy_root()
    base = Path(base)
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_NAME
    if not link.exists():
        link.symlink_to(pack_dir, target_is_directory=True)
    fe = base / "frontend_empty"
    fe.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    port = free_port()
    launcher = Path(__file__).with_name("comfy_launch.py")  # torchvision stub for ComfyUI's start-up only
    cmd = [sys.executable, str(launcher), str(root), str(stubs_dir()), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--disable-api-nodes", "--front-end-root", str(fe), "--base-directory", str(base)]
    log_path = base / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=str(root), env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = ComfyServer(base, port, proc, log_path)
    t0 = time.monotonic()
    while True:
        text = server.log_text()
        if f"Cannot import {link}" in text or f"Error while calling comfy_entrypoint in {link}" in text:
            server.stop()
            raise RuntimeError(f"ComfyUI could not import the pack; log:\n{server.log_tail(80)}")
        if proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {proc.returncode} during start-up; log:\n{server.log_tail(80)}")
        try:
            status, _ = server.request("/system_stats", timeout=2.0)
            if status == 200:
                return server
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() - t0 > timeout:
            server.stop()
            raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f} s; log:\n{server.log_tail(80)}")
        time.sleep(0.25)


# ---------------------------------------------------------------------------------------------------------------
# UI (litegraph) workflow -> API prompt
# ---------------------------------------------------------------------------------------------------------------
def widget_inputs(info: dict) -> list[tuple[str, Any, dict]]:
    """``(name, type, options)`` of the widget inputs of a node, in the frontend's widget order (required, then
    optional, each in ``input_order``)."""
    out = []
    order = info.get("input_order") or {k: list(v) for k, v in info.get("input", {}).items()}
    for section in ("required", "optional"):
        specs = info.get("input", {}).get(section, {})
        for name in order.get(section, []):
            spec = specs.get(name)
            if spec is None:
                continue
            typ = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            is_combo = isinstance(typ, list) or typ == "COMBO"
            if (is_combo or typ in WIDGET_TYPES) and not opts.get("forceInput"):
                out.append((name, "COMBO" if is_combo else typ, opts))
    return out


def _has_control(name: str, typ: str, opts: dict) -> bool:
    return bool(opts.get("control_after_generate")) or (typ == "INT" and name in ("seed", "noise_seed"))


def widget_slots(info: dict) -> list[tuple[str, str, Any, dict]]:
    """The values a node's ``widgets_values`` holds, in the frontend's order: ``(name, kind, type, options)`` with
    kind ``"value"`` (a widget input), ``"control"`` (the control_after_generate value right after its widget) or
    ``"upload"`` (the upload button's placeholder). The frontend adds the upload button as an extra input after the
    node's inputs, so its placeholder comes after every other widget value, not after the file name."""
    slots: list[tuple[str, str, Any, dict]] = []
    uploads = []
    for name, wtype, opts in widget_inputs(info):
        slots.append((name, "value", wtype, opts))
        if _has_control(name, wtype, opts):
            slots.append((name, "control", wtype, opts))
        if any(opts.get(u) for u in UPLOAD_KEYS) and not uploads:  # the frontend adds one button per node
            uploads.append(("upload", "upload", "IMAGEUPLOAD", {"input": name}))
    return slots + uploads


def _is_placeholder(kind: str, value: Any) -> bool:
    if kind == "control":
        return value in CONTROL_VALUES
    return isinstance(value, str) and value in UPLOAD_PLACEHOLDERS


def ui_to_api(workflow: dict, object_info: dict, overrides: Optional[dict] = None, strict: bool = False) -> dict:
    """Convert a UI-format workflow to an API prompt ``{id: {class_type, inputs}}``.

    ``overrides``: ``{node_type: {input_name: value}}`` applied after conversion (the CI's tiny sizes); names the
    node does not have are ignored. ``strict``: also fail when a node stores more widget values than its schema
    has widgets (the workflow is out of date with the nodes).
    Raises ValueError naming the node when a node type is unknown to the server or widget values do not fit.
    """
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {l[0]: l for l in workflow.get("links", [])}

    def source(link_id: int) -> Optional[list]:
        """[origin_id, slot] after following Reroutes; None for a PrimitiveNode (handled by the caller)."""
        seen = 0
        while True:
            _, origin, slot = links[link_id][:3]
            node = nodes[origin]
            if node["type"] == "Reroute":
                link_id = node["inputs"][0]["link"]
                seen += 1
                if link_id is None or seen > 100:
                    return None
                continue
            if node["type"] == "PrimitiveNode" or node.get("mode") in (2, 4):
                return None
            return [str(origin), slot]

    prompt: dict = {}
    for nid, node in nodes.items():
        typ = node["type"]
        if typ in FRONTEND_ONLY or node.get("mode") in (2, 4):
            continue
        info = object_info.get(typ)
        if info is None:
            raise ValueError(f"node {nid} is a {typ!r}, which this ComfyUI does not know (missing pack or module?)")
        inputs: dict[str, Any] = {}
        linked_widgets = {}
        for inp in node.get("inputs", []):
            if inp.get("link") is None:
                continue
            link = links[inp["link"]]
            src = source(inp["link"])
            if src is None:  # PrimitiveNode: its first widget value is the value
                origin = nodes[link[1]]
                if origin["type"] == "PrimitiveNode":
                    linked_widgets[inp["name"]] = ("value", origin["widgets_values"][0])
                continue
            if inp.get("widget"):
                linked_widgets[inp["widget"]["name"]] = ("link", src)
            else:
                inputs[inp["name"]] = src
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):  # some nodes store a name->value dict
            values = None
        k = 0
        for name, kind, wtype, opts in widget_slots(info):
            if kind != "value":  # control and upload placeholders are frontend state, not inputs
                if values is not None and k < len(values) and _is_placeholder(kind, values[k]):
                    k += 1
                continue
            if values is None:
                val = node["widgets_values"].get(name)
            else:
                if k >= len(values):
                    if name in linked_widgets or name not in info["input"].get("required", {}):
                        continue
                    raise ValueError(f"node {nid} ({typ}): widgets_values has {len(values)} values, too few for "
                                     f"widget {name!r}; widgets are {[w[0] for w in widget_slots(info)]}")
                val = values[k]
                k += 1
            if name in linked_widgets:
                kind, v = linked_widgets[name]
                inputs[name] = v
            elif val is not None:
                inputs[name] = val
        if strict and values is not None and k != len(values):
            raise ValueError(f"node {nid} ({typ}): {len(values)} widget values but {k} were used; widget slots are "
                             f"{[(w[0], w[1]) for w in widget_slots(info)]}, values {values}")
        prompt[str(nid)] = {"class_type": typ, "inputs": inputs}
    for typ, changes in (overrides or {}).items():
        for entry in prompt.values():
            if entry["class_type"] == typ:
                known = {n for sec in object_info[typ]["input"].values() for n in sec}
                entry["inputs"].update({k2: v for k2, v in changes.items() if k2 in known})
    return prompt


def output_files(history_entry: dict) -> list[dict]:
    """Every file a finished prompt reports in its ``outputs`` ui (images, videos, gifs, 3d)."""
    files = []
    for out in history_entry.get("outputs", {}).values():
        for key, items in out.items():
            if isinstance(items, list):
                files += [i for i in items if isinstance(i, dict) and "filename" in i]
    return files
