"""Custom ComfyUI socket types of the pack (V3 ``io.Custom``).

Each type carries one of our own Python objects between nodes; core types (IMAGE, MASK, VIDEO, STRING) are
used wherever data meets other packs. Use them in schemas as ``E4D_VIEW_MATRIX.Input("view_matrix", ...)`` and
``E4D_VIEW_MATRIX.Output(...)``.

=====================  ======================================================================
type                   Python object on the wire
=====================  ======================================================================
E4D_VIEW_MATRIX        :class:`e4d.viewmatrix.ViewMatrix` (T times x V views, cameras, times)
E4D_CONFIDENCE         :class:`e4d.confidence.Confidence` (c_rgb, c_ssim maps [T, V, H, W])
E4D_GAUSSIANS4D        :class:`e4d.gaussians4d.Gaussians4D` (native 4D Gaussians, fitted)
E4D_SYNCDREAMER        ``comfy.model_patcher.ModelPatcher`` over a ``nodes._models.ModelBundle`` (SyncDreamer)
E4D_INTERPOLATOR       the same for RIFE, or the weights-free :class:`e4d.interp.FlowInterpolator`
E4D_SVD                the same for a Stable Video Diffusion pipeline (UNet, VAE, image encoder)
E4D_GUIDANCE           an object following ``e4d.fit.guidance_api`` (SDS guidance for the fit)
=====================  ======================================================================
"""
from __future__ import annotations

from comfy_api.latest import io

E4D_VIEW_MATRIX = io.Custom("E4D_VIEW_MATRIX")
E4D_CONFIDENCE = io.Custom("E4D_CONFIDENCE")
E4D_GAUSSIANS4D = io.Custom("E4D_GAUSSIANS4D")
E4D_SYNCDREAMER = io.Custom("E4D_SYNCDREAMER")
E4D_INTERPOLATOR = io.Custom("E4D_INTERPOLATOR")
E4D_SVD = io.Custom("E4D_SVD")
E4D_GUIDANCE = io.Custom("E4D_GUIDANCE")

ALL_TYPES = (E4D_VIEW_MATRIX, E4D_CONFIDENCE, E4D_GAUSSIANS4D, E4D_SYNCDREAMER, E4D_INTERPOLATOR, E4D_SVD,
             E4D_GUIDANCE)
