"""A measuring probe that bench/e2e_comfy.py installs into the benchmarked ComfyUI as a custom node package
(``custom_nodes/e4d_bench_probe/__init__.py``); it adds no nodes.

ComfyUI announces each node it starts with an ``executing`` message sent from its execution thread. The probe wraps
``PromptServer.send_sync``: at each such message it closes the previous node's interval with torch's CUDA peaks
since the last reset (``max_memory_allocated`` / ``max_memory_reserved``: what PyTorch itself holds, unlike
nvidia-smi's whole-device figure) and what ComfyUI's memory manager reports loaded, then resets the peaks.
``GET /e4d_bench/peaks`` returns the closed intervals. Nothing here runs outside a benchmark.
"""
from __future__ import annotations

import time

NODE_CLASS_MAPPINGS: dict = {}
_RECORDS: list = []
_OPEN: dict = {}


def _loaded_models() -> list:
    """(name, bytes on the compute device) of every model ComfyUI's memory manager holds loaded."""
    import comfy.model_management as mm

    out = []
    for lm in list(getattr(mm, "current_loaded_models", [])):
        try:
            patcher = lm.model
            inner = getattr(patcher, "model", None)
            name = getattr(inner, "name", None)  # our ModelBundle names its model
            out.append((name if isinstance(name, str) else type(inner).__name__, int(patcher.loaded_size())))
        except Exception:  # noqa: BLE001 - a half-unloaded entry must not break the run being measured
            continue
    return out


def _close_interval(next_node, prompt_id) -> None:
    import torch

    now = time.perf_counter()
    rec = None
    if _OPEN.get("node") is not None:
        rec = {"node": _OPEN["node"], "prompt_id": _OPEN["prompt_id"], "s": round(now - _OPEN["t"], 3)}
    if torch.cuda.is_available():
        if rec is not None:
            rec["torch_peak_alloc_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            rec["torch_peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
            rec["torch_alloc_end_gb"] = round(torch.cuda.memory_allocated() / 2**30, 3)
        torch.cuda.reset_peak_memory_stats()
    if rec is not None:
        rec["managed_models_gb"] = [(name, round(b / 2**30, 3)) for name, b in _loaded_models()]
        _RECORDS.append(rec)
    _OPEN.update(node=next_node, prompt_id=prompt_id, t=now)


def _install() -> None:
    from aiohttp import web
    from server import PromptServer

    original = PromptServer.send_sync

    def send_sync(self, event, data, sid=None):
        if event == "executing" and isinstance(data, dict):
            try:
                _close_interval(data.get("node"), data.get("prompt_id"))
            except Exception:  # noqa: BLE001 - measuring must never fail the prompt
                pass
        return original(self, event, data, sid)

    PromptServer.send_sync = send_sync

    @PromptServer.instance.routes.get("/e4d_bench/peaks")
    async def peaks(request):
        return web.json_response(_RECORDS)


_install()
