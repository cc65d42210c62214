"""Start ComfyUI's ``main.py`` with import-only ``torchvision`` / ``torchaudio`` stubs (``comfy_env.stubs_dir``).

ComfyUI imports torchvision and (0.30+) torchaudio at start-up for model families we never run, and the PyPI wheels
matching torch 2.13 are CUDA builds that fail on CPU machines. transformers and diffusers decide once whether
torchvision exists (``importlib.util.find_spec``) and would take a stub for the real package, then crash on
``torchvision.transforms.InterpolationMode`` deep inside a model class. So they are asked first, with the stubs
not yet on the path; then the stubs go at the END of ``sys.path`` (an installed package still wins) and main.py
runs. Usage: ``python comfy_launch.py COMFY_ROOT STUBS_DIR [main.py arguments...]``.
"""
import importlib
import os
import runpy
import sys


def settle_optional_packages() -> None:
    """Make transformers and diffusers record whether torchvision/torchaudio really exist, before any stub does."""
    try:
        from transformers.utils import import_utils as tr

        for probe in ("is_torchvision_available", "is_torchaudio_available"):
            if hasattr(tr, probe):
                getattr(tr, probe)()  # lru_cached: later calls keep this answer
    except ImportError:
        pass
    try:
        importlib.import_module("diffusers.utils.import_utils")  # computes its flags at import time
    except ImportError:
        pass


def main() -> None:
    root, stubs, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    main_py = os.path.join(root, "main.py")
    sys.argv = [main_py, *argv]
    sys.path.insert(0, root)
    settle_optional_packages()
    sys.path.append(stubs)
    importlib.invalidate_caches()
    runpy.run_path(main_py, run_name="__main__")


if __name__ == "__main__":
    main()
