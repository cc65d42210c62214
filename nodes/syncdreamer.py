"""SyncDreamer-T nodes: checkpoint loader and frames -> view matrix (Efficient4D stage 1). Thin adapters over
:mod:`e4d.syncdreamer`."""
from __future__ import annotations

from typing import Optional

import torch
from comfy_api.latest import io

from . import _common as C
from . import _devices as D
from . import _models as M
from . import _tensors as T
from ._widgets import field_default, field_input, param_default
from .types import E4D_SYNCDREAMER, E4D_VIEW_MATRIX

CATEGORY = "Efficient4D/syncdreamer"
WHERE = ("syncdreamer-pretrain.ckpt from https://huggingface.co/liuyuan-pal/SyncDreamer into ComfyUI/models/syncdreamer "
         "(CLIP is inside the checkpoint; ViT-L-14.pt is not needed)")
LOADER = "Load SyncDreamer"


class SyncDreamerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from e4d.syncdreamer.speed import COMPILE_MODES

        return io.Schema(
            node_id="E4D_SyncDreamerLoader",
            display_name=LOADER,
            category=CATEGORY,
            description="Load the official SyncDreamer checkpoint (syncdreamer-pretrain.ckpt, Lightning format; "
                        "a .safetensors conversion works too) into our own implementation. Sizes are read from "
                        "the weights; CLIP ViT-L/14 is taken from the checkpoint. The model is handed to "
                        "ComfyUI's memory manager, which loads it when SyncDreamer-T runs and offloads it when "
                        "another model needs the room.",
            inputs=[
                io.Combo.Input("checkpoint", options=M.list_models("syncdreamer"),
                               tooltip="File in ComfyUI/models/syncdreamer: " + WHERE + "."),
                io.Combo.Input("dtype", options=list(D.DTYPE_CHOICES), default="auto",
                               tooltip="Weight precision. auto: bf16/fp16 on a GPU (ComfyUI's policy), fp32 on CPU. "
                                       "fp16 and bf16 halve the memory of the weights."),
                io.Combo.Input("compile", options=["off", *COMPILE_MODES], default="off",
                               tooltip="torch.compile the UNet and frustum net (CUDA only): faster sampling after a "
                                       "one-off compile per view_batch (see docs/benchmarks.md). off: eager."),
                io.Combo.Input("clip_override", options=["none"] + M.list_models("clip_vision", placeholder=False),
                               default="none", optional=True,
                               tooltip="Optional CLIP ViT-L/14 image tower from models/clip_vision (Hugging Face "
                                       "clip-vit-large-patch14 weights or OpenAI ViT-L-14.pt) replacing the copy inside "
                                       "the SyncDreamer checkpoint. none: use the checkpoint's own (the official setup)."),
            ],
            outputs=[E4D_SYNCDREAMER.Output(display_name="syncdreamer",
                                            tooltip="The loaded model, managed by ComfyUI's memory manager.")],
        )

    @classmethod
    def validate_inputs(cls, checkpoint: str = "", dtype: str = "auto") -> bool | str:
        return M.validate_model_choice("syncdreamer", checkpoint, WHERE)

    @classmethod
    def execute(cls, checkpoint: str, dtype: str = "auto", compile: str = "off",
                clip_override: str = "none") -> io.NodeOutput:
        from e4d.syncdreamer.loader import load_syncdreamer

        path = M.resolve_model("syncdreamer", checkpoint, WHERE)
        device = D.get_torch_device()
        dt = D.pick_dtype(dtype, device, prefer_bf16=True)
        clip = None if clip_override in (None, "", "none") else M.resolve_model(
            "clip_vision", clip_override, "a CLIP ViT-L/14 file (openai/clip-vit-large-patch14) in models/clip_vision")
        model = load_syncdreamer(path, dtype=dt, device=D.offload_device(), clip_override=clip)
        if compile != "off" and torch.device(device).type == "cuda":
            from e4d.syncdreamer.speed import accelerate

            accelerate(model, compile_mode=compile)  # compiles lazily at the first sampling step
        return io.NodeOutput(M.manage(model, {"syncdreamer": model}, path.name, dt))


