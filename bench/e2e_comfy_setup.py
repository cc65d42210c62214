"""Set-up helpers of bench/e2e_comfy.py: ComfyUI's start-up wheels, the ComfyUI tree, import stubs, random models.

Kept apart from the runner so each file stays small; nothing here talks to a running server.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEVCOMFY = REPO / ".devcomfy"
START_MODULES = ("torchsde", "alembic", "sqlalchemy", "pydantic_settings", "aiohttp", "yaml", "scipy", "psutil")
START_MODULES_030 = ("comfy_aimdo", "simpleeval", "blake3")
"""ComfyUI 0.30's start-up imports beyond 0.3.75's (tools/device_comfy_prepare.sh carries their wheels)."""


# ------------------------------------------------------------------------------------------------------------------
# environment: wheels, ComfyUI tree, stubs
# ------------------------------------------------------------------------------------------------------------------
def _too_old(dist: str, minimum: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        return Version(version(dist)) < Version(minimum)
    except PackageNotFoundError:
        return True


def site_dir(work: Path, lane: str) -> Optional[Path]:
    """Install the carried wheels when ComfyUI's start-up modules are missing; the folder goes on PYTHONPATH."""
    needed = START_MODULES + (START_MODULES_030 if lane != "0.3.75" else ())
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    old_net = _too_old("aiohttp", "3.11.8") or _too_old("yarl", "1.18.0")  # ComfyUI 0.3.75's requirements.txt
    if not missing and not old_net:
        return None
    wheels = sorted((DEVCOMFY / "whl").glob("*.whl")) if missing else []
    if old_net:
        wheels += sorted((DEVCOMFY / "whl_net").glob("*.whl"))
    if not wheels:
        raise SystemExit(f"ComfyUI needs {missing} (aiohttp/yarl too old: {old_net}) and .devcomfy has no wheels: "
                         "run tools/device_comfy_prepare.sh on the CPU machine and carry .devcomfy")
    site = work / "site"
    tag = "\n".join(w.name for w in wheels)  # a warm machine keeps /tmp: reinstall when the carried set changed
    if not (site / ".complete").is_file() or (site / ".complete").read_text() != tag:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)], check=True)
        (site / ".complete").write_text(tag)
    still = [m for m in needed if importlib.util.find_spec(m) is None and not _in_site(site, m)]
    if still:
        raise SystemExit(f"ComfyUI {lane} needs {still} and .devcomfy/whl lacks them: run "
                         f"tools/device_comfy_prepare.sh {lane} on the CPU machine and carry .devcomfy")
    return site


def _in_site(site: Path, module: str) -> bool:
    return (site / module).is_dir() or any(site.glob(f"{module}*.py")) or any(site.glob(f"{module}*.so"))


def default_lane() -> str:
    """The first lane tools/device_comfy_prepare.sh put into .devcomfy (0.30.0 when none is there)."""
    tag = DEVCOMFY / "comfy" / "LANE"
    return tag.read_text().strip() if tag.is_file() else "0.30.0"


def comfy_root(work: Path, lane: str) -> Path:
    """The ComfyUI tree of ``lane`` (tests/comfy_env.py LANES) extracted under ``work``: from the xz repack that
    tools/device_comfy_prepare.sh carried (``.devcomfy/comfy/comfyui-<lane>.tar.xz``, checked against the sha256
    written beside it), else from the lane's pinned archive, carried or in the CI harness's cache."""
    import hashlib

    from comfy_env import LANES, cache_dir, extract_once

    if lane not in LANES:
        raise SystemExit(f"unknown ComfyUI lane {lane!r}; known: {sorted(LANES)}")
    spec = LANES[lane]
    repack = DEVCOMFY / "comfy" / f"comfyui-{lane}.tar.xz"
    digest_file = repack.with_name(repack.name + ".sha256")
    if repack.is_file() and digest_file.is_file():
        archive, prefix, sha = repack, "ComfyUI/", digest_file.read_text().split()[0]
    else:
        cands = [DEVCOMFY / "comfy" / spec.archive, cache_dir() / spec.archive]
        archive = next((c for c in cands if c.is_file()), None)
        if archive is None:
            raise SystemExit(f"no {repack.name} or {spec.archive} in {[str(c.parent) for c in cands]}: run "
                             f"tools/device_comfy_prepare.sh {lane} and carry .devcomfy")
        prefix, sha = spec.prefix, spec.sha256

    def checked() -> Path:
        if hashlib.sha256(archive.read_bytes()).hexdigest() != sha:
            raise SystemExit(f"{archive} does not have the sha256 {sha}; delete it and re-run the prepare")
        return archive

    return extract_once(work / f"comfyui-{lane}", checked, prefix, sha)


