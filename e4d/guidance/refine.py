""""Refine" guidance for the ``official-release`` fit preset: partial DDIM re-denoise of the render, MSE to it.

Our reading: Efficient4D's released fit code (the ``generation`` branch of fudan-zvg/4d-gaussian-splatting that
its README points to) is **not readable** in any public snapshot we could fetch (only ``main``, ``extension``,
``page`` exist; see shared/reference/guidance/GUIDANCE_SPEC.md §0). We therefore implement the behaviour as
described for that release, in the form DreamGaussian's zero123 ``refine`` uses: encode the render, noise it to
an intermediate DDIM step, denoise the remaining steps with Zero123 (same conditioning and CFG as SDS), decode,
and pull the render towards that image with an MSE whose target is detached. DreamGaussian's ``strength=0.8`` of
50 steps *skips* 80 % of the schedule; our ``strength`` is the fraction that is re-run (0.2 = the same thing).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .zero123 import SDSConfig, Zero123Guidance


@dataclass
class RefineConfig(SDSConfig):
    """SDS view sampling and conditioning, plus the partial re-denoise schedule."""

    steps: int = 50
    """Length of the DDIM schedule the re-denoise is cut from."""
    strength: float = 0.2
    """Fraction of the schedule re-run: noise to step ``steps * (1 - strength)``, denoise the rest (0 < s <= 1)."""


def refine_timesteps(scheduler, steps: int, strength: float) -> Tensor:
    """The descending DDIM timesteps re-run for ``strength`` (the first entry is the noising level)."""
    if not 0.0 < strength <= 1.0 or steps < 1:
        raise ValueError(f"refine needs steps >= 1 and 0 < strength <= 1, got steps={steps}, strength={strength}")
    scheduler.set_timesteps(steps)
    start = min(int(round(steps * (1.0 - strength))), steps - 1)
    return scheduler.timesteps[start:]


class RefineGuidance(Zero123Guidance):
    """Guidance protocol object whose loss is ``MSE(render, sg(zero123_refine(render)))`` (mean over pixels)."""

    def __init__(self, model, config: Optional[RefineConfig] = None, device=None, dtype=None) -> None:
        super().__init__(model, RefineConfig() if config is None else config, device, dtype)

    @torch.no_grad()
    def refine(self, renders: Tensor, time_idx: Tensor) -> Tensor:
        """Re-denoised images ``[B, 3, s, s]`` in [0, 1] for renders ``[B, 3, H, W]`` of the last sampled cameras."""
        from diffusers import DDIMScheduler

        comps, cfg, c = self.components, self.config, self._require_cache()
        cond = self.condition_tokens(time_idx)
        z = self.encode_renders(renders).float()
        sched = DDIMScheduler.from_config(comps.scheduler_config)
        ts = refine_timesteps(sched, cfg.steps, cfg.strength)
        noise = torch.randn(z.shape, generator=self._gen, device=z.device, dtype=z.dtype)
        z = sched.add_noise(z, noise, ts[:1].to(z.device))
        ref = c.latents[time_idx.to(c.latents.device).long()]
        B = z.shape[0]
        for t in ts:
            tt = torch.full((B,), int(t), device=z.device, dtype=torch.long)
            eps = self._eps(comps.unet, z, tt, cond, ref, cfg.guidance_scale)
            z = sched.step(eps, int(t), z).prev_sample
        img = comps.vae.decode((z / comps.vae.config.scaling_factor).to(comps.dtype)).sample.float()
        return ((img + 1) / 2).clamp(0, 1)

    def loss(self, renders: Tensor, time_idx: Tensor, step: int, total: int) -> Tensor:
        if renders.ndim != 4 or renders.shape[1] != 3:
            raise ValueError(f"renders must be [B, 3, H, W] in [0, 1], got {tuple(renders.shape)}")
        if time_idx.shape != (renders.shape[0],):
            raise ValueError(f"time_idx must be [B]=[{renders.shape[0]}], got {tuple(time_idx.shape)}")
        if self.skips(step):
            return renders.sum() * 0.0
        target = self.refine(renders.detach(), time_idx)
        s = self.config.render_size
        x = renders if renders.shape[-2:] == (s, s) else F.interpolate(renders, (s, s), mode="bilinear", align_corners=False)
        if self.keep_debug:
            self.last = dict(target=target)
        return F.mse_loss(x.float(), target.to(x.device)) * self.step_factor()
