"""Find and load the pipeline's weights from a folder laid out like ComfyUI's ``models/``.

::

    models/syncdreamer/syncdreamer-pretrain.ckpt          SyncDreamer (required)
    models/rife/rife47.pth | flownet.pkl                   RIFE (optional: the OpenCV flow fallback otherwise)
    models/diffusers/zero123-xl-diffusers/                 Zero123 for SDS (or checkpoints/stable_zero123.ckpt)
    models/diffusers/stable-video-diffusion-img2vid-xt/    SVD, image-to-4D only (or checkpoints/svd_xt.safetensors)

Nothing is downloaded: a missing file raises :class:`MissingWeights`, which names the file, every folder searched
and where to get it. An existing ComfyUI install's ``models`` folder works as it is.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from .pipeline import PipelineModels

log = logging.getLogger(__name__)

WEIGHT_FILES = ("*.safetensors", "*.ckpt", "*.pth", "*.pt", "*.pkl")


@dataclass(frozen=True)
class WeightSpec:
    """Where one model's weights may be and where they come from."""

    what: str
    """Human name used in messages."""
    files: Tuple[Tuple[str, str], ...]
    """(subfolder, glob) pairs of single files, searched in order."""
    diffusers_classes: Tuple[str, ...] = ()
    """``model_index.json`` ``_class_name`` values accepted for a folder under ``diffusers/``."""
    preferred: Tuple[str, ...] = ()
    """File or folder names picked first when several match."""
    source: str = ""
    """Where to get the weights (the node pack's tooltips say the same)."""


WEIGHTS: Dict[str, WeightSpec] = {
    "syncdreamer": WeightSpec(
        "SyncDreamer checkpoint", tuple(("syncdreamer", g) for g in WEIGHT_FILES),
        preferred=("syncdreamer-pretrain.ckpt",),
        source="syncdreamer-pretrain.ckpt (about 5 GB) from https://huggingface.co/liuyuan-pal/SyncDreamer into "
               "models/syncdreamer/ (CLIP is inside the checkpoint; ViT-L-14.pt is not needed)"),
    "interpolator": WeightSpec(
        "RIFE weights", tuple(("rife", g) for g in WEIGHT_FILES), preferred=("rife47.pth", "flownet.pkl"),
        source="rife47.pth / rife49.pth (ComfyUI-Frame-Interpolation's ckpts/rife) or an official flownet.pkl "
               "(Practical-RIFE 4.x, https://github.com/hzwer/Practical-RIFE, or Efficient4D's RIFE HD v3.6) into "
               "models/rife/; without RIFE the OpenCV flow fallback interpolates (CLI: --flow)"),
    "guidance": WeightSpec(
        "Zero123 (SDS guidance)", (("checkpoints", "*zero123*.ckpt"), ("checkpoints", "*zero123*.safetensors")),
        diffusers_classes=("Zero123Pipeline", "Zero1to3StableDiffusionPipeline"),
        preferred=("zero123-xl-diffusers",),
        source="a zero123 diffusers folder (ashawkey/zero123-xl-diffusers or ashawkey/stable-zero123-diffusers) "
               "into models/diffusers/<name>, or stable_zero123.ckpt (stabilityai/stable-zero123) into "
               "models/checkpoints/; or fit without SDS (CLI: --no-sds)"),
    "svd": WeightSpec(
        "Stable Video Diffusion", (("checkpoints", "svd*.safetensors"),),
        diffusers_classes=("StableVideoDiffusionPipeline",), preferred=("stable-video-diffusion-img2vid-xt",
                                                                        "svd_xt.safetensors"),
        source="svd_xt.safetensors / svd.safetensors (stabilityai/stable-video-diffusion-img2vid-xt, "
               "stabilityai/stable-video-diffusion-img2vid) into models/checkpoints/, or the diffusers folder of "
               "those repos into models/diffusers/<name>"),
}
"""Every model of :class:`~e4d.pipeline.PipelineModels`, keyed by its field name."""


class MissingWeights(FileNotFoundError):
    """Weights not found in the models folder; the message names them, the folders searched and the source."""


def _diffusers_dirs(root: Path, classes: Sequence[str]) -> List[Path]:
    out = []
    for d in sorted(p for p in (root / "diffusers").glob("*") if p.is_dir()):
        try:
            if json.loads((d / "model_index.json").read_text()).get("_class_name") in classes:
                out.append(d)
        except (OSError, ValueError):  # no or unreadable model_index.json: not this kind of model
            continue
    return out


