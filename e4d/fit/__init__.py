"""The 4D Gaussian fit (Efficient4D paper §4.2): config presets, losses, batched trainer, densify strategy,
guidance hook.

Importing this package is cheap; the renderer (gsplat on CUDA) is resolved on the first :func:`fit` call.
"""
from .config import PRESETS, FitConfig, preset, reduced_for_cpu
from .densify import DensifyState, DensifyStrategy
from .evaluate import evaluate, render_view_matrix
from .guidance_api import Guidance
from .trainer import FitResult, fit, loss_weights

__all__ = ["FitConfig", "preset", "reduced_for_cpu", "PRESETS", "fit", "FitResult", "Guidance", "evaluate",
           "render_view_matrix", "DensifyStrategy", "DensifyState", "loss_weights"]
