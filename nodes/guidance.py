"""Zero123 guidance loader: an E4D_GUIDANCE object (SDS, or the official-release "refine") for the 4DGS fit node.
Thin adapter over e4d.guidance; the weights go to ComfyUI's memory manager, which puts them on the GPU only when
the fit starts."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from . import _devices as D
from . import _models as M
from ._widgets import field_default, field_input
from .types import E4D_GUIDANCE

CATEGORY = "Efficient4D/guidance"
WHERE = ("a zero123 diffusers folder (ashawkey/zero123-xl-diffusers or ashawkey/stable-zero123-diffusers) into "
         "ComfyUI/models/diffusers/<name>, or stable_zero123.ckpt (stabilityai/stable-zero123) into "
         "ComfyUI/models/checkpoints")
MODES = ("sds", "refine")
"""sds: score distillation (paper); refine: the official release's partial re-denoise + MSE."""


def _zero123_choices() -> list[str]:
    # ashawkey's conversions name Zero123Pipeline; diffusers' community Zero1to3 layout (kxic, bennyguo) another class
    out = (M.diffusers_dirs(["Zero123Pipeline", "Zero1to3StableDiffusionPipeline"])
           + M.checkpoint_files(lambda n: "zero123" in n))
    return out or [M.NO_MODELS]


class Zero123GuidanceLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from e4d.guidance.camera_embed import VARIANTS
        from e4d.guidance.refine import RefineConfig as R
        from e4d.guidance.zero123 import SDSConfig as S

        return io.Schema(
            node_id="E4D_Zero123GuidanceLoader",
            display_name="Zero123 Guidance (SDS) for the 4D Fit",
            category=CATEGORY,
            description="Score distillation with Zero123 (paper eq. 8, 14; lambda_SDS = 1, lightly weighted): every "
                        "2nd fit step (widget 'every') renders 2 random novel views per sampled time (elevation +-30 "
                        "deg, any azimuth, same radius, 256 px) and pulls them towards what Zero123 predicts from the "
                        "input frame of that time, with the loss doubled: the statistics of one view on every step in "
                        "half the steps. 'refine' is the official-release variant (partial DDIM re-denoise + MSE). The "
                        "weights are read here and handed to ComfyUI's memory manager, which loads them on the GPU "
                        "when the fit starts. Without this node the fit has no SDS.",
            inputs=[
                io.Combo.Input("model", options=_zero123_choices(),
                               tooltip="diffusers/<zero123 folder> or checkpoints/<stable_zero123.ckpt>. " + WHERE + "."),
                io.Combo.Input("variant", options=["auto", *VARIANTS], default="auto",
                               tooltip="Camera embedding: zero123-xl ends with delta radius, stable-zero123 with "
                                       "the input view's polar angle. auto: from the name ('stable' -> stable-zero123)."),
                io.Combo.Input("mode", options=list(MODES), default=MODES[0],
                               tooltip="sds: score distillation (paper). refine: official-release guidance "
                                       "(re-denoise the render partially, MSE to it); slower per step."),
                io.Combo.Input("dtype", options=list(D.DTYPE_CHOICES), default="auto", tooltip="auto = fp16 on GPU."),
                field_input(S, "weight", min=0.0, max=100.0, step=0.05, note="Multiplied with the fit's lambda_sds."),
                field_input(S, "guidance_scale", widget="cfg", min=1.0, max=30.0, step=0.5),
                field_input(S, "t_min", min=0.0, max=1.0, step=0.01),
                field_input(S, "t_max", min=0.0, max=1.0, step=0.01),
                field_input(S, "anneal"),
                field_input(S, "elevation_range", default=field_default(S, "elevation_range")[1], min=0.0, max=80.0,
                            step=1.0, tooltip="Novel views within +- this elevation of the input camera (degrees)."),
                field_input(S, "seed", min=0, max=0xFFFFFFFF),
                field_input(R, "steps", widget="refine_steps", min=1, max=1000, note="refine mode only."),
                field_input(R, "strength", widget="refine_strength", min=0.01, max=1.0, step=0.01,
                            note="refine mode only."),
                field_input(S, "every", min=1, max=8,
                            note="Here every k-th step also renders k views per sampled time and weights its loss by "
                                 "k (views_per_time = k, carry_skipped)."),
            ],
            outputs=[
                E4D_GUIDANCE.Output(display_name="guidance", tooltip="Connect to the 4DGS fit node's guidance input."),
                io.String.Output(display_name="info", tooltip="Model, variant and mode chosen."),
            ],
        )

    @classmethod
    def validate_inputs(cls, model: str = "", **kwargs) -> bool | str:
        return M.validate_choice(model, WHERE)

    @classmethod
    def execute(cls, model: str, variant: str = "auto", mode: str = "sds", dtype: str = "auto", weight: float = 1.0,
                cfg: float = 5.0, t_min: float = 0.02, t_max: float = 0.98, anneal: bool = True,
                elevation_range: float = 30.0, seed: int = 0, refine_steps: int = 50,
                refine_strength: float = 0.2, every: int = 2) -> io.NodeOutput:
        from e4d.guidance.loader import guess_variant, load_zero123
        from e4d.guidance.refine import RefineConfig, RefineGuidance
        from e4d.guidance.zero123 import SDSConfig, Zero123Guidance

        path = M.resolve_choice(model, WHERE)
        var = guess_variant(path) if variant == "auto" else variant
        if t_min > t_max:
            raise ValueError(f"t_min ({t_min}) must not exceed t_max ({t_max}); lower t_min or raise t_max")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        dt = D.pick_dtype(dtype, D.get_torch_device())
        # ComfyUI runs nodes under torch.inference_mode(); SDS back-propagates through the VAE encoder into the
        # renders, which needs weights that are normal tensors
        with torch.inference_mode(False):
            comps = load_zero123(path, dtype=dt, device=D.offload_device())
        parts = {"unet": comps.unet, "vae": comps.vae, "image_encoder": comps.image_encoder,
                 "camera_projection": comps.camera_projection}
        patcher = M.manage(comps, parts, path.name, dt)
        common = dict(variant=var, weight=weight, guidance_scale=cfg, t_min=t_min, t_max=t_max, anneal=anneal,
                      elevation_range=(-elevation_range, elevation_range), seed=seed)

        def on_device():  # the guidance calls this in the fit's prepare(): ComfyUI loads the weights then
            return M.load_managed(patcher)

        if mode == "refine":
            cfg_ = RefineConfig(steps=refine_steps, strength=refine_strength, **common).with_every(every)
            guid = RefineGuidance(on_device, cfg_, patcher.load_device, dt)
        else:
            guid = Zero123Guidance(on_device, SDSConfig(**common).with_every(every), patcher.load_device, dt)
        return io.NodeOutput(guid, f"{mode} guidance, {var}, {model}")


NODES = [Zero123GuidanceLoader]
