"""A small Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (stdlib only, no websocket).

Chromium reads NUL-terminated JSON commands on fd 3 and writes replies and events on fd 4 (the transport
Playwright uses). Used by the browser tests and ``bench/web_player.py``; needs Debian's ``chromium``.
"""
from __future__ import annotations

import base64
import fcntl
import functools
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking")
"""The flags issue 7 prescribes. WebGL2 then runs on SwiftShader (CPU), which newer Chromium only allows with
``--enable-unsafe-swiftshader`` (added by :class:`Chromium`)."""


def find_chromium() -> Optional[str]:
    """Path of the Chromium binary (``$E4D_CHROMIUM``, then ``chromium`` / ``chromium-browser`` on PATH)."""
    env = os.environ.get("E4D_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


class CDPError(RuntimeError):
    """A DevTools command failed, or the page threw; the message carries the page's console tail."""


class Chromium:
    """Headless Chromium with one page; ``with Chromium() as b: b.goto(url); b.evaluate("1+1")``."""

    def __init__(self, executable: Optional[str] = None, width: int = 512, height: int = 512,
                 extra_args: tuple[str, ...] = (), timeout: float = 60.0) -> None:
        exe = executable or find_chromium()
        if exe is None:
            raise FileNotFoundError("chromium not found; install it with `apt-get install -y chromium` "
                                    "or set E4D_CHROMIUM to the binary")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="e4d-chromium-")
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()

        def child_fds() -> None:  # runs in the child before exec: the pipe ends become fds 3 and 4
            # Park both ends above 4 first: a pipe end that already is fd 3 or 4 would be clobbered by the other
            # dup2, or keep its close-on-exec flag (dup2 onto itself changes nothing).
            r, w = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [exe, *CHROMIUM_FLAGS, "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
                "--remote-debugging-pipe", f"--user-data-dir={self._profile}", f"--window-size={width},{height}",
                "--hide-scrollbars", "--mute-audio", *extra_args, "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=child_fds, close_fds=False, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_r)
        os.close(from_w)
        self._next = 0
        self._lock = threading.Lock()
        self._cv = threading.Condition()
        self._replies: dict[int, dict] = {}
        self.console: list[str] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True)

    # -------------------------------------------------------------------------------------- transport
    def _read_loop(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_r, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cv:
                    self._closed = True
                    self._cv.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cv:
                        self._replies[msg["id"]] = msg
                        self._cv.notify_all()
                else:
                    self._event(msg)

    def _event(self, msg: dict) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.console.append(f"console.{p.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.console.append(f"exception: {d.get('exception', {}).get('description', d.get('text'))}")

    def send(self, method: str, params: Optional[dict] = None, session: bool = False,
             timeout: Optional[float] = None) -> dict:
        """Send one command (to the page's session when ``session``) and wait for its result."""
        with self._lock:
            self._next += 1
            mid = self._next
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cv:
            while mid not in self._replies:
                if self._closed:
                    raise CDPError(f"chromium exited while waiting for {method}: {self._stderr_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CDPError(f"{method} timed out after {timeout or self.timeout:.0f} s; console: "
                                   f"{self.console[-10:]}")
                self._cv.wait(left)
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise CDPError(f"{method} failed: {reply['error']}")
        return reply.get("result", {})

    def _stderr_tail(self) -> str:
        try:
            self.proc.wait(timeout=2)
            return (self.proc.stderr.read() or b"").decode(errors="replace")[-2000:]
        except Exception:  # noqa: BLE001 - diagnostics only
            return "(no stderr)"

    # -------------------------------------------------------------------------------------- page helpers
    def goto(self, url: str, timeout: Optional[float] = None) -> None:
        """Navigate and wait until ``document.readyState == 'complete'``."""
        self.send("Page.navigate", {"url": url}, session=True)
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            try:
                if self.evaluate("document.readyState") == "complete" and \
                        self.evaluate("location.href") != "about:blank":
                    return
            except CDPError:
                pass  # the context is being replaced during navigation
            time.sleep(0.1)
        raise CDPError(f"{url} did not finish loading; console: {self.console[-10:]}")

    def evaluate(self, expression: str, timeout: Optional[float] = None) -> Any:
        """Evaluate JS in the page (promises awaited) and return its JSON value; page exceptions raise CDPError."""
        r = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                      session=True, timeout=timeout)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CDPError(f"page threw: {d.get('exception', {}).get('description', d.get('text'))}; "
                           f"console: {self.console[-10:]}")
        return r.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.2) -> Any:
        """Poll ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.evaluate(expression)
            if v:
                return v
            if time.monotonic() > deadline:
                raise CDPError(f"timed out waiting for {expression!r}; console: {self.console[-15:]}")
            time.sleep(interval)

    def screenshot(self, path: Optional[Path] = None, clip: Optional[dict] = None) -> bytes:
        """PNG of the viewport (or ``clip`` = {x, y, width, height} in CSS px); written to ``path`` if given."""
        params: dict[str, Any] = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        png = base64.b64decode(self.send("Page.captureScreenshot", params, session=True)["data"])
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(png)
        return png

    def drag(self, x0: float, y0: float, x1: float, y1: float, steps: int = 8, button: str = "left") -> None:
        """A mouse drag (press, moves, release) in CSS pixels; the page sees pointer events."""
        mask = {"left": 1, "right": 2, "middle": 4}[button]
        ev = lambda t, x, y, **kw: self.send("Input.dispatchMouseEvent",  # noqa: E731
                                             {"type": t, "x": x, "y": y, "button": button, **kw}, session=True)
        ev("mouseMoved", x0, y0, buttons=0)
        ev("mousePressed", x0, y0, buttons=mask, clickCount=1)
        for i in range(1, steps + 1):
            f = i / steps
            ev("mouseMoved", x0 + (x1 - x0) * f, y0 + (y1 - y0) * f, buttons=mask)
        ev("mouseReleased", x1, y1, buttons=0, clickCount=1)

    # -------------------------------------------------------------------------------------- lifetime
    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close", timeout=5)
                except CDPError:
                    pass
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        finally:
            for fd in (self._to_w, self._from_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            if self.proc.stderr:
                self.proc.stderr.close()
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript",
                      ".e4dc": "application/octet-stream"}

    def log_message(self, *args) -> None:  # keep test output clean
        pass


class StaticServer:
    """Serve a folder on 127.0.0.1 (a free port) from a thread; ``with StaticServer(root) as s: s.url``."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "StaticServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
