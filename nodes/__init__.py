"""The pack's ComfyExtension: collects ``NODES`` from every topic module, one import guard per module.

A topic module that fails to import (an optional dependency missing, a bug) is logged as a warning with its
traceback and only its nodes are disabled; a module named in :data:`TOPIC_MODULES` that does not exist is logged
as an error (a typo or a file missing from the install must show), and the other modules still load.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging

from comfy_api.latest import ComfyExtension, io

log = logging.getLogger("efficient4d")

TOPIC_MODULES = ("video", "prepare", "viewmatrix", "fit", "render", "export", "mesh",
                 "syncdreamer", "rife", "svd", "guidance", "preview", "splat")
"""Node modules in menu order; each defines ``NODES = [io.ComfyNode subclasses]``."""


def _module_nodes(name: str) -> list[type[io.ComfyNode]]:
    from ._guards import guard_float_inputs

    full = f"{__name__}.{name}"
    if importlib.util.find_spec(full) is None:
        log.error("Efficient4D: node module %s does not exist (listed in TOPIC_MODULES of %s); its nodes are "
                  "missing: fix the name or reinstall the pack", full, __name__)
        return []
    try:
        module = importlib.import_module(full)
        nodes = list(getattr(module, "NODES"))
        for cls in nodes:
            if not (isinstance(cls, type) and issubclass(cls, io.ComfyNode)):
                raise TypeError(f"{full}.NODES holds {cls!r}, which is not an io.ComfyNode subclass")
            cls.GET_SCHEMA()  # a broken schema disables this module here, not the whole pack later
            guard_float_inputs(cls)  # every FLOAT input finite and in range before execute (nodes/_guards.py)
        return nodes
    except Exception:
        log.warning("Efficient4D: nodes of %s are disabled because the module failed to load", full, exc_info=True)
        return []


def load_node_classes(modules: tuple[str, ...] = TOPIC_MODULES) -> list[type[io.ComfyNode]]:
    """All node classes of the pack, first definition winning on duplicate node ids (logged)."""
    out: list[type[io.ComfyNode]] = []
    seen: dict[str, str] = {}
    for name in modules:
        for cls in _module_nodes(name):
            node_id = cls.GET_SCHEMA().node_id
            if node_id in seen:
                log.warning("Efficient4D: node id %s defined in %s and %s; keeping the first", node_id, seen[node_id], name)
                continue
            seen[node_id] = name
            out.append(cls)
    return out


class Efficient4DExtension(ComfyExtension):
    """Registers the model folders and lists the nodes (ComfyUI 0.3.x never calls ``on_load`` for packs, so
    ``get_node_list`` registers the folders too; registration is idempotent)."""

    async def on_load(self) -> None:
        _register_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        _register_folders()
        return load_node_classes()


def _register_folders() -> None:
    from ._models import register_model_folders

    try:
        register_model_folders()
    except Exception:
        log.warning("Efficient4D: could not register model folders", exc_info=True)
