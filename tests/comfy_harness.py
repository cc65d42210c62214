"""Run a real ComfyUI (a lane of ``comfy_env``: 0.3.75 or 0.30.0) as a subprocess with this pack installed, and
talk to it.

* :func:`start_server` links the repo into ``<base>/custom_nodes/`` and starts ``main.py --cpu
  --disable-api-nodes --base-directory <base>`` through ``comfy_launch.py`` (start-up stubs), serving either no
  frontend or the lane's real one; it waits for ``/system_stats`` and fails fast (with the log) when the log says
  our pack could not be imported.
* :class:`ComfyServer` wraps the HTTP API: ``object_info``, ``queue`` (POST /prompt; a 400 raises
  :class:`PromptRejected` carrying ``node_errors``), ``wait`` (polls /history), ``interrupt``.
* :func:`ui_to_api` converts a UI-format (litegraph) workflow into an API-format prompt using ``/object_info`` the
  way the frontend's ``graphToPrompt`` does (tests/browser/test_comfy_templates.py compares the two):
  ``widgets_values`` are laid out by :func:`iter_widget_slots` (control_after_generate values after their widget,
  a dynamic combo's chosen inputs after it as ``combo.child`` keys, the upload button's placeholder after all
  widgets); converted widgets fed by a link, Reroute and PrimitiveNode are resolved; frontend-only nodes (Note,
  MarkdownNote) and muted nodes are dropped.
"""
from __future__ import annotations

import importlib.util
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
from typing import Any, Callable, Iterator, NamedTuple, Optional

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui-efficient4d"
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
UPLOAD_KEYS = ("image_upload", "video_upload", "audio_upload", "file_upload", "animated_image_upload")
UPLOAD_PLACEHOLDERS = ("image", "video", "audio", "file")
FRONTEND_ONLY = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
"""/object_info type of a dynamic combo (ComfyUI 0.4+): each option brings its own inputs."""


