"""E4D_PrepareObjectFrames: IMAGE + MASK → the object centred on white at 256² (the official preprocessing)."""
from __future__ import annotations

from typing import Optional

import torch
from comfy_api.latest import io

from . import _common as C
from . import _tensors as T
from ._widgets import field_input, param_default

CATEGORY = "Efficient4D/input"


class PrepareObjectFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from e4d.masks import masks_from_white
        from e4d.preprocess import PrepareConfig as P

        return io.Schema(
            node_id="E4D_PrepareObjectFrames",
            display_name="Prepare Object Frames (Efficient4D)",
            category=CATEGORY,
            description="Cut the object out of each frame with its mask, scale it so its longest side is 200 px and "
                        "centre it on a white 256x256 canvas (SyncDreamer's input recipe). One crop box for the "
                        "whole clip by default, so the object's motion inside the frame survives. Needs a mask: "
                        "RGBA input, the MASK of Load Video, or a background-removal node's mask. SyncDreamer-T runs this "
                        "same preprocessing itself (its 'prepare' input) when given raw frames.",
            inputs=[
                io.Image.Input("images", tooltip="Frames [N, H, W, 3] (or RGBA [N, H, W, 4], whose alpha is used "
                                                 "when no mask is connected)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Object mask, 1 = object (Load Video's MASK, a background-removal node). Core "
                                      "Load Image's mask is inverted: enable invert_mask for it."),
                field_input(P, "box", options=("clip", "frame")),
                field_input(P, "size", min=64, max=1024, step=8),
                field_input(P, "crop_size", min=0, max=1024, step=1),
                io.Boolean.Input("invert_mask", default=False,
                                 tooltip="Use 1 - mask (for core Load Image's mask, which is 1 on transparent pixels)."),
                io.Combo.Input("mask_fallback", options=["error", "white_background"], default="error",
                               tooltip="When neither a mask nor alpha is given: error (explains what to connect), or "
                                       "key out a plain white background (for frames generated on white, e.g. SVD)."),
                io.Float.Input("white_tolerance", default=param_default(masks_from_white, "threshold"), min=0.0,
                               max=0.5, step=0.01,
                               tooltip="white_background fallback: a pixel is background when all channels are above "
                                       "1 - tolerance."),
            ],
            outputs=[
                io.Image.Output(display_name="IMAGE", tooltip="Object frames on white, [N, size, size, 3]."),
                io.Mask.Output(display_name="MASK", tooltip="Their alpha, 1 = object, [N, size, size]."),
            ],
        )

    @classmethod
    def execute(cls, images, mask: Optional[torch.Tensor] = None, box: str = "clip", size: int = 256,
                crop_size: int = 200, invert_mask: bool = False, mask_fallback: str = "error",
                white_tolerance: float = 0.04) -> io.NodeOutput:
        from e4d.preprocess import PrepareConfig, prepare_object_frames

        rgb, alpha = T.image_in(images, "images")
        alpha = T.object_alpha(rgb, alpha, mask, invert_mask)
        if alpha is None and mask_fallback == "white_background":
            from e4d.masks import masks_from_white

            alpha = masks_from_white(rgb, float(white_tolerance))
        cfg = PrepareConfig(size=int(size), crop_size=int(crop_size), box=box)
        C.throw_if_interrupted()
        try:
            out = prepare_object_frames(rgb.cpu(), None if alpha is None else alpha.cpu(), cfg)
        except ValueError as e:
            if alpha is None:
                raise ValueError(f"{e}; or, for frames on a plain white background, set mask_fallback to "
                                 "white_background") from e
            raise
        return io.NodeOutput(T.image_out(out.images), T.mask_out(out.alpha))


NODES = [PrepareObjectFrames]
