"""Diffusion schedule of SyncDreamer (SD-1.x scaled-linear betas) and the DDIM "uniform" sub-schedule."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Union

import torch
from torch import Tensor


def make_schedule_buffers(num_timesteps: int = 1000, beta_start: float = 0.00085,
                          beta_end: float = 0.012) -> Dict[str, Tensor]:
    """The 7 schedule buffers of the official model (float32, on the CPU), in state-dict order.

    Devices are explicit: under a ``torch.device("meta")`` context (the loader builds the model there) a library
    may have patched a factory function (transformers 5 does so for ``torch.linspace`` while loading), and the
    context would then apply to some constructors and not others.
    """
    cpu = torch.device("cpu")
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_timesteps, dtype=torch.float32, device=cpu) ** 2
    alphas = 1.0 - betas
    ac = torch.cumprod(alphas, dim=0)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64, device=cpu), ac[:-1].double()])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    post_log = torch.log(torch.clamp(post_var, min=1e-20)).clamp(min=-10)
    return {"betas": betas, "alphas": alphas, "alphas_cumprod": ac, "sqrt_alphas_cumprod": ac.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - ac).sqrt(), "posterior_variance": post_var.float(),
            "posterior_log_variance_clipped": post_log.float()}


@dataclass
class DDIMSchedule:
    """Per-index DDIM coefficients (index 0 = the last, least noisy step)."""

    timesteps: Tensor
    """``[S]`` int64, increasing (1, 21, ..., 981 for 50 steps)."""
    alphas: Tensor
    """``[S]`` a_t = alphas_cumprod[t_i]."""
    alphas_prev: Tensor
    """``[S]`` a_prev = alphas_cumprod[t_{i-1}], and alphas_cumprod[0] (not 1) for i = 0 (official quirk)."""
    sigmas: Tensor
    """``[S]`` eta * sqrt((1 - a_prev)/(1 - a_t) * (1 - a_t/a_prev))."""


def ddim_timesteps(steps: int, num_timesteps: int = 1000) -> Tensor:
    """``range(0, T, T // steps) + 1`` (the official "uniform" discretisation)."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"DDIM steps must be in [1, {num_timesteps}], got {steps}")
    c = num_timesteps // steps
    ts = torch.arange(0, num_timesteps, c, dtype=torch.int64) + 1
    # When T % steps != 0 the official code yields more steps or t = T (IndexError); we keep the first `steps`
    # and clamp into range, which equals the official list whenever it is valid.
    return ts[:steps].clamp(max=num_timesteps - 1)


def ddim_schedule(alphas_cumprod: Tensor, steps: int = 50, eta: float = 1.0) -> DDIMSchedule:
    """DDIM coefficients exactly as the official sampler (float64 maths, stored as float32)."""
    ac = alphas_cumprod.detach().cpu().float()
    ts = ddim_timesteps(steps, ac.shape[0])
    a = ac[ts].double()
    a_prev = torch.cat([ac[0:1], ac[ts[:-1]]]).double()
    sig = eta * torch.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    return DDIMSchedule(ts, a.float(), a_prev.float(), sig.float())


def ddim_step(x: Tensor, eps: Tensor, a_t: Union[float, Tensor], a_prev: Union[float, Tensor],
              sigma: Union[float, Tensor], noise=None) -> Tensor:
    """DDIM update ``x_t -> x_{t-1}``: x0 = (x - sqrt(1-a_t) eps)/sqrt(a_t) (no clipping);
    ``x_prev = sqrt(a_prev) x0 + sqrt(max(1 - a_prev - sigma^2, 1e-7)) eps + sigma * noise``.

    The coefficients are Python floats or float32 0-d tensors already on ``x``'s device (the sampler's: no
    host-to-device copy, which would make the host wait for the device at every step); same numbers either way."""
    dev, dt = x.device, torch.float32
    a_t_ = torch.as_tensor(a_t, device=dev, dtype=dt)
    a_p = torch.as_tensor(a_prev, device=dev, dtype=dt)
    s = torch.as_tensor(sigma, device=dev, dtype=dt)
    x0 = (x - torch.sqrt(1.0 - a_t_) * eps) / a_t_.sqrt()
    x_prev = a_p.sqrt() * x0 + torch.clamp(1.0 - a_p - s ** 2, min=1e-7).sqrt() * eps
    if noise is not None:
        x_prev = x_prev + s * noise
    return x_prev
