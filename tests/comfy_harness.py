"""Run a real ComfyUI (a lane of ``comfy_env``: 0.3.75 or 0.30.0) as a subprocess with this pack installed, and
talk to it.

* :func:`start_server` links the repo into ``<base>/custom_nodes/`` and starts ``main.py --cpu
  --disable-api-nodes --base-directory <base>`` through ``comfy_launch.py`` (start-up stubs), serving either no
  frontend or the lane's real one; it waits for ``/system_stats`` and fails fast (with the log) when the log says
  our pack could not be imported.
* :class:`ComfyServer` wraps the HTTP API: ``object_info``, ``queue`` (POST /prompt; a 400 raises
  :class:`PromptRejected` carrying ``node_errors``), ``wait`` (polls /history), ``interrupt``.
* :func:`output_files`: the files a finished prompt reports. Workflow conversion: ``comfy_ui_api``.
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
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui-efficient4d"
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


def output_files(history_entry: dict) -> list[dict]:
    """Every file a finished prompt reports in its ``outputs`` ui (images, videos, gifs, 3d)."""
    files = []
    for out in history_entry.get("outputs", {}).values():
        for key, items in out.items():
            if isinstance(items, list):
                files += [i for i in items if isinstance(i, dict) and "filename" in i]
    return files
