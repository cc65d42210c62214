"""Zero123 guidance loader: a lazy E4D_GUIDANCE object (SDS, or the official-release "refine") for the 4DGS fit
node. Thin adapter over e4d.guidance; nothing is loaded until the fit calls ``prepare``."""
from __future__ import annotations

import os
from pathlib import Path

from comfy_api.latest import io

from . import _common as C
from .svd import DTYPES, _diffusers_dirs, resolve_choice, torch_dtype
from .types import E4D_GUIDANCE

CATEGORY = "Efficient4D/guidance"
WHERE = ("a zero123 diffusers folder (ashawkey/zero123-xl-diffusers or ashawkey/stable-zero123-diffusers) into "
         "ComfyUI/models/diffusers/<name>, or stable_zero123.ckpt (stabilityai/stable-zero123) into "
         "ComfyUI/models/checkpoints")


def _zero123_choices() -> list[str]:
    files = [f for f in C.list_models("checkpoints", placeholder=False) if "zero123" in os.path.basename(f).lower()]
    # ashawkey's conversions name Zero123Pipeline; diffusers' community Zero1to3 layout (kxic, bennyguo) another class
    out = _diffusers_dirs(("Zero123Pipeline", "Zero1to3StableDiffusionPipeline")) + ["checkpoints/" + f for f in files]
    return out or [C.NO_MODELS]


class Zero123GuidanceLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="E4D_Zero123GuidanceLoader",
            display_name="Zero123 Guidance (SDS) for the 4D Fit",
            category=CATEGORY,
            description="Score distillation with Zero123 (paper eq. 8, 14; lambda_SDS = 1, lightly weighted): each "
                        "fit step renders a random novel view per sampled time (elevation +-30 deg, any azimuth, "
                        "same radius, 256 px) and pulls it towards what Zero123 predicts from the input frame of "
                        "that time. 'refine' is the official-release variant (partial DDIM re-denoise + MSE). The "
                        "model is loaded only when the fit starts. Without this node the fit has no SDS.",
            inputs=[
                io.Combo.Input("model", options=_zero123_choices(),
                               tooltip="diffusers/<zero123 folder> or checkpoints/<stable_zero123.ckpt>. " + WHERE + "."),
                io.Combo.Input("variant", options=["auto", "zero123-xl", "stable-zero123"], default="auto",
                               tooltip="Camera embedding: zero123-xl ends with delta radius, stable-zero123 with "
                                       "the input view's polar angle. auto: from the name ('stable' -> stable-zero123)."),
                io.Combo.Input("mode", options=["sds", "refine"], default="sds",
                               tooltip="sds: score distillation (paper). refine: official-release guidance "
                                       "(re-denoise the render partially, MSE to it); slower per step."),
                io.Combo.Input("dtype", options=DTYPES, default="auto", tooltip="auto = fp16 on GPU."),
                io.Float.Input("weight", default=1.0, min=0.0, max=100.0, step=0.05,
                               tooltip="Guidance weight (multiplied with the fit's lambda_sds)."),
                io.Float.Input("cfg", default=5.0, min=1.0, max=30.0, step=0.5, tooltip="Classifier-free guidance."),
                io.Float.Input("t_min", default=0.02, min=0.0, max=1.0, step=0.01,
                               tooltip="Smallest diffusion time (fraction of 1000 steps)."),
                io.Float.Input("t_max", default=0.98, min=0.0, max=1.0, step=0.01,
                               tooltip="Largest diffusion time (fraction of 1000 steps)."),
                io.Boolean.Input("anneal", default=True,
                                 tooltip="Anneal t from t_max to t_min over the fit; off = random t per view."),
                io.Float.Input("elevation_range", default=30.0, min=0.0, max=80.0, step=1.0,
                               tooltip="Novel views within +- this elevation of the input camera (degrees)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, tooltip="Seed of the SDS noise."),
                io.Int.Input("refine_steps", default=50, min=1, max=1000, tooltip="refine mode: DDIM schedule length."),
                io.Float.Input("refine_strength", default=0.2, min=0.01, max=1.0, step=0.01,
                               tooltip="refine mode: fraction of the schedule re-run (0.2 of 50 = 10 UNet steps)."),
                io.Int.Input("every", default=1, min=1, max=100,
                             tooltip="Apply the guidance on every k-th fit step only (faster, weaker prior)."),
            ],
            outputs=[
                E4D_GUIDANCE.Output(display_name="guidance", tooltip="Connect to the 4DGS fit node's guidance input."),
                io.String.Output(display_name="info", tooltip="Model, variant and mode chosen."),
            ],
        )

    @classmethod
    def validate_inputs(cls, model: str = "", **kwargs) -> bool | str:
        try:
            resolve_choice(model, WHERE)
            return True
        except FileNotFoundError as e:
            return str(e)

    @classmethod
    def execute(cls, model: str, variant: str = "auto", mode: str = "sds", dtype: str = "auto", weight: float = 1.0,
                cfg: float = 5.0, t_min: float = 0.02, t_max: float = 0.98, anneal: bool = True,
                elevation_range: float = 30.0, seed: int = 0, refine_steps: int = 50,
                refine_strength: float = 0.2, every: int = 1) -> io.NodeOutput:
        from e4d.guidance.loader import guess_variant, load_zero123
        from e4d.guidance.refine import RefineConfig, RefineGuidance
        from e4d.guidance.zero123 import SDSConfig, Zero123Guidance

        path = Path(resolve_choice(model, WHERE))
        var = guess_variant(path) if variant == "auto" else variant
        if t_min > t_max:
            raise ValueError(f"t_min ({t_min}) must not exceed t_max ({t_max})")
        device = C.get_torch_device()
        dt = torch_dtype(dtype, device)
        common = dict(variant=var, weight=weight, guidance_scale=cfg, t_min=t_min, t_max=t_max, anneal=anneal,
                      elevation_range=(-elevation_range, elevation_range), seed=seed, every=every)

        def loader():  # runs in the fit's prepare(): nothing is held until then
            return load_zero123(path, dtype=dt)

        if mode == "refine":
            guid = RefineGuidance(loader, RefineConfig(steps=refine_steps, strength=refine_strength, **common), device, dt)
        else:
            guid = Zero123Guidance(loader, SDSConfig(**common), device, dt)
        return io.NodeOutput(guid, f"{mode} guidance, {var}, {model}")


NODES = [Zero123GuidanceLoader]
