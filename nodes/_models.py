"""Model files and loaded models of the node pack: ComfyUI model folders (register, list, resolve with a message
that says where the weights go) and loaded models handed to ComfyUI's memory manager.

Loaded models: a loader node wraps what it loaded in one :class:`ModelBundle` (an ``nn.Module`` over all weight
holding parts, e.g. the SVD pipeline's UNet, VAE and image encoder) and returns :func:`manage`'s
``comfy.model_patcher.ModelPatcher``, the same object core loaders return. A running node calls
:func:`load_managed`, which asks ComfyUI to load it (``load_models_gpu``): ComfyUI then evicts only what it must,
and offloads ours when another model needs the room. Nothing here moves a model by hand.

``folder_paths`` and ``comfy.*`` are imported inside the functions (no import-time side effects).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import torch

from . import _devices

log = logging.getLogger("efficient4d")

MODEL_EXTENSIONS = frozenset({".ckpt", ".pth", ".pkl", ".safetensors", ".pt"})
"""File types our loaders accept (safetensors preferred; pickles are read with ``weights_only=True``)."""

MODEL_FOLDERS: dict[str, str] = {
    "syncdreamer": "SyncDreamer checkpoint syncdreamer-pretrain.ckpt from https://huggingface.co/liuyuan-pal/SyncDreamer",
    "rife": "RIFE weights, e.g. rife47.pth / flownet.pkl from ComfyUI-Frame-Interpolation's ckpts/rife "
            "or https://github.com/hzwer/Practical-RIFE",
}
"""The model folders this pack registers (``models/<name>``) and where their weights come from."""

NO_MODELS = "<no files: see the tooltip>"
"""Dropdown entry shown when a model folder is empty; picking it fails with a message naming folder and source."""


# --------------------------------------------------------------------------------------------------------------
# model folders
# --------------------------------------------------------------------------------------------------------------
def register_model_folders() -> None:
    """Register ``models/syncdreamer`` and ``models/rife`` with ``folder_paths`` (idempotent).

    ``rife`` also lists ComfyUI-Frame-Interpolation's ``ckpts/rife`` and core ComfyUI's ``frame_interpolation``
    folder (newer ComfyUI) when present, so weights already on disk are found. ComfyUI's own ``diffusers``,
    ``checkpoints`` and ``clip_vision`` folders exist already and are used as they are.
    """
    import folder_paths

    for name in MODEL_FOLDERS:
        default = os.path.join(folder_paths.models_dir, name)
        if name in folder_paths.folder_names_and_paths:
            paths, exts = folder_paths.folder_names_and_paths[name]
            if default not in paths:
                paths.append(default)
            if isinstance(exts, set):
                exts.update(MODEL_EXTENSIONS)
        else:
            folder_paths.folder_names_and_paths[name] = ([default], set(MODEL_EXTENSIONS))
    extra = []
    for cn in folder_paths.folder_names_and_paths.get("custom_nodes", ([], None))[0]:
        extra.append(os.path.join(cn, "ComfyUI-Frame-Interpolation", "ckpts", "rife"))
    extra += list(folder_paths.folder_names_and_paths.get("frame_interpolation", ([], None))[0])
    paths = folder_paths.folder_names_and_paths["rife"][0]
    for p in extra:
        if os.path.isdir(p) and p not in paths:
            paths.append(p)


def model_folder_paths(folder: str) -> list[str]:
    """The directories searched for ``folder`` (empty when ComfyUI does not know the folder)."""
    import folder_paths

    try:
        return list(folder_paths.get_folder_paths(folder))
    except KeyError:
        return []


def list_models(folder: str, kind: str = "files", placeholder: bool = True) -> list[str]:
    """Dropdown options for a model folder: relative file names (``kind="files"``), model directories holding a
    ``model_index.json`` or ``config.json`` (``kind="dirs"``, diffusers layout), or both.

    Never raises: an unknown or empty folder gives ``[NO_MODELS]`` (or ``[]`` with ``placeholder=False``), so the
    node still registers; the loader's ``validate_inputs`` then explains where the weights go.
    """
    out: list[str] = []
    try:
        import folder_paths

        if folder in MODEL_FOLDERS and folder not in folder_paths.folder_names_and_paths:
            register_model_folders()  # a node module imported before the extension registered them
        if kind in ("files", "both") and folder in folder_paths.folder_names_and_paths:
            out += [f for f in folder_paths.get_filename_list(folder)
                    if os.path.splitext(f)[1].lower() in MODEL_EXTENSIONS]
        if kind in ("dirs", "both"):
            for base in model_folder_paths(folder):
                for root, dirs, files in os.walk(base, followlinks=True):
                    if "model_index.json" in files or ("config.json" in files and root != base):
                        out.append(os.path.relpath(root, base))
                        dirs.clear()
    except Exception:  # a broken folder must not take the node list down
        log.warning("Efficient4D: cannot list model folder %r", folder, exc_info=True)
    out = sorted(set(out))
    if not out and placeholder:
        return [NO_MODELS]
    return out


def missing_model_message(folder: str, name: str, where_to_get: Optional[str]) -> str:
    """What a loader says when ``name`` is not in ``folder``: the searched directories and where to get it."""
    paths = model_folder_paths(folder) or [f"models/{folder} (folder not registered)"]
    src = where_to_get or MODEL_FOLDERS.get(folder, "see docs/comfyui.md")
    what = "no model selected" if name in ("", None, NO_MODELS) else f"model file {name!r} not found"
    return (f"Efficient4D: {what} in ComfyUI's '{folder}' folder (searched: {', '.join(paths)}). "
            f"Put the weights there and refresh the page (press R). Where to get them: {src}")


def resolve_model(folder: str, name: str, where_to_get: Optional[str] = None) -> Path:
    """Full path of model ``name`` (a file, or a diffusers directory) in ComfyUI's model folder ``folder``.

    Raises:
        FileNotFoundError: naming the file, every searched directory and where to download the weights.
    """
    if name and name != NO_MODELS:
        rel = os.path.relpath(os.path.join("/", name), "/")  # no escaping the folder with ../
        for base in model_folder_paths(folder):
            p = os.path.join(base, rel)
            if os.path.isfile(p) or os.path.isdir(p):
                return Path(p)
    raise FileNotFoundError(missing_model_message(folder, name, where_to_get))


def validate_model_choice(folder: str, name: str, where_to_get: Optional[str] = None) -> Union[bool, str]:
    """For a loader's ``validate_inputs``: True when ``name`` resolves, else the clear missing-file message.

    Declaring the widget in ``validate_inputs`` replaces ComfyUI's generic "Value not in list" error by ours.
    """
    try:
        resolve_model(folder, name, where_to_get)
        return True
    except FileNotFoundError as e:
        return str(e)


# --------------------------------------------------------------------------------------------------------------
# diffusers folders and single files ("diffusers/<dir>" or "checkpoints/<file>" dropdown values)
# --------------------------------------------------------------------------------------------------------------
def diffusers_dirs(class_names: Iterable[str]) -> list[str]:
    """``diffusers/<dir>`` for every folder in ComfyUI's ``diffusers`` model folder whose ``model_index.json``
    names one of ``class_names`` as its ``_class_name``."""
    names = tuple(class_names)
    out = []
    for rel in list_models("diffusers", kind="dirs", placeholder=False):
        for base in model_folder_paths("diffusers"):
            try:
                with open(os.path.join(base, rel, "model_index.json")) as fh:
                    if json.load(fh).get("_class_name") in names:
                        out.append("diffusers/" + rel)
                        break
            except (OSError, ValueError):  # missing or unreadable model_index.json: not this kind of model
                continue
    return out


def checkpoint_files(name_filter) -> list[str]:
    """``checkpoints/<file>`` for files in ComfyUI's ``checkpoints`` folder whose lower-case base name passes
    ``name_filter``."""
    return ["checkpoints/" + f for f in list_models("checkpoints", placeholder=False)
            if name_filter(os.path.basename(f).lower())]


def resolve_choice(choice: str, where: str) -> Path:
    """``diffusers/<dir>`` or ``checkpoints/<file>`` -> full path (FileNotFoundError naming folder and source)."""
    folder, _, name = (choice or "").partition("/")
    if folder not in ("diffusers", "checkpoints") or not name:
        raise FileNotFoundError(missing_model_message("checkpoints", choice, where))
    return resolve_model(folder, name, where)


def validate_choice(choice: str, where: str) -> Union[bool, str]:
    """:func:`validate_model_choice` for ``diffusers/<dir>`` / ``checkpoints/<file>`` values."""
    try:
        resolve_choice(choice, where)
        return True
    except FileNotFoundError as e:
        return str(e)


# --------------------------------------------------------------------------------------------------------------
# loaded models under ComfyUI's memory manager
# --------------------------------------------------------------------------------------------------------------
class ModelBundle(torch.nn.Module):
    """One ``nn.Module`` over the weight-holding parts of a loaded model, so ComfyUI's ``ModelPatcher`` loads,
    counts and offloads them together.

    ``core`` is the object the core functions take (the SyncDreamer module, a diffusers pipeline, the Zero123
    components, a RIFE interpolator); it is kept as a plain attribute because ``parts`` already hold its weights.
    """

    def __init__(self, core: Any, parts: dict[str, torch.nn.Module], name: str, dtype: torch.dtype) -> None:
        super().__init__()
        if not parts:
            raise ValueError(f"a ModelBundle needs at least one weight-holding module, got none for {name!r}")
        self.parts = torch.nn.ModuleDict(parts)
        object.__setattr__(self, "core", core)
        self.name = name
        self.weight_dtype = dtype

    def get_dtype(self) -> torch.dtype:
        """The weights' dtype (ComfyUI's ``ModelPatcher.model_dtype`` reads it)."""
        return self.weight_dtype

    def forward(self, *args, **kwargs):
        raise TypeError(f"{self.name}: a ModelBundle is not called; nodes call core functions on .core")


def manage(core: Any, parts: dict[str, torch.nn.Module], name: str, dtype: torch.dtype):
    """A ``comfy.model_patcher.ModelPatcher`` over ``parts`` (loaded on ComfyUI's compute device, offloaded to
    its offload device). ``parts`` should already sit on the offload device."""
    import comfy.model_patcher

    bundle = ModelBundle(core, parts, name, dtype)
    return comfy.model_patcher.ModelPatcher(bundle, load_device=_devices.get_torch_device(),
                                            offload_device=_devices.offload_device())


def check_managed(patcher: Any, what: str, source: str) -> ModelBundle:
    """The :class:`ModelBundle` of ``patcher``; TypeError naming the node to connect when it is something else."""
    bundle = getattr(patcher, "model", None)
    if not isinstance(bundle, ModelBundle):
        raise TypeError(f"{what} must come from {source!r} (a managed Efficient4D model), got {type(patcher).__name__}")
    return bundle


def load_managed(patcher: Any, memory_required: int = 0) -> Any:
    """Ask ComfyUI to put ``patcher``'s model on its compute device and return the bundle's ``core``.

    ``memory_required``: bytes the node needs beyond the weights (activations); ComfyUI frees that much too, by
    offloading the least recently used models, never all of them. Our networks use plain torch layers, which
    cannot run partly offloaded, so the weights are always loaded completely.
    """
    import comfy.model_management as mm

    mm.load_models_gpu([patcher], memory_required=int(memory_required), force_full_load=True)
    return patcher.model.core


def reserve_memory(nbytes: int) -> None:
    """Make ``nbytes`` free on ComfyUI's compute device for work that holds no model (the 4D fit): ComfyUI
    offloads least recently used models until there is room, and nothing when there is room already."""
    import comfy.model_management as mm

    mm.free_memory(int(nbytes) + mm.minimum_inference_memory(), _devices.get_torch_device())