_AV_STUB = {
    "av/__init__.py": '"""Import-only PyAV stub (bench/e2e_comfy.py): no video encoding/decoding."""\n'
                      '__version__ = "0.0+e4d-stub"\n\n\ndef __getattr__(name):\n'
                      '    raise AttributeError(f"av.{name}: PyAV is not installed on this machine (stub)")\n',
    "av/container.py": "class InputContainer:\n    pass\n\n\nclass OutputContainer:\n    pass\n",
    "av/subtitles/__init__.py": "", "av/subtitles/stream.py": "class SubtitleStream:\n    pass\n",
    "av/video/__init__.py": "",  # ComfyUI 0.30 imports ColorRange at start-up
    "av/video/reformatter.py": "class ColorRange:\n    JPEG = 2\n    MPEG = 1\n"}
# ComfyUI 0.30 imports comfy_kitchen unguarded in comfy/ldm/joyimage/model.py (a model family we never run) and
# guarded elsewhere: an empty package whose attributes raise AttributeError and without a ``tensor`` submodule
# takes ComfyUI's own no-kitchen path (quant_ops catches the ImportError, float.py the AttributeError).
_KITCHEN_STUB = {
    "comfy_kitchen/__init__.py": '"""Import-only comfy-kitchen stub (bench/e2e_comfy.py): no fp8/fp4 kernels."""\n\n\n'
                                 'def __getattr__(name):\n    raise AttributeError(f"comfy_kitchen.{name}: '
                                 'comfy-kitchen is not installed on this machine (stub)")\n'}
STUBS = {"av": _AV_STUB, "comfy_kitchen": _KITCHEN_STUB}
"""Import-only stand-ins for packages too big to carry (PyAV 40 MB, comfy-kitchen 45 MB) that ComfyUI imports at
start-up without needing them for our workflows."""


def import_stubs(work: Path, force: bool = False) -> tuple[Optional[Path], list[str]]:
    """A folder (first on the server's PYTHONPATH) with the :data:`STUBS` of the packages this Python lacks (all of
    them with ``force``: to check this path on a machine that has them), and their names; (None, []) when none is
    needed. Without real PyAV the bench drops the core video nodes from the prompt."""
    names = [m for m in STUBS if force or importlib.util.find_spec(m) is None]
    if not names:
        return None, []
    d = work / "stubs_import"
    for name in names:
        for rel, text in STUBS[name].items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_text(text)
    return d, names


def tv_stub() -> Optional[Path]:
    """The CI harness's import-only torchvision/torchaudio stubs (tests/comfy_env.py) for a machine without them
    (the CPU check: the PyPI wheels for the CPU torch are CUDA builds); None when both are installed."""
    if all(importlib.util.find_spec(m) is not None for m in ("torchvision", "torchaudio")):
        return None
    from comfy_env import stubs_dir

    return stubs_dir()


def install_probe(base: Path) -> Path:
    """bench/e2e_comfy_probe.py as the custom node package ``e4d_bench_probe`` of the benchmarked ComfyUI."""
    d = base / "custom_nodes" / "e4d_bench_probe"
    d.mkdir(parents=True, exist_ok=True)
    (d / "__init__.py").write_text((BENCH / "e2e_comfy_probe.py").read_text())
    return d


