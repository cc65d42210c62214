"""Stable Video Diffusion nodes: loader (diffusers folder or svd*.safetensors single file) and image-to-video with
clean white-background frames + masks. Thin adapters over e4d.svd."""
from __future__ import annotations

import json
import os

import torch
from comfy_api.latest import io

from . import _common as C
from .types import E4D_SVD

CATEGORY = "Efficient4D/svd"
WHERE = ("svd_xt.safetensors / svd.safetensors (stabilityai/stable-video-diffusion-img2vid-xt, "
         "stabilityai/stable-video-diffusion-img2vid) into ComfyUI/models/checkpoints, or the diffusers folder of "
         "those repos into ComfyUI/models/diffusers/<name>")
DTYPES = ["auto", "fp16", "bf16", "fp32"]


def _diffusers_dirs(class_name) -> list[str]:
    """Diffusers folders in ComfyUI's ``diffusers`` model folder whose model_index.json names ``class_name`` (a
    name or a tuple of accepted names)."""
    names = (class_name,) if isinstance(class_name, str) else tuple(class_name)
    out = []
    for rel in C.list_models("diffusers", kind="dirs", placeholder=False):
        for base in C.model_folder_paths("diffusers"):
            mi = os.path.join(base, rel, "model_index.json")
            try:
                with open(mi) as fh:
                    if json.load(fh).get("_class_name") in names:
                        out.append("diffusers/" + rel)
                        break
            except (OSError, ValueError):  # missing or unreadable model_index.json: not this kind of model
                continue
    return out


def _svd_choices() -> list[str]:
    files = [f for f in C.list_models("checkpoints", placeholder=False) if os.path.basename(f).lower().startswith("svd")]
    out = _diffusers_dirs("StableVideoDiffusionPipeline") + ["checkpoints/" + f for f in files]
    return out or [C.NO_MODELS]


def resolve_choice(choice: str, where: str):
    """``diffusers/<dir>`` or ``checkpoints/<file>`` -> full path (FileNotFoundError naming folder and source)."""
    folder, _, name = (choice or "").partition("/")
    if folder not in ("diffusers", "checkpoints") or not name:
        raise FileNotFoundError(C._missing_model_message("checkpoints", choice, where))
    return C.resolve_model(folder, name, where)


def torch_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if C.should_use_fp16(device) else torch.float32
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


class SVDLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="E4D_SVDLoader",
            display_name="Load Stable Video Diffusion",
            category=CATEGORY,
            description="Load Stable Video Diffusion (img2vid / img2vid-xt / xt-1-1) for the image-to-4D entry: "
                        "a diffusers folder from models/diffusers, or the single file svd_xt.safetensors / "
                        "svd.safetensors from models/checkpoints (converted in memory; no download).",
            inputs=[
                io.Combo.Input("model", options=_svd_choices(),
                               tooltip="diffusers/<folder> or checkpoints/<svd*.safetensors>. " + WHERE + "."),
                io.Combo.Input("dtype", options=DTYPES, default="auto",
                               tooltip="Weights precision; auto = fp16 on GPUs that support it (ComfyUI's policy)."),
            ],
            outputs=[E4D_SVD.Output(display_name="svd", tooltip="The SVD pipeline (kept on the offload device "
                                                                 "between runs).")],
        )

    @classmethod
    def validate_inputs(cls, model: str = "", dtype: str = "auto") -> bool | str:
        try:
            resolve_choice(model, WHERE)
            return True
        except FileNotFoundError as e:
            return str(e)

    @classmethod
    def execute(cls, model: str, dtype: str = "auto") -> io.NodeOutput:
        from e4d.svd.pipeline import load_svd

        path = resolve_choice(model, WHERE)
        pipe = load_svd(path, torch_dtype(dtype, C.get_torch_device()), C.offload_device())
        return io.NodeOutput(pipe)


class SVDImageToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="E4D_SVDImageToVideo",
            display_name="SVD Image to Video (clean background)",
            category=CATEGORY,
            description="Animate one image with Stable Video Diffusion. The input is composited on white (RGBA "
                        "alpha or the optional mask) and padded to the output aspect; every output frame gets a "
                        "mask from the white background; the clip is evenly subsampled to 'keep_frames' for "
                        "SyncDreamer-T / the 4D fit. Any other video model's IMAGE batch can replace this node.",
            inputs=[
                E4D_SVD.Input("svd", tooltip="From 'Load Stable Video Diffusion'."),
                io.Image.Input("image", tooltip="The object image (first of the batch is used); RGBA alpha is "
                                                "used as the object mask."),
                io.Mask.Input("mask", optional=True, tooltip="Optional object mask (1 = object) of the image."),
                io.Int.Input("frames", default=0, min=0, max=128,
                             tooltip="Frames to generate; 0 = the model's own (25 for XT, 14 for SVD)."),
                io.Int.Input("width", default=1024, min=64, max=2048, step=8, tooltip="Output width (multiple of 8)."),
                io.Int.Input("height", default=576, min=64, max=2048, step=8, tooltip="Output height (multiple of 8)."),
                io.Int.Input("steps", default=25, min=1, max=200, tooltip="Denoising steps."),
                io.Int.Input("fps", default=7, min=1, max=60, tooltip="Frame-rate conditioning."),
                io.Int.Input("motion_bucket_id", default=127, min=0, max=255, tooltip="Amount of motion."),
                io.Float.Input("noise_aug_strength", default=0.02, min=0.0, max=1.0, step=0.01,
                               tooltip="Noise on the conditioning image (more = less tied to it)."),
                io.Float.Input("min_guidance", default=1.0, min=0.0, max=20.0, step=0.1,
                               tooltip="CFG scale at the first frame."),
                io.Float.Input("max_guidance", default=3.0, min=0.0, max=20.0, step=0.1,
                               tooltip="CFG scale at the last frame."),
                io.Int.Input("decode_chunk", default=8, min=1, max=128,
                             tooltip="Frames decoded at once by the temporal VAE (lower = less VRAM)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the initial noise."),
                io.Int.Input("keep_frames", default=16, min=0, max=128,
                             tooltip="Frames returned, evenly subsampled (first and last kept); 0 = all. "
                                     "Efficient4D uses 16."),
                io.Float.Input("mask_threshold", default=0.04, min=0.001, max=0.5, step=0.005,
                               tooltip="A pixel is object when a channel is darker than 1 - threshold."),
                io.Mask.Input("segmentation", optional=True,
                              tooltip="Optional masks of the generated frames (e.g. from a segmentation node) "
                                      "instead of the white-background masks; one per generated or kept frame."),
            ],
            outputs=[
                io.Image.Output(display_name="frames", tooltip="The kept frames on white, [K, H, W, 3]."),
                io.Mask.Output(display_name="masks", tooltip="Object masks of the kept frames, [K, H, W]."),
            ],
        )

    @classmethod
    def execute(cls, svd, image, mask=None, frames: int = 0, width: int = 1024, height: int = 576, steps: int = 25,
                fps: int = 7, motion_bucket_id: int = 127, noise_aug_strength: float = 0.02,
                min_guidance: float = 1.0, max_guidance: float = 3.0, decode_chunk: int = 8, seed: int = 0,
                keep_frames: int = 16, mask_threshold: float = 0.04, segmentation=None) -> io.NodeOutput:
        from e4d.svd.pipeline import SVDConfig, image_to_video

        rgb, alpha = C.image_in(image)
        if rgb.shape[0] > 1:
            C.log.warning("Efficient4D SVD: %d images given, animating the first", rgb.shape[0])
        m = C.mask_in(mask, rgb.shape[0], rgb.shape[1], rgb.shape[2])
        m = m[0] if m is not None else (alpha[0] if alpha is not None else None)
        cfg = SVDConfig(num_frames=frames, width=width, height=height, steps=steps, fps=fps,
                        motion_bucket_id=motion_bucket_id, noise_aug_strength=noise_aug_strength,
                        min_guidance_scale=min_guidance, max_guidance_scale=max_guidance,
                        decode_chunk_size=decode_chunk, seed=seed, keep_frames=keep_frames,
                        mask_threshold=mask_threshold)
        seg = None if segmentation is None else (segmentation[None] if segmentation.ndim == 2 else segmentation)
        C.free_between_stages()
        svd.to(C.get_torch_device())
        try:
            res = image_to_video(svd, rgb[0], m, cfg, C.progress_callback(steps), segmentation=seg)
        finally:
            svd.to(C.offload_device())
        return io.NodeOutput(C.image_out(res.frames), C.mask_out(res.masks))


NODES = [SVDLoader, SVDImageToVideo]
