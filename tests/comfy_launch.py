"""Start ComfyUI's ``main.py`` with an import-only ``torchvision`` stub that only ComfyUI's own start-up sees.

ComfyUI imports ``torchvision`` at start-up (``comfy/ldm/cascade``, ``comfy/ldm/cosmos``) without using it on our
paths, and the PyPI torchvision wheel for torch 2.13 is a CUDA build that fails on CPU machines. A stub left in
``sys.modules`` would make transformers/diffusers believe torchvision is installed (they test
``importlib.util.find_spec``) and crash on ``torchvision.transforms.InterpolationMode``. So: put the stub on the
path, import the ComfyUI modules that need it, then remove the stub from ``sys.modules`` and ``sys.path`` before
``main.py`` runs. Usage: ``python comfy_launch.py COMFY_ROOT STUBS_DIR [main.py arguments...]``.
"""
import importlib
import importlib.util
import os
import runpy
import sys

NEED_TORCHVISION = ("comfy.ldm.ace.vae.music_dcae_pipeline", "comfy.ldm.cascade.stage_c_coder", "comfy.ldm.cascade.controlnet", "comfy.ldm.cosmos.model",
                    "comfy.ldm.cosmos.predict2")


def main() -> None:
    root, stubs, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    main_py = os.path.join(root, "main.py")
    sys.argv = [main_py, *argv]
    sys.path.insert(0, root)
    if importlib.util.find_spec("torchvision") is None:
        sys.path.insert(0, stubs)
        import comfy.options

        comfy.options.enable_args_parsing()  # parse main.py's flags (--cpu) before comfy.model_management loads
        for name in NEED_TORCHVISION:
            try:
                importlib.import_module(name)
            except Exception as e:  # noqa: BLE001 - a failing optional model module is ComfyUI's business
                print(f"comfy_launch: pre-import of {name} failed: {e}", file=sys.stderr)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.path.remove(stubs)
        importlib.invalidate_caches()
    runpy.run_path(main_py, run_name="__main__")


if __name__ == "__main__":
    main()
