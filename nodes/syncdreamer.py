"""SyncDreamer-T nodes: checkpoint loader and frames -> view matrix (Efficient4D stage 1). Thin adapters over
:mod:`e4d.syncdreamer`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from comfy_api.latest import io

from . import _common as C
from .types import E4D_SYNCDREAMER, E4D_VIEW_MATRIX

CATEGORY = "Efficient4D/syncdreamer"
WHERE = ("syncdreamer-pretrain.ckpt from https://huggingface.co/liuyuan-pal/SyncDreamer into ComfyUI/models/syncdreamer "
         "(CLIP is inside the checkpoint; ViT-L-14.pt is not needed)")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class LoadedSyncDreamer:
    """What travels on the E4D_SYNCDREAMER wire: the model (on the offload device) and its name."""

    model: object
    name: str
    dtype: torch.dtype


def _pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice != "auto":
        return DTYPES[choice]
    if device.type != "cuda":
        return torch.float32
    if C.should_use_bf16(device):
        return torch.bfloat16
    return torch.float16 if C.should_use_fp16(device) else torch.float32


class SyncDreamerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="E4D_SyncDreamerLoader",
            display_name="Load SyncDreamer",
            category=CATEGORY,
            description="Load the official SyncDreamer checkpoint (syncdreamer-pretrain.ckpt, Lightning format; "
                        "a .safetensors conversion works too) into our own implementation. Sizes are read from "
                        "the weights; CLIP ViT-L/14 is taken from the checkpoint.",
            inputs=[
                io.Combo.Input("checkpoint", options=C.list_models("syncdreamer"),
                               tooltip="File in ComfyUI/models/syncdreamer: " + WHERE + "."),
                io.Combo.Input("dtype", options=["auto", "fp16", "bf16", "fp32"], default="auto",
                               tooltip="Weight precision. auto: bf16/fp16 on a GPU (ComfyUI's policy), fp32 on CPU. "
                                       "fp16 halves memory (2.8 GB of weights)."),
                io.Combo.Input("compile", options=["off", "default", "max-autotune-no-cudagraphs"], default="off",
                               tooltip="torch.compile the UNet and frustum net (CUDA only). K=16 x 16 views, 50 steps "
                                       "on an H100: 27 s instead of 54 s, after a one-off 100-140 s compile per "
                                       "view_batch (docs/benchmarks.md). off: eager."),
                io.Combo.Input("clip_override", options=["none"] + C.list_models("clip_vision", placeholder=False),
                               default="none", optional=True,
                               tooltip="Optional CLIP ViT-L/14 image tower from models/clip_vision (Hugging Face "
                                       "clip-vit-large-patch14 weights or OpenAI ViT-L-14.pt) replacing the copy inside "
                                       "the SyncDreamer checkpoint. none: use the checkpoint's own (the official setup)."),
            ],
            outputs=[E4D_SYNCDREAMER.Output(display_name="syncdreamer",
                                            tooltip="The loaded model (kept on the offload device between runs).")],
        )

    @classmethod
    def validate_inputs(cls, checkpoint: str = "", dtype: str = "auto") -> bool | str:
        return C.validate_model_choice("syncdreamer", checkpoint, WHERE)

    @classmethod
    def execute(cls, checkpoint: str, dtype: str = "auto", compile: str = "off",
                clip_override: str = "none") -> io.NodeOutput:
        from e4d.syncdreamer.loader import load_syncdreamer

        path = C.resolve_model("syncdreamer", checkpoint, WHERE)
        device = C.get_torch_device()
        dt = _pick_dtype(dtype, device)
        clip = None if clip_override in (None, "", "none") else C.resolve_model(
            "clip_vision", clip_override, "a CLIP ViT-L/14 file (openai/clip-vit-large-patch14) in models/clip_vision")
        model = load_syncdreamer(path, dtype=dt, device=C.offload_device(), clip_override=clip)
        if compile != "off" and torch.device(device).type == "cuda":
            from e4d.syncdreamer.speed import accelerate

            accelerate(model, compile_mode=compile)  # compiles lazily at the first sampling step
        return io.NodeOutput(LoadedSyncDreamer(model, path.name, dt))


def views_preview(images: torch.Tensor, cols: int = 4) -> torch.Tensor:
    """``[K, V, H, W, 3]`` -> one grid image per frame ``[K, rows*H, cols*W, 3]`` (views row by row)."""
    K, V, H, W, _ = images.shape
    rows = -(-V // cols)
    pad = rows * cols - V
    if pad:
        images = torch.cat([images, images.new_ones(K, pad, H, W, 3)], dim=1)
    g = images.reshape(K, rows, cols, H, W, 3).permute(0, 1, 3, 2, 4, 5)
    return g.reshape(K, rows * H, cols * W, 3)


class SyncDreamerT(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
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
                io.Int.Input("frames", default=16, min=0, max=256,
                             tooltip="K: frames kept, evenly spread over the input (0 = all). Paper: 16."),
                io.String.Input("temporal_weights", default="auto",
                                tooltip="Smoothing kernel over frames: 'auto' (paper eq. 15 by K), 'none', or taps "
                                        "like '1,1,6,1,1' (odd count, centre = current frame)."),
                io.Boolean.Input("cyclic", default=False, tooltip="Wrap the smoothing around (looping motion)."),
                io.Float.Input("elevation", default=0.0, min=-30.0, max=60.0, step=1.0,
                               tooltip="Elevation of the input camera in degrees (Efficient4D: 0)."),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="DDIM steps (paper: 50)."),
                io.Float.Input("eta", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="DDIM eta; 1.0 = the official stochastic sampler."),
                io.Combo.Input("guidance", options=["decomposed", "cfg", "none"], default="decomposed",
                               tooltip="decomposed: HarmonyView guidance as Efficient4D (scale 1 = image/context, "
                                       "scale 2 = volume); cfg: SyncDreamer's classifier-free guidance (scale 1)."),
                io.Float.Input("scale1", default=2.0, min=0.0, max=20.0, step=0.1,
                               tooltip="Decomposed: s1 (paper 2.0); cfg: the guidance scale (SyncDreamer 2.0)."),
                io.Float.Input("scale2", default=1.0, min=0.0, max=20.0, step=0.1,
                               tooltip="Decomposed only: s2 (paper 1.0)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the initial noise (shared by all frames) and the sampler noise."),
                io.Int.Input("view_batch", default=16, min=1, max=256,
                             tooltip="(frame, view) pairs per UNet call. Lower = less memory, same result "
                                     "(about 16: <= 16 GB, 4: fits 12 GB)."),
                io.Combo.Input("prepare", options=["auto", "clip", "frame", "none"], default="auto",
                               tooltip="Object cropping: auto = square frames at 256x256, or square frames "
                                       "without mask/alpha, are used as they are (already prepared); anything else is "
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

        parse_kernel(temporal_weights, max(frames, 1))  # fail before loading anything on the GPU
        rgb, alpha = C.image_in(images, "images")
        m = C.mask_in(mask, rgb.shape[0], rgb.shape[1], rgb.shape[2], "mask")
        if m is not None:
            alpha = 1.0 - m if invert_mask else m
        scales = (scale1, scale2) if guidance == "decomposed" else (scale1,)
        cfg = SamplerConfig(steps=steps, eta=eta, guidance=guidance, scales=scales, elevation=elevation,
                            temporal_weights=temporal_weights, cyclic=cyclic, view_batch=view_batch, seed=seed)
        device = C.get_torch_device()
        C.free_between_stages()
        model = syncdreamer.model.to(device)
        try:
            vm = syncdreamer_t(model, rgb, alpha, num_frames=frames, prepare=prepare, config=cfg,
                               callback=C.progress_callback())
        finally:
            syncdreamer.model.to(C.offload_device())
            if device.type == "cuda":
                torch.cuda.empty_cache()
        vm = vm.to(C.intermediate_device())
        return io.NodeOutput(vm, C.image_out(views_preview(vm.images)))


NODES = [SyncDreamerLoader, SyncDreamerT]