class PromptRejected(RuntimeError):
    """POST /prompt answered 400: ``error`` and ``node_errors`` as ComfyUI sent them."""

    def __init__(self, body: dict):
        self.body = body
        self.error = body.get("error", {})
        self.node_errors = body.get("node_errors", {})
        super().__init__(f"prompt rejected: {json.dumps(body)[:3000]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))  # free on every interface: the server may listen on all of them
        return s.getsockname()[1]


def lan_address() -> Optional[str]:
    """This machine's address on its default route (what another computer would type), or None when it has only
    loopback. No packet is sent: connecting a UDP socket only picks the route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("198.51.100.1", 9))  # TEST-NET-2 (never answers): any routable address picks the route
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


@dataclass
class ComfyServer:
    base: Path
    port: int
    proc: subprocess.Popen
    log_path: Path
    lane: str = ""
    """The ``comfy_env`` lane this server runs."""
    start_seconds: float = 0.0
    """Seconds from launch to the first answer of ``/system_stats``."""
    host: str = "127.0.0.1"
    """The address clients use (a LAN address when the server listens on every interface)."""
    _object_info: Optional[dict] = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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


def start_server(base: Path, pack_dir: Path = REPO, timeout: float = 180.0, threads: int = 2,
                 lane: Optional[str] = None, frontend: bool = False, listen: str = "127.0.0.1",
                 host: Optional[str] = None) -> ComfyServer:
    """Start ComfyUI of ``lane`` (``comfy_env.LANES``; default: the in-process lane) with the pack linked into
    ``base/custom_nodes``; returns once ``/system_stats`` answers.

    ``frontend``: serve the lane's real frontend (``comfy_env.frontend_root``), for browser tests; otherwise an
    empty folder (no frontend files to load) is served. The settings of a returning user go into
    ``base/user/default`` so no first-run dialog covers the canvas. ``listen`` is ComfyUI's ``--listen``
    (``0.0.0.0``: reachable from other computers, as users run it to share a GPU box); ``host``: the address the
    returned server's ``url`` uses (default: ``listen``, or loopback for ``0.0.0.0``).
    """
    from comfy_env import DEFAULT_LANE, comfy_root, frontend_root, stubs_dir

    lane = lane or DEFAULT_LANE
    root = comfy_root(lane)
    base = Path(base)
    for sub in ("custom_nodes", "models", "input", "output", "temp", "user/default"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_NAME
    if not link.exists():
        link.symlink_to(pack_dir, target_is_directory=True)
    settings = base / "user" / "default" / "comfy.settings.json"
    if not settings.exists():
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning":
                                        False, "Comfy.Workflow.ShowMissingNodesWarning": False}))
    if frontend:
        fe = frontend_root(lane)
        if fe is None and importlib.util.find_spec("comfyui_frontend_package") is None:
            raise RuntimeError(f"ComfyUI {lane} serves the installed comfyui-frontend-package, which is missing: "
                               f"pip install -r tests/requirements-ci.txt")
    else:
        fe = base / "frontend_empty"
        fe.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    port = free_port()
    launcher = Path(__file__).with_name("comfy_launch.py")  # torchvision/torchaudio stubs for the start-up only
    cmd = [sys.executable, str(launcher), str(root), str(stubs_dir()), "--cpu", "--listen", listen, "--port",
           str(port), "--disable-auto-launch", "--disable-api-nodes", "--base-directory", str(base)]
    if fe is not None:
        cmd += ["--front-end-root", str(fe)]
    log_path = base / "server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=str(root), env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = ComfyServer(base, port, proc, log_path, lane=lane,
                         host=host or ("127.0.0.1" if listen in ("0.0.0.0", "::") else listen))
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
                server.start_seconds = time.monotonic() - t0
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
class Slot(NamedTuple):
    """One entry of a node's ``widgets_values`` as the frontend lays them out."""

    name: str
    """Input name; ``parent.child`` for an input of a dynamic combo's chosen option (the prompt's key, too)."""
    kind: str
    """``value`` (a widget input), ``control`` (control_after_generate, right after its widget) or ``upload`` (the
    upload button's placeholder)."""
    type: str
    """INT, FLOAT, STRING, BOOLEAN, COMBO or DYNAMIC (a dynamic combo); IMAGEUPLOAD for the upload button."""
    opts: dict
    """The input's options from /object_info."""
    required: bool
    """Whether the schema requires the input."""


def _spec_type(spec: list) -> tuple[Optional[str], dict]:
    """(widget type or None for a socket, options) of one /object_info input spec."""
    typ = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if opts.get("forceInput"):
        return None, opts
    if typ == DYNAMIC_COMBO:
        return "DYNAMIC", opts
    if isinstance(typ, list):  # the old combo form: the options are the type
        return "COMBO", {**opts, "options": list(typ)}
    if typ == "COMBO":
        return "COMBO", opts
    return (typ if typ in WIDGET_TYPES else None), opts


def _default_option(opts: dict) -> Optional[str]:
    keys = [o["key"] for o in opts.get("options", [])]
    return opts.get("default", keys[0] if keys else None)


def _slots(inputs: dict, order: dict, prefix: str, choose: Callable[[Slot], Any]) -> Iterator[Slot]:
    for section in ("required", "optional"):
        specs = inputs.get(section, {})
        for name in order.get(section) or list(specs):
            spec = specs.get(name)
            if spec is None:
                continue
            wtype, opts = _spec_type(spec)
            if wtype is None:
                continue
            slot = Slot(prefix + name, "value", wtype, opts, section == "required")
            yield slot
            if wtype == "DYNAMIC":  # the chosen option's inputs follow their combo, depth first
                key = choose(slot)
                option = next((o for o in opts.get("options", []) if o["key"] == key), None)
                if option is not None:
                    yield from _slots(option.get("inputs", {}), {}, slot.name + ".", choose)
            elif _has_control(name, wtype, opts):
                yield Slot(slot.name, "control", wtype, opts, False)


def iter_widget_slots(info: dict, choose: Optional[Callable[[Slot], Any]] = None) -> Iterator[Slot]:
    """The entries of a node's ``widgets_values`` in the frontend's order.

    ``choose(slot)`` gives the option key a dynamic combo holds (asked right after its slot is yielded, so a
    caller reading stored values can answer with the value it just read); default: the schema's default option.
    Control values follow their widget; the children of a dynamic combo's chosen option follow the combo; the
    upload button (added by the frontend for the first required media combo) follows all other widgets.
    """
    choose = choose or (lambda slot: _default_option(slot.opts))
    order = info.get("input_order") or {k: list(v) for k, v in info.get("input", {}).items()}
    yield from _slots(info.get("input", {}), order, "", choose)
    required = info.get("input", {}).get("required", {})
    for name in order.get("required") or list(required):
        wtype, opts = _spec_type(required.get(name, [None]))
        if wtype == "COMBO" and any(opts.get(u) for u in UPLOAD_KEYS):
            yield Slot("upload", "upload", "IMAGEUPLOAD", {"input": name}, False)
            break


def widget_slots(info: dict) -> list[Slot]:
    """:func:`iter_widget_slots` with every dynamic combo at its default option."""
    return list(iter_widget_slots(info))


def widget_inputs(info: dict) -> list[tuple[str, Any, dict]]:
    """``(name, type, options)`` of the top-level widget inputs of a node, in the frontend's widget order."""
    return [(s.name, s.type, s.opts) for s in widget_slots(info) if s.kind == "value" and "." not in s.name]


def _has_control(name: str, typ: str, opts: dict) -> bool:
    return bool(opts.get("control_after_generate")) or (typ == "INT" and name in ("seed", "noise_seed"))


def _has_default(slot: Slot) -> bool:
    return "default" in slot.opts or slot.type in ("COMBO", "DYNAMIC")


def _default_value(slot: Slot) -> Any:
    """The value the frontend gives a new widget: the schema's default, else a combo's first option."""
    if "default" in slot.opts:
        return slot.opts["default"]
    if slot.type == "DYNAMIC":
        return _default_option(slot.opts)
    options = slot.opts.get("options") or []
    return options[0] if options else None


def _is_placeholder(kind: str, value: Any) -> bool:
    if kind == "control":
        return value in CONTROL_VALUES
    return isinstance(value, str) and value in UPLOAD_PLACEHOLDERS


def ui_to_api(workflow: dict, object_info: dict, overrides: Optional[dict] = None, strict: bool = False) -> dict:
    """Convert a UI-format workflow to an API prompt ``{id: {class_type, inputs}}``, as the frontend's
    ``graphToPrompt`` does: widget values by :func:`iter_widget_slots` (control and upload placeholders skipped,
    a dynamic combo's chosen inputs as ``combo.child`` keys), links (through Reroutes; PrimitiveNode values),
    hidden inputs left to the server; frontend-only nodes (Note, MarkdownNote, Reroute, PrimitiveNode) and muted
    or bypassed nodes dropped.

    ``overrides``: ``{node_type: {input_name: value}}`` applied after conversion (the CI's tiny sizes); names the
    node does not have are ignored. ``strict``: fail when a node stores more or fewer widget values than its
    schema has widgets (the workflow is out of date with the nodes); otherwise widgets the workflow has no value
    for take their default, as the frontend gives them when it loads an older workflow.
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
        stored = node.get("widgets_values") or []
        by_name = stored if isinstance(stored, dict) else None  # some nodes store a name->value dict
        values = [] if by_name is not None else list(stored)
        k = 0
        read: dict[str, Any] = {}
        names = []
        for slot in iter_widget_slots(info, choose=lambda sl: read.get(sl.name)):
            if slot.kind != "value":  # control and upload placeholders are frontend state, not inputs
                if by_name is None and k < len(values) and _is_placeholder(slot.kind, values[k]):
                    k += 1
                continue
            names.append(slot.name)
            if by_name is not None:
                val = by_name.get(slot.name)
            elif k < len(values):
                val = values[k]
                k += 1
            elif slot.name in linked_widgets:
                val = None
            elif not strict and _has_default(slot):  # a widget newer than the workflow: the frontend's default
                val = _default_value(slot)
            elif not slot.required:
                continue
            else:
                raise ValueError(f"node {nid} ({typ}): widgets_values has {len(values)} values, too few for "
                                 f"widget {slot.name!r}; widgets are {names}...")
            read[slot.name] = val
            if slot.name in linked_widgets:
                inputs[slot.name] = linked_widgets[slot.name][1]
            elif val is not None:
                inputs[slot.name] = val
        if strict and by_name is None and k != len(values):
            raise ValueError(f"node {nid} ({typ}): {len(values)} widget values but {k} were used; widget slots are "
                             f"{[(sl.name, sl.kind) for sl in iter_widget_slots(info, lambda sl: read.get(sl.name))]}"
                             f", values {values}")
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
