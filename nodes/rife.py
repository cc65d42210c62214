"""RIFE / flow frame interpolation nodes: loader, view-matrix time interpolation, plain IMAGE interpolation,
confidence maps (paper eq. 13, 16, 17). Thin adapters over e4d.interp and e4d.confidence_maps.

Core ComfyUI's INTERP_MODEL (its RIFE 4.25/4.26 and FILM loader) is not accepted here: those models return the
blended frame only, while our view-matrix interpolation moves each image's alpha (coverage) with the same flow
and blend weights as its colour (``Interpolator.interpolate_with_extra``). For a plain video, core's 'Run Frame
Interpolation Model' node does what 'Interpolate Frames' does.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace

import torch
from comfy_api.latest import io

from . import _common as C
from . import _devices as D
from . import _models as M
from . import _tensors as T
from ._widgets import field_default, field_input, param_default
from .types import E4D_CONFIDENCE, E4D_INTERPOLATOR, E4D_VIEW_MATRIX

CATEGORY = "Efficient4D/interpolation"
LOADER = "Load Frame Interpolator (RIFE / flow)"
FLOW_CHOICE = "flow (no weights)"
"""Always the first loader option: the OpenCV DIS fallback, which needs no download."""
SCALES = ["1.0", "0.5", "0.25", "2.0", "4.0"]
WHERE = ("RIFE weights: rife47.pth / rife49.pth (ComfyUI-Frame-Interpolation's ckpts/rife) or an official "
         "flownet.pkl (Practical-RIFE 4.x, or Efficient4D's RIFE HD v3.6) into ComfyUI/models/rife")


def _checkpoints() -> list[str]:
    return [FLOW_CHOICE] + M.list_models("rife", placeholder=False)


@contextlib.contextmanager
def _ready(interpolator, scale: str, fp16: bool):
    """The interpolator to run: the flow fallback as it is; a RIFE loader output loaded by ComfyUI's memory
    manager, with the node's flow scale, under fp16 autocast on CUDA when ``fp16`` (the managed weights stay
    float32, so no second copy exists)."""
    from e4d.interp import Interpolator, RifeInterpolator

    if isinstance(interpolator, Interpolator):  # the weights-free flow fallback
        yield interpolator
        return
    M.check_managed(interpolator, "interpolator", LOADER)
    rife = M.load_managed(interpolator)
    interp = RifeInterpolator(rife.net, "", replace(rife.config, scale=float(scale)))
    interp.name = rife.name
    with torch.autocast("cuda", dtype=torch.float16, enabled=bool(fp16) and interp.device.type == "cuda"):
        yield interp


def _common_inputs(default_batch: int) -> list:
    from e4d.interp import RifeConfig

    return [
        io.Combo.Input("scale", options=SCALES, default=str(field_default(RifeConfig, "scale")),
                       tooltip="RIFE flow scale: 0.5 / 0.25 estimate flow on a coarser grid (large images, fast "
                               "motion), 2 / 4 on a finer one. Ignored by the flow fallback."),
        io.Boolean.Input("fp16", default=True,
                         tooltip="Run RIFE under fp16 autocast on CUDA (faster, tiny differences; the weights "
                                 "stay float32). Ignored on CPU and by the flow fallback."),
        io.Int.Input("batch", default=default_batch, min=1, max=1024,
                     tooltip="Images per interpolator call; lower it if you run out of GPU memory."),
    ]


class RIFELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from e4d.interp import RifeConfig

        return io.Schema(
            node_id="E4D_RIFELoader",
            display_name="Load Frame Interpolator (RIFE / flow)",
            category=CATEGORY,
            description="Load a RIFE frame interpolator (HD v3.6 = Efficient4D's flownet.pkl, or 4.x: rife47.pth, "
                        "rife49.pth, flownet.pkl of 4.6/4.17/4.22/4.25/4.26). The version is detected from the "
                        "weights, not the file name; a FILM file is refused with a pointer to core ComfyUI's "
                        "frame-interpolation nodes. 'flow (no weights)' uses OpenCV DIS optical flow and works "
                        "without any download. RIFE weights are handed to ComfyUI's memory manager.",
            inputs=[
                io.Combo.Input("checkpoint", options=_checkpoints(), default=FLOW_CHOICE,
                               tooltip="File in ComfyUI/models/rife (also lists ComfyUI-Frame-Interpolation's "
                                       "ckpts/rife). " + WHERE + "."),
                field_input(RifeConfig, "ensemble", note="Also runs the reversed pair (slower); 4.22+ cannot."),
            ],
            outputs=[
                E4D_INTERPOLATOR.Output(display_name="interpolator",
                                        tooltip="The loaded interpolator (RIFE: managed by ComfyUI's memory "
                                                "manager)."),
                io.String.Output(display_name="name", tooltip="Which interpolator was loaded, e.g. 'rife 4.7 "
                                                              "(rife47.pth)' or 'flow (no weights, OpenCV DIS ...)'."),
            ],
        )

    @classmethod
    def validate_inputs(cls, checkpoint: str = FLOW_CHOICE, ensemble: bool = False) -> bool | str:
        if checkpoint == FLOW_CHOICE:
            return True
        return M.validate_model_choice("rife", checkpoint, WHERE)

    @classmethod
    def execute(cls, checkpoint: str, ensemble: bool = False) -> io.NodeOutput:
        from e4d.interp import RifeConfig, load_interpolator

        if checkpoint == FLOW_CHOICE:
            interp = load_interpolator(None)
            return io.NodeOutput(interp, interp.name)
        path = M.resolve_model("rife", checkpoint, WHERE)
        interp = load_interpolator(path, RifeConfig(ensemble=ensemble), device=D.offload_device(), dtype=torch.float32)
        C.log.info("Efficient4D: frame interpolator %s", interp.name)
        return io.NodeOutput(M.manage(interp, {"net": interp.net}, interp.name, torch.float32), interp.name)


class InterpolateViews(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from e4d.interp.sequences import METHODS, interpolate_view_matrix

        return io.Schema(
            node_id="E4D_InterpolateViews",
            display_name="Interpolate View Matrix in Time",
            category=CATEGORY,
            description="Densify the view matrix in time (paper §4.1: midpoints twice, K frames -> 4K-3). Every "
                        "view is interpolated on its own images (flow never crosses view borders); alpha and the "
                        "input video follow the same flow; times are interpolated linearly.",
            inputs=[
                E4D_VIEW_MATRIX.Input("view_matrix", tooltip="Generated view matrix (T times x V views)."),
                E4D_INTERPOLATOR.Input("interpolator", tooltip="From 'Load Frame Interpolator'."),
                io.Int.Input("multiplier", default=4, min=1, max=16,
                             tooltip="m: T frames become (T-1)*m+1. Paper: 4 (midpoints applied twice)."),
                io.Combo.Input("method", options=list(METHODS),
                               default=param_default(interpolate_view_matrix, "method"),
                               tooltip="recursive: repeated midpoints (paper; m must be 2, 4, 8, 16). direct: one "
                                       "call per in-between at t=k/m (RIFE 4.x, flow). auto: direct when the model "
                                       "takes a timestep, recursive for HD v3.6."),
            ] + _common_inputs(param_default(interpolate_view_matrix, "batch")),
            outputs=[
                E4D_VIEW_MATRIX.Output(display_name="view_matrix", tooltip="The view matrix with (T-1)*m+1 times."),
                io.String.Output(display_name="info", tooltip="Interpolator used and the frame counts."),
            ],
        )

    @classmethod
    def execute(cls, view_matrix, interpolator, multiplier: int = 4, method: str = "auto", scale: str = "1.0",
                fp16: bool = True, batch: int = 64) -> io.NodeOutput:
        from e4d.interp.sequences import interpolate_view_matrix

        with _ready(interpolator, scale, fp16) as interp:
            out = interpolate_view_matrix(view_matrix.to(interp.device), interp, multiplier=multiplier,
                                          method=method, batch=batch, callback=C.progress_callback())
        out = out.to(D.intermediate_device())
        info = f"{interp.name}: {view_matrix.T} -> {out.T} times x {out.V} views"
        return io.NodeOutput(out, info)


class InterpolateFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from e4d.interp.sequences import METHODS, interpolate_frames

        return io.Schema(
            node_id="E4D_InterpolateFrames",
            display_name="Interpolate Frames (RIFE / flow)",
            category=CATEGORY,
            description="Frame interpolation of any IMAGE batch (a video): N frames become (N-1)*m+1, ordered "
                        "frame0, its m-1 in-betweens, ..., last frame (like ComfyUI-Frame-Interpolation). RGBA "
                        "batches keep their alpha (moved with the same flow).",
            inputs=[
                io.Image.Input("images", tooltip="Frames [N, H, W, 3 or 4], N >= 2."),
                E4D_INTERPOLATOR.Input("interpolator", tooltip="From 'Load Frame Interpolator'."),
                io.Int.Input("multiplier", default=2, min=1, max=16, tooltip="m: N frames become (N-1)*m+1."),
                io.Combo.Input("method", options=list(METHODS), default=param_default(interpolate_frames, "method"),
                               tooltip="direct: t=k/m calls; recursive: repeated midpoints (m power of 2); "
                                       "auto: direct unless the model only makes midpoints."),
            ] + _common_inputs(param_default(interpolate_frames, "batch")),
            outputs=[io.Image.Output(display_name="IMAGE", tooltip="Interpolated frames.")],
        )

    @classmethod
    def execute(cls, images, interpolator, multiplier: int = 2, method: str = "auto", scale: str = "1.0",
                fp16: bool = True, batch: int = 16) -> io.NodeOutput:
        from e4d.interp.sequences import interpolate_frames

        rgb, alpha = T.image_in(images, "images")
        if rgb.shape[0] < 2:
            raise ValueError(f"images must hold at least 2 frames to interpolate between, got {rgb.shape[0]}")
        x = rgb if alpha is None else torch.cat((rgb, alpha[..., None]), -1)
        with _ready(interpolator, scale, fp16) as interp:
            out = interpolate_frames(x, interp, multiplier, method, batch, callback=C.progress_callback())
        return io.NodeOutput(T.image_out(out[..., :3], None if alpha is None else out[..., 3]))


class ConfidenceMaps(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from e4d.confidence_maps import ConfidenceConfig

        return io.Schema(
            node_id="E4D_ConfidenceMaps",
            display_name="Confidence Maps (interpolation consistency)",
            category=CATEGORY,
            description="Per-pixel confidence of every view-matrix image (paper eq. 13, 16, 17): each frame is "
                        "predicted from its neighbours t±1 and t±2 by the interpolator; where the prediction "
                        "disagrees, the fit trusts the image less. Frames without neighbours on both sides get 1.",
            inputs=[
                E4D_VIEW_MATRIX.Input("view_matrix", tooltip="Usually the time-interpolated view matrix."),
                E4D_INTERPOLATOR.Input("interpolator", tooltip="From 'Load Frame Interpolator'."),
                field_input(ConfidenceConfig, "mode", options=("paper", "official")),
            ] + _common_inputs(field_default(ConfidenceConfig, "batch")),
            outputs=[
                E4D_CONFIDENCE.Output(display_name="confidence", tooltip="c_rgb and c_ssim maps [T, V, H, W]."),
                io.Image.Output(display_name="preview",
                                tooltip="Per time: a row of C_rgb over a row of C_ssim for the views (white = 1)."),
            ],
        )

    @classmethod
    def execute(cls, view_matrix, interpolator, mode: str = "paper", scale: str = "1.0", fp16: bool = True,
                batch: int = 64) -> io.NodeOutput:
        from e4d.confidence_maps import ConfidenceConfig, confidence_for_view_matrix, confidence_preview

        with _ready(interpolator, scale, fp16) as interp:
            conf = confidence_for_view_matrix(view_matrix, interp, ConfidenceConfig(mode=mode, batch=batch),
                                              callback=C.progress_callback())
        conf = conf.to(D.intermediate_device())
        return io.NodeOutput(conf, T.image_out(confidence_preview(conf)))


NODES = [RIFELoader, InterpolateViews, InterpolateFrames, ConfidenceMaps]