def evict_page_cache(models: Path) -> Dict[str, Any]:
    """Drop the model files from the OS page cache (``posix_fadvise(DONTNEED)`` after ``fsync``; no root needed), so
    the first run after a server start reads them from disk as on a fresh boot. Returns files, bytes and whether
    every file was evicted."""
    files = [f for f in models.rglob("*") if f.is_file() and not f.name.startswith(".")]
    total, ok = 0, True
    for f in files:
        try:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            total += f.stat().st_size
        except (OSError, AttributeError):
            ok = False
    return {"files": len(files), "gb": round(total / 1e9, 3), "evicted": ok}


# ------------------------------------------------------------------------------------------------------------------
# models (run in a subprocess: --write-models)
# ------------------------------------------------------------------------------------------------------------------
def write_models(models: Path, tiny: bool, svd: bool) -> Dict[str, Any]:
    """Random models in the official formats, under the file names the example workflows select."""
    import torch

    sys.path[:0] = [str(REPO), str(REPO / "tests"), str(BENCH)]
    models.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cpu" if tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    out: Dict[str, Any] = {}

    def timed(name: str, fn) -> None:
        done = models / f".{name}.complete"  # a warm machine keeps /tmp: reuse what an earlier call wrote
        t0 = time.perf_counter()
        if done.is_file():
            out[name] = {"reused": done.read_text()}
            return
        path = Path(fn())
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
        out[name] = {"s": round(time.perf_counter() - t0, 2), "gb": round(size / 1e9, 3), "path": str(path)}
        done.write_text(str(path))

    def syncdreamer() -> Path:
        path = models / "syncdreamer" / "syncdreamer-pretrain.ckpt"
        path.parent.mkdir(parents=True, exist_ok=True)
        if tiny:
            from tiny_syncdreamer import tiny_state_dict

            sd = tiny_state_dict()
        else:
            from syncdreamer import build_model  # bench/syncdreamer.py: real shapes, random init on the GPU

            sd = {k: v.detach().cpu() for k, v in build_model(dev, dtype, False).state_dict().items()}
        torch.save({"state_dict": sd, "epoch": 0, "global_step": 0}, path)
        return path

    def rife() -> Path:
        from tiny_rife import write_tiny_rife  # real 4.7 shapes (21 MB), ComfyUI-Frame-Interpolation's layout

        return write_tiny_rife(models / "rife", "4.7", fmt="comfy")

    def zero123() -> Path:
        folder = models / "diffusers" / "zero123-xl-diffusers"
        if tiny:
            from tiny_zero123 import write_tiny_zero123

            return write_tiny_zero123(folder)
        from diffusers import DDIMScheduler
        from safetensors.torch import save_file
        from sds import random_zero123  # bench/sds.py: zero123-xl shapes
        from tiny_zero123 import MODEL_INDEX

        from e4d.guidance.components import SD_SCHEDULER

        c = random_zero123(dev, dtype)
        c.unet.save_pretrained(folder / "unet")
        c.vae.save_pretrained(folder / "vae")
        c.image_encoder.save_pretrained(folder / "image_encoder")
        (folder / "clip_camera_projection").mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in c.camera_projection.state_dict().items()},
                  str(folder / "clip_camera_projection" / "diffusion_pytorch_model.safetensors"))
        d = c.camera_projection.proj.out_features
        (folder / "clip_camera_projection" / "config.json").write_text(json.dumps(
            {"_class_name": "CLIPCameraProjection", "embedding_dim": d, "additional_embeddings": 4}))
        DDIMScheduler.from_config(SD_SCHEDULER).save_pretrained(folder / "scheduler")
        c.image_processor.save_pretrained(folder / "feature_extractor")
        (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=1))
        return folder

    def svd_folder() -> Path:
        folder = models / "diffusers" / "stable-video-diffusion-img2vid-xt"
        if tiny:
            from tiny_svd import write_tiny_svd

            return write_tiny_svd(folder)
        from svd import random_svd  # bench/svd.py: SVD-XT shapes

        random_svd(dev, dtype).save_pretrained(folder)
        return folder

    timed("syncdreamer", syncdreamer)
    timed("rife", rife)
    timed("zero123", zero123)
    if svd:
        timed("svd", svd_folder)
    return out
