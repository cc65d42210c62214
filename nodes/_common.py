"""Shared adapter helpers of the node pack: progress/cancel and autograd inside ComfyUI's inference mode.

Devices and dtypes live in :mod:`nodes._devices`, model folders and managed models in :mod:`nodes._models`, tensor
conversions in :mod:`nodes._tensors`, widget builders in :mod:`nodes._widgets`, paths in :mod:`nodes._paths`.
``comfy.*`` is imported inside the functions, so this module imports without ComfyUI.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import torch
from torch import Tensor

log = logging.getLogger("efficient4d")


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
# autograd inside ComfyUI
# --------------------------------------------------------------------------------------------------------------
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