def views_preview(images: torch.Tensor, cols: int = 4) -> torch.Tensor:
    """``[K, V, H, W, 3]`` -> one grid image per frame ``[K, rows*H, cols*W, 3]`` (views row by row)."""
    K, V, H, W, _ = images.shape
    rows = -(-V // cols)
    pad = rows * cols - V
    if pad:
        images = torch.cat([images, images.new_ones(K, pad, H, W, 3)], dim=1)
    g = images.reshape(K, rows, cols, H, W, 3).permute(0, 1, 3, 2, 4, 5)
    return g.reshape(K, rows * H, cols * W, 3)


GUIDANCE_MODES = ("decomposed", "cfg", "none")
"""SamplerConfig.guidance values (the sampler's check() lists the same three)."""


def _activation_bytes(view_batch: int) -> int:
    """Memory SyncDreamer-T needs beyond its weights, for ComfyUI's memory manager to make room: a fixed part (the
    volumes, CLIP and VAE passes) plus a part per (frame, view) pair of a UNet chunk, bounding the reserved memory
    in docs/benchmarks.md's SyncDreamer-T table."""
    return int((2.0 + 0.4 * view_batch) * 1024 ** 3)


class SyncDreamerT(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from e4d.syncdreamer.pipeline import PREPARE_MODES, syncdreamer_t
        from e4d.syncdreamer.sampler import SamplerConfig as S

        s1, s2 = field_default(S, "scales")
        return io.Schema(
            node_id="E4D_SyncDreamerT",
            display_name="SyncDreamer-T (frames -> view matrix)",
            category=CATEGORY,
            description="Efficient4D stage 1: K frames of an object video -> 16 views each (elevation 30 deg), "
                        "consistent across views (SyncDreamer's shared volume) and across time (the volumes of "
                        "neighbouring frames are averaged at every denoising step, paper eq. 10/15).",
            inputs=[
                E4D_SYNCDREAMER.Input("syncdreamer", tooltip="From 'Load SyncDreamer'."),
                io.Image.Input("images", tooltip="Video frames [N, H, W, 3] (or RGBA). Either already prepared "
                                                 "(256x256 on white, from 'Prepare Object Frames') or raw with a mask."),
                io.Mask.Input("mask", optional=True, tooltip="Object mask, 1 = object (optional; RGBA alpha is used "
                                                            "otherwise)."),
                io.Int.Input("frames", default=param_default(syncdreamer_t, "num_frames"), min=0, max=256,
                             tooltip="K: frames kept, evenly spread over the input (0 = all). Paper: 16."),
                field_input(S, "temporal_weights"),
                field_input(S, "cyclic"),
                field_input(S, "elevation", min=-30.0, max=60.0, step=1.0),
                field_input(S, "steps", min=1, max=1000),
                field_input(S, "eta", min=0.0, max=1.0, step=0.05),
                field_input(S, "guidance", options=GUIDANCE_MODES),
                field_input(S, "scales", widget="scale1", default=s1, min=0.0, max=20.0, step=0.1,
                            tooltip="Decomposed: s1 (paper 2.0); cfg: the guidance scale (SyncDreamer 2.0)."),
                field_input(S, "scales", widget="scale2", default=s2, min=0.0, max=20.0, step=0.1,
                            tooltip="Decomposed only: s2 (paper 1.0)."),
                field_input(S, "seed", min=0, max=0xFFFFFFFF, control_after_generate=True),
                field_input(S, "view_batch", min=1, max=256),
                io.Combo.Input("prepare", options=list(PREPARE_MODES),
                               default=param_default(syncdreamer_t, "prepare"),
                               tooltip="Object cropping (the same preprocessing as 'Prepare Object Frames', which "
                                       "owns it): auto = square frames at 256x256, or square frames without "
                                       "mask/alpha, are used as they are (already prepared); anything else is "
                                       "cropped with one box for the clip (needs a mask or RGBA); clip / frame: crop "
                                       "box per clip / per frame; none: use the frames as they are."),
                io.Boolean.Input("invert_mask", default=False,
                                 tooltip="Use 1 - mask (core Load Image's mask is 1 on transparent pixels)."),
            ],
            outputs=[
                E4D_VIEW_MATRIX.Output(display_name="view_matrix", tooltip="K times x 16 views (+ the input frames)."),
                io.Image.Output(display_name="preview", tooltip="One 4x4 grid of the 16 views per frame."),
            ],
        )

    @classmethod
    def execute(cls, syncdreamer, images, mask: Optional[torch.Tensor] = None, frames: int = 16,
                temporal_weights: str = "auto", cyclic: bool = False, elevation: float = 0.0, steps: int = 50,
                eta: float = 1.0, guidance: str = "decomposed", scale1: float = 2.0, scale2: float = 1.0,
                seed: int = 0, view_batch: int = 16, prepare: str = "auto",
                invert_mask: bool = False) -> io.NodeOutput:
        from e4d.syncdreamer.pipeline import syncdreamer_t
        from e4d.syncdreamer.sampler import SamplerConfig
        from e4d.syncdreamer.temporal import parse_kernel

        M.check_managed(syncdreamer, "syncdreamer", LOADER)
        parse_kernel(temporal_weights, max(frames, 1))  # fail before loading anything on the GPU
        rgb, alpha = T.image_in(images, "images")
        alpha = T.object_alpha(rgb, alpha, mask, invert_mask)
        scales = (scale1, scale2) if guidance == "decomposed" else (scale1,)
        cfg = SamplerConfig(steps=steps, eta=eta, guidance=guidance, scales=scales, elevation=elevation,
                            temporal_weights=temporal_weights, cyclic=cyclic, view_batch=view_batch, seed=seed)
        cfg.check()
        model = M.load_managed(syncdreamer, _activation_bytes(view_batch))
        vm = syncdreamer_t(model, rgb, alpha, num_frames=frames, prepare=prepare, config=cfg,
                           callback=C.progress_callback())
        vm = vm.to(D.intermediate_device())
        return io.NodeOutput(vm, T.image_out(views_preview(vm.images)))


NODES = [SyncDreamerLoader, SyncDreamerT]
