"""Browser-test fixtures: Chromium (skipped only outside CI when missing), a static server, artifacts folder."""
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
