"""Efficient4D for ComfyUI: single-view video (or one image) to dynamic 3D as native 4D Gaussians.

ComfyUI imports this file at start-up. It stays cheap (no torch, no model code) and exposes only the V3
``comfy_entrypoint``; the node modules are imported when ComfyUI asks for the node list, each one guarded so a
missing optional dependency disables only its own nodes (see ``nodes/__init__.py``).
"""
import importlib.util
import logging
import os
import sys

WEB_DIRECTORY = "./web"

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
_log = logging.getLogger("efficient4d")


def _ensure_core_importable() -> None:
    """Make the pack's framework-free library importable as ``e4d`` (the node modules import it by that name).

    ComfyUI loads a pack by file path without putting the pack folder on ``sys.path``; rather than prepending the
    whole folder (its module names could shadow other packs'), only the name ``e4d`` is bound to our copy,
    unless an installed ``e4d`` (``pip install -e .`` of this repo) is already importable.
    """
    if "e4d" in sys.modules:
        return
    ours = os.path.join(_PACK_DIR, "e4d", "__init__.py")
    found = importlib.util.find_spec("e4d")
    if found is not None:
        if found.origin and os.path.realpath(found.origin) != os.path.realpath(ours):
            _log.info("Efficient4D: using the installed e4d at %s", found.origin)
        return
    spec = importlib.util.spec_from_file_location("e4d", ours, submodule_search_locations=[os.path.dirname(ours)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["e4d"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["e4d"]
        raise


async def comfy_entrypoint():
    """V3 entry point: returns the pack's ComfyExtension (node list built lazily, one guard per topic module)."""
    _ensure_core_importable()
    from .nodes import Efficient4DExtension

    return Efficient4DExtension()
