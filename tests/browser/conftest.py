"""Browser-test fixtures: Chromium (skipped only outside CI when missing), a static server, artifacts folder, and a
real ComfyUI serving its frontend on every lane (``comfy_frontend``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _p in (HERE, HERE.parent):  # our helpers, and tests/ (comfy_env, comfy_harness)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from e4d_cdp import Chromium, StaticServer, find_chromium  # noqa: E402


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Chromium's binary; outside CI a missing browser skips, in CI (CI=true) it fails the test."""
    exe = find_chromium()
    if exe is None:
        msg = "chromium not installed (apt-get install -y chromium, or set E4D_CHROMIUM)"
        if _in_ci():
            pytest.fail(f"{msg}; browser tests must run in CI")
        pytest.skip(msg)
    return exe


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    """Where screenshots go: $E4D_ARTIFACTS/browser if set (CI uploads it), else a pytest temp folder."""
    root = os.environ.get("E4D_ARTIFACTS")
    out = Path(root) / "browser" if root else tmp_path_factory.mktemp("browser_artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A served folder holding ``web/`` (a link to the repo's) and room for fixture files; yields (root, url)."""
    root = tmp_path_factory.mktemp("site")
    (root / "web").symlink_to(REPO / "web", target_is_directory=True)
    with StaticServer(root) as server:
        yield root, server.url


@pytest.fixture(scope="module")
def browser(chromium_path):
    with Chromium(chromium_path, width=512, height=512) as b:
        yield b


NATIVE = "blob.e4d.safetensors"
"""A small native 4D Gaussian file the ``comfy_frontend`` server has in its input folder."""


@pytest.fixture(scope="session")
def comfy_frontend(request, tmp_path_factory):
    """ComfyUI of one lane (parametrized over ``comfy_env.lanes()``) serving that lane's real frontend, with the
    tiny models and inputs of ``comfy_tiny`` and :data:`NATIVE`; ``.missing_writers`` as in the server tests.

    It listens on every interface (``--listen 0.0.0.0``, how a GPU box is shared) and the browser reaches it by the
    machine's LAN address, as another computer would: the frontend, our web extension, the previews' ``/view`` URLs
    and queueing are all tested off loopback. A machine without a LAN address falls back to loopback, except in CI."""
    from comfy_env import require_comfy
    from comfy_harness import lan_address, start_server
    from comfy_tiny import prepare_base
    from e4d.export import save_native
    from e4d_scene import moving_blob

    require_comfy()
    lane = request.param
    base = tmp_path_factory.mktemp(f"comfy_fe-{lane}")
    missing = prepare_base(base)
    save_native(moving_blob(3000), base / "input" / NATIVE)
    host = lan_address()
    if host is None and _in_ci():
        pytest.fail("no LAN address: the browser tests must reach ComfyUI off loopback in CI")
    server = start_server(base, lane=lane, frontend=True, threads=1, listen="0.0.0.0" if host else "127.0.0.1",
                          host=host)
    server.missing_writers = missing
    server.native = NATIVE
    yield server
    server.stop()


def pytest_generate_tests(metafunc) -> None:
    if "comfy_frontend" in metafunc.fixturenames:
        from comfy_env import lanes

        metafunc.parametrize("comfy_frontend", lanes(), indirect=True, scope="session")