def candidates(models_dir: Union[str, Path], kind: str) -> Tuple[List[Path], List[Path]]:
    """(matching paths, folders searched) for ``kind`` (a :data:`WEIGHTS` key); preferred names first."""
    spec = WEIGHTS[kind]
    root = Path(models_dir)
    found: List[Path] = []
    searched: List[Path] = []
    if spec.diffusers_classes:
        searched.append(root / "diffusers")
        found += _diffusers_dirs(root, spec.diffusers_classes)
    for sub, pattern in spec.files:
        if root / sub not in searched:
            searched.append(root / sub)
        found += [p for p in sorted((root / sub).glob(pattern)) if p.is_file() and p not in found]
    rank = {n: i for i, n in enumerate(spec.preferred)}
    found.sort(key=lambda p: rank.get(p.name, len(rank)))
    return found, searched


def missing_message(kind: str, searched: Sequence[Path]) -> str:
    spec = WEIGHTS[kind]
    return (f"{spec.what} not found (searched: {', '.join(str(p) for p in searched)}). "
            f"Where to get it: {spec.source}.")


def find_weights(models_dir: Union[str, Path], kind: str) -> Path:
    """The file or diffusers folder of ``kind`` in ``models_dir``; :class:`MissingWeights` when there is none."""
    found, searched = candidates(models_dir, kind)
    if not found:
        raise MissingWeights(missing_message(kind, searched))
    if len(found) > 1:
        log.info("%s: %d candidates, using %s", WEIGHTS[kind].what, len(found), found[0])
    return found[0]


def auto_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA cards that support it, else fp16 on CUDA; fp32 on the CPU (ComfyUI's policy)."""
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_models(models_dir: Union[str, Path], need: Sequence[str] = ("syncdreamer", "interpolator", "guidance"),
                device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None,
                to_device: bool = True) -> PipelineModels:
    """Load the models named in ``need`` (:data:`WEIGHTS` keys) from a ComfyUI-style ``models`` folder.

    Args:
        models_dir: the folder holding ``syncdreamer/``, ``rife/``, ``diffusers/``, ``checkpoints/``.
        need: which models to load; the others stay None (no interpolator = flow fallback, no guidance = no SDS).
        device: compute device (default CUDA when available).
        dtype: SyncDreamer weight dtype (default :func:`auto_dtype`); RIFE, Zero123 and SVD load in fp16 on CUDA
            (the nodes' defaults), fp32 on the CPU.
        to_device: put the weights on ``device`` now (False: keep them on the CPU for an
            :class:`~e4d.pipeline_hooks.Offload` hook).

    Raises:
        MissingWeights: naming every missing model at once, the folders searched and where to get each.
    """
    root = Path(models_dir)
    if not root.is_dir():
        raise MissingWeights(f"models folder {root} not found; it must hold syncdreamer/, rife/, diffusers/ or "
                             "checkpoints/ like ComfyUI's models folder")
    unknown = [k for k in need if k not in WEIGHTS]
    if unknown:
        raise ValueError(f"unknown model kinds {unknown}; choose from {list(WEIGHTS)}")
    paths, errors = {}, []
    for kind in need:
        try:
            paths[kind] = find_weights(root, kind)
        except MissingWeights as e:
            errors.append(str(e))
    if errors:
        raise MissingWeights(" | ".join(errors))
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dt = dtype or auto_dtype(dev)
    half = torch.float16 if dev.type == "cuda" else torch.float32
    put = dev if to_device else torch.device("cpu")
    models = PipelineModels(sources={k: str(p) for k, p in paths.items()})
    if "syncdreamer" in paths:
        from .syncdreamer.loader import load_syncdreamer

        models.syncdreamer = load_syncdreamer(paths["syncdreamer"], dtype=dt, device=put)
    if "interpolator" in paths:
        from .interp import load_interpolator

        models.interpolator = load_interpolator(paths["interpolator"], device=put, dtype=half)
    if "guidance" in paths:
        from .guidance.loader import load_zero123

        models.guidance = load_zero123(paths["guidance"], dtype=half, device=put)
    if "svd" in paths:
        from .svd.pipeline import load_svd

        models.svd = load_svd(paths["svd"], dtype=half, device=put)
    return models


def sds_variant(models: PipelineModels) -> str:
    """The Zero123 camera-embedding variant of the loaded guidance model, from its file or folder name."""
    from .guidance.loader import guess_variant

    src = models.sources.get("guidance")
    return guess_variant(src) if src else "zero123-xl"


__all__ = ["WEIGHTS", "WeightSpec", "MissingWeights", "candidates", "find_weights", "load_models", "auto_dtype",
           "missing_message", "sds_variant"]
