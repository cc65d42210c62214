"""Shared adapter helpers of the node pack: progress/cancel, devices, model folders, tensor conversions.

Everything ComfyUI-specific (``comfy.*``, ``folder_paths``) is imported inside the functions, so unit tests can
monkeypatch those modules and the core stays importable without ComfyUI. Nodes stay thin: convert ComfyUI
types with :func:`image_in` / :func:`mask_in`, call one core function with :func:`progress_callback`, convert
back with :func:`image_out` / :func:`mask_out`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor

log = logging.getLogger("efficient4d")

MODEL_EXTENSIONS = frozenset({".ckpt", ".pth", ".pkl", ".safetensors", ".pt"})
"""File types our loaders accept (safetensors preferred; pickles are read with ``weights_only=True``)."""

MODEL_FOLDERS: dict[str, str] = {
    "syncdreamer": "SyncDreamer checkpoint syncdreamer-pretrain.ckpt (about 5 GB) from "
                   "https://huggingface.co/liuyuan-pal/SyncDreamer",
    "rife": "RIFE weights, e.g. rife47.pth / flownet.pkl (~20 MB) from ComfyUI-Frame-Interpolation's ckpts/rife "
            "or https://github.com/hzwer/Practical-RIFE",
}
"""The model folders this pack registers (``models/<name>``) and where their weights come from."""

NO_MODELS = "<no files: see the tooltip>"
"""Dropdown entry shown when a model folder is empty; picking it fails with a message naming folder and source."""


# --------------------------------------------------------------------------------------------------------------
# progress and cancel
# --------------------------------------------------------------------------------------------------------------
def progress_callback(total_hint: Optional[int] = None, node_id: Optional[str] = None,
                      check_interrupt: bool = True) -> Callable[[int, int, dict], None]:
    """An :data:`e4d.progress.ProgressCallback` driving ComfyUI's progress bar and honouring its cancel button.

    The returned ``callback(step, total, info)`` first calls
    ``comfy.model_management.throw_exception_if_processing_interrupted()`` (so an interrupt unwinds the core
    loop from inside, and nothing half-done is written), then moves a ``comfy.utils.ProgressBar``. The bar is
    created on the first call with ``total`` (or ``total_hint``); when a node runs several loops in a row, a new
    ``total`` restarts the bar. Outside ComfyUI (no ``comfy`` importable) it is a silent no-op.
    """
    state: dict[str, Any] = {"bar": None, "total": total_hint}

    def callback(step: int, total: int, info: Optional[dict] = None) -> None:
        if check_interrupt:
            throw_if_interrupted()
        try:
            import comfy.utils
        except ImportError:
            return
        total = int(total or state["total"] or 1)
        if state["bar"] is None or total != state["total"]:
            state["bar"] = comfy.utils.ProgressBar(total, node_id=node_id)
            state["total"] = total
        state["bar"].update_absolute(min(int(step), total), total)

    return callback


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed cancel (no-op outside ComfyUI)."""
    try:
        import comfy.model_management as mm
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


# --------------------------------------------------------------------------------------------------------------
# devices and memory
# --------------------------------------------------------------------------------------------------------------
def _mm():
    try:
        import comfy.model_management as mm
        return mm
    except ImportError:
        return None


def get_torch_device() -> torch.device:
    """The compute device ComfyUI chose (``--cpu``, ``--cuda-device`` ...); CUDA-or-CPU outside ComfyUI."""
    mm = _mm()
    if mm is not None:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def intermediate_device() -> torch.device:
    """Where IMAGE/MASK tensors between nodes live (CPU in stock ComfyUI)."""
    mm = _mm()
    return mm.intermediate_device() if mm is not None else torch.device("cpu")


def offload_device() -> torch.device:
    """Where idle models wait between stages (CPU unless ComfyUI runs with --gpu-only / --highvram)."""
    mm = _mm()
    return mm.unet_offload_device() if mm is not None else torch.device("cpu")


def should_use_fp16(device: Optional[torch.device] = None, model_params: int = 0) -> bool:
    """ComfyUI's fp16 policy for ``device`` (respects --force-fp32 etc.); False on CPU outside ComfyUI."""
    mm = _mm()
    device = get_torch_device() if device is None else device
    if mm is not None:
        return bool(mm.should_use_fp16(device, model_params=model_params))
    return device.type == "cuda"


def should_use_bf16(device: Optional[torch.device] = None, model_params: int = 0) -> bool:
    """ComfyUI's bf16 policy for ``device``."""
    mm = _mm()
    device = get_torch_device() if device is None else device
    if mm is not None:
        return bool(mm.should_use_bf16(device, model_params=model_params))
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def free_between_stages(unload_models: bool = True) -> None:
    """Make room before a heavy stage: unload ComfyUI-managed models (optional) and empty the CUDA cache.

    The stages of the chain (SyncDreamer, RIFE, SVD, the fit) run one after another; freeing here is what lets
    one 24 GB GPU hold the whole chain.
    """
    mm = _mm()
    if mm is None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return
    if unload_models:
        mm.unload_all_models()
    mm.soft_empty_cache()


def normal_tensors(obj: Any) -> Any:
    """A copy of ``obj`` (tensor, dataclass, list/tuple/dict of them) whose *inference tensors* are cloned into
    normal ones; other tensors are shared.

    ComfyUI runs every node under ``torch.inference_mode()``; tensors made there cannot take part in autograd
    ("Inference tensors cannot be saved for backward"). A node that optimises (the 4D fit, SDS guidance) calls
    this inside ``with torch.inference_mode(False), torch.enable_grad():`` on everything it feeds to autograd.
    For ``nn.Module`` objects use :func:`normal_module_tensors` (in place).
    """
    import dataclasses

    if isinstance(obj, Tensor):
        return obj.clone() if obj.is_inference() else obj
    if isinstance(obj, torch.nn.Module):
        return normal_module_tensors(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: normal_tensors(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, (list, tuple)):
        return type(obj)(normal_tensors(x) for x in obj)
    if isinstance(obj, dict):
        return {k: normal_tensors(v) for k, v in obj.items()}
    return obj


def normal_module_tensors(module: torch.nn.Module) -> torch.nn.Module:
    """Replace, in place, the inference-tensor parameters and buffers of ``module`` by normal clones (see
    :func:`normal_tensors`); call inside ``torch.inference_mode(False)``. Returns ``module``."""
    with torch.inference_mode(False):
        for m in module.modules():
            for name, p in list(m._parameters.items()):
                if p is not None and p.is_inference():
                    m._parameters[name] = torch.nn.Parameter(p.clone(), requires_grad=p.requires_grad)
            for name, b in list(m._buffers.items()):
                if b is not None and b.is_inference():
                    m._buffers[name] = b.clone()
    return module


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


def _missing_model_message(folder: str, name: str, where_to_get: Optional[str]) -> str:
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
    raise FileNotFoundError(_missing_model_message(folder, name, where_to_get))


def validate_model_choice(folder: str, name: str, where_to_get: Optional[str] = None) -> "bool | str":
    """For a loader's ``validate_inputs``: True when ``name`` resolves, else the clear missing-file message.

    Declaring the widget in ``validate_inputs`` replaces ComfyUI's generic "Value not in list" error by ours.
    """
    try:
        resolve_model(folder, name, where_to_get)
        return True
    except FileNotFoundError as e:
        return str(e)


# Tensor conversions live in their own module; re-exported here because nodes call them as C.image_in etc.
from ._tensors import image_in, image_out, informative_alpha, mask_in, mask_out, parse_floats  # noqa: E402,F401
