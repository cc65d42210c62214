"""Stable Video Diffusion nodes: loader (diffusers folder or svd*.safetensors single file) and image-to-video with
clean white-background frames + masks. Thin adapters over e4d.svd."""
from __future__ import annotations

from comfy_api.latest import io

from . import _common as C
from . import _devices as D
from . import _models as M
from . import _tensors as T
from ._widgets import field_input
from .types import E4D_SVD

CATEGORY = "Efficient4D/svd"
WHERE = ("svd_xt.safetensors / svd.safetensors (stabilityai/stable-video-diffusion-img2vid-xt, "
         "stabilityai/stable-video-diffusion-img2vid) into ComfyUI/models/checkpoints, or the diffusers folder of "
         "those repos into ComfyUI/models/diffusers/<name>")
LOADER = "Load Stable Video Diffusion"


def _svd_choices() -> list[str]:
    out = M.diffusers_dirs(["StableVideoDiffusionPipeline"]) + M.checkpoint_files(lambda n: n.startswith("svd"))
    return out or [M.NO_MODELS]


def _activation_bytes(frames: int, width: int, height: int) -> int:
    """Memory SVD needs beyond its weights, for ComfyUI's memory manager to make room: proportional to frames x
    pixels (CFG batch of 2, the temporal VAE decode), bounding the peaks in docs/benchmarks.md's SVD table."""
    return int(700 * frames * width * height)


class SVDLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="E4D_SVDLoader",
            display_name=LOADER,
            category=CATEGORY,
            description="Load Stable Video Diffusion (img2vid / img2vid-xt / xt-1-1) for the image-to-4D entry: "
                        "a diffusers folder from models/diffusers, or the single file svd_xt.safetensors / "
                        "svd.safetensors from models/checkpoints (converted in memory; no download). The UNet, "
                        "VAE and image encoder are handed to ComfyUI's memory manager as one model.",
            inputs=[
                io.Combo.Input("model", options=_svd_choices(),
                               tooltip="diffusers/<folder> or checkpoints/<svd*.safetensors>. " + WHERE + "."),
                io.Combo.Input("dtype", options=list(D.DTYPE_CHOICES), default="auto",
                               tooltip="Weights precision; auto = fp16 on GPUs that support it (ComfyUI's policy)."),
            ],
            outputs=[E4D_SVD.Output(display_name="svd", tooltip="The SVD pipeline, managed by ComfyUI's memory "
                                                                 "manager.")],
        )

    @classmethod
    def validate_inputs(cls, model: str = "", dtype: str = "auto") -> bool | str:
        return M.validate_choice(model, WHERE)

    @classmethod
    def execute(cls, model: str, dtype: str = "auto") -> io.NodeOutput:
        from e4d.svd.pipeline import load_svd

        path = M.resolve_choice(model, WHERE)
        dt = D.pick_dtype(dtype, D.get_torch_device())
        pipe = load_svd(path, dt, D.offload_device())
        parts = {"unet": pipe.unet, "vae": pipe.vae, "image_encoder": pipe.image_encoder}
        return io.NodeOutput(M.manage(pipe, parts, path.name, dt))


class SVDImageToVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from e4d.svd.pipeline import SVDConfig as S

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
                field_input(S, "num_frames", widget="frames", min=0, max=128),
                field_input(S, "width", min=64, max=2048, step=8),
                field_input(S, "height", min=64, max=2048, step=8),
                field_input(S, "steps", min=1, max=200),
                field_input(S, "fps", min=1, max=60),
                field_input(S, "motion_bucket_id", min=0, max=255),
                field_input(S, "noise_aug_strength", min=0.0, max=1.0, step=0.01),
                field_input(S, "min_guidance_scale", widget="min_guidance", min=0.0, max=20.0, step=0.1),
                field_input(S, "max_guidance_scale", widget="max_guidance", min=0.0, max=20.0, step=0.1),
                field_input(S, "decode_chunk_size", widget="decode_chunk", min=1, max=128),
                field_input(S, "seed", min=0, max=0xFFFFFFFF, control_after_generate=True),
                field_input(S, "keep_frames", min=0, max=128, note="Efficient4D uses 16."),
                field_input(S, "mask_threshold", min=0.001, max=0.5, step=0.005),
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
                keep_frames: int = 0, mask_threshold: float = 0.04, segmentation=None) -> io.NodeOutput:
        from e4d.svd.pipeline import SVDConfig, image_to_video

        M.check_managed(svd, "svd", LOADER)
        rgb, alpha = T.image_in(image)
        if rgb.shape[0] > 1:
            C.log.warning("Efficient4D SVD: %d images given, animating the first", rgb.shape[0])
        m = T.object_alpha(rgb, alpha, mask)
        m = None if m is None else m[0]
        cfg = SVDConfig(num_frames=frames, width=width, height=height, steps=steps, fps=fps,
                        motion_bucket_id=motion_bucket_id, noise_aug_strength=noise_aug_strength,
                        min_guidance_scale=min_guidance, max_guidance_scale=max_guidance,
                        decode_chunk_size=decode_chunk, seed=seed, keep_frames=keep_frames,
                        mask_threshold=mask_threshold)
        seg = None if segmentation is None else (segmentation[None] if segmentation.ndim == 2 else segmentation)
        frames_made = cfg.num_frames or svd.model.core.unet.config.num_frames
        pipe = M.load_managed(svd, _activation_bytes(frames_made, cfg.width, cfg.height))
        res = image_to_video(pipe, rgb[0], m, cfg, C.progress_callback(steps), segmentation=seg)
        return io.NodeOutput(T.image_out(res.frames), T.mask_out(res.masks))


NODES = [SVDLoader, SVDImageToVideo]
