"""Score distillation (SDS) with Zero-1-to-3 as the 4D fit's "lightly weighted" prior (Efficient4D eq. 8, 14).

Each fit iteration the fit asks :meth:`Zero123Guidance.sample_cameras` for one random novel view per sampled
time (Δelevation in [-30, 30), Δazimuth in [-180, 180), same radius as the input camera, 256²), renders the 4D
Gaussians there, and adds ``weight * loss(renders, ...)``. The loss is built so that its gradient with respect to
the VAE latent of the render is the SDS gradient ``w(t) (ε̂ - ε)`` (Poole et al. 2022, eq. 3), which autograd then
carries through the VAE encoder into the renderer. Conditioning follows DreamGaussian's zero123 guidance (the
recipe reused by DreamGaussian4D / STAG4D / 4DGen): CLIP image embedding of the input frame of the sampled time +
camera 4-vector through ``cc_projection``, plus the frame's VAE latent concatenated to the UNet input; the
unconditional branch zeroes both; classifier-free guidance 5; ``w(t) = 1 - ᾱ_t``; t annealed from t_max to t_min.
"""
from __future__ import annotations

import logging
import time
import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cameras import Cameras, orbit_cameras
from .camera_embed import VARIANTS, orbit_coordinates, sample_relative_views, zero123_camera_embedding
from .cfg_graph import GraphedCFG
from .components import Zero123Components
from .encoder_graph import GraphedEncoder, encoder_moments
from .fast_layers import cudnn_benchmark, fast_sds_layers

log = logging.getLogger(__name__)


@dataclass
class SDSConfig:
    """Hyper-parameters of the Zero123 SDS guidance (defaults: DreamGaussian's zero123 recipe, paper λ_SDS = 1)."""

    variant: str = "zero123-xl"
    """``zero123-xl`` (camera 4-vector ends with Δradius) or ``stable-zero123`` (ends with the reference polar)."""
    weight: float = 1.0
    """λ_SDS: the fit multiplies :meth:`Zero123Guidance.loss` by this (Efficient4D eq. 14 uses 1)."""
    guidance_scale: float = 5.0
    """Classifier-free guidance scale s in ε̂ = ε_u + s (ε_c - ε_u)."""
    t_min: float = 0.02
    """Smallest diffusion time as a fraction of the 1000 training steps."""
    t_max: float = 0.98
    """Largest diffusion time as a fraction of the 1000 training steps."""
    anneal: bool = True
    """Anneal t linearly from t_max (step 0) to t_min (last step), one t per batch; else uniform random per view."""
    elevation_range: tuple[float, float] = (-30.0, 30.0)
    """Δelevation of the novel view relative to the input camera, degrees, sampled uniformly in [lo, hi)."""
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    """Δazimuth relative to the input camera, degrees, uniform in [lo, hi)."""
    max_abs_elevation: float = 80.0
    """Absolute elevations are clamped to ±this (the +Z-up look-at is undefined at the poles)."""
    render_size: int = 256
    """Side of the square novel-view render (zero123 works at 256² -> 32² latents)."""
    reduction: str = "mean"
    """``mean``: loss averaged over the B views (dL/dz = g / B, as DreamGaussian4D); ``sum``: dL/dz = g."""
    seed: int = 0
    """Seed of the SDS noise and VAE posterior samples (the views come from the fit's generator)."""
    every: int = 2
    """Apply the guidance on every k-th fit step only (other steps return a zero loss and the fit skips their
    novel-view renders). With ``views_per_time = k`` and ``carry_skipped`` (the defaults) the SDS term keeps the
    statistics of every step with one view per time, in k times fewer, k times larger steps; alone, ``every = k``
    trades prior strength for speed."""
    carry_skipped: bool = True
    """With ``every = k > 1``, multiply the loss of each applied step by k, so the SDS term summed over the fit has
    the expectation of ``every = 1`` instead of being k times weaker. With one view per time its variance is k
    times larger (H200, CesiumMan, random Zero123 weights: every=2 lost 0.74 dB of held-out PSNR against every step);
    with ``views_per_time = k`` it is the same."""
    views_per_time: int = 2
    """Novel views rendered and scored per sampled fit time on an applied step (the fit asks for
    ``times_per_batch * views_per_time`` views). With ``every = k``, ``views_per_time = k`` and ``carry_skipped``,
    the SDS gradient summed over the fit has the expectation and the variance of ``every = 1`` with one view per
    time, in half as many, twice as large steps. H200, CesiumMan ``recommended``, 500 steps, random Zero123-XL
    weights (``bench/sds.py --steps 0 --fit --every 1,2x2``): fit + SDS 17.70 s -> 14.43 s, held-out PSNR
    33.893 -> 33.978 dB (the guard is 0.2 dB)."""
    cuda_graphs: bool = True
    """On CUDA, capture the guided UNet call of an SDS step once per batch shape and replay it (same results,
    no per-step kernel launch overhead); ignored on CPU."""
    graph_encoder: bool = True
    """With ``cuda_graphs``, also capture the VAE encoder's forward and backward of the renders
    (:mod:`.encoder_graph`); same kernels and results as eager, fewer launches."""
    channels_last: bool = True
    """On CUDA (half precision, Triton working), run the VAE encoder and the UNet channels_last with layout-keeping
    GroupNorm(+SiLU) kernels and a math attention in the VAE mid block (:mod:`.fast_layers`): the same numbers up to
    fp16 rounding, no cuDNN layout transposes. The layers are swapped in place on the loaded components (same
    parameters and state-dict keys); off leaves the model untouched. H200, B = 4, CUDA graphs, random full-size
    weights: 21.5 ms per SDS step instead of 27.2 (VAE encoder alone: 24.4); CesiumMan 500-step fit + SDS loop
    17.6 s instead of 21.6 s, held-out PSNR 33.90 dB vs 33.88 dB."""
    cudnn_benchmark: bool = False
    """Let cuDNN time its convolution algorithms for the SDS models' shapes once (first step; PyTorch's
    ``cudnn.benchmark``, switched on only around the SDS encoder and UNet calls) instead of picking them by
    heuristics; same results up to the algorithms' fp16 rounding. Off by default: on an H200 (channels_last, B = 4)
    it gained 0.36 ms of 21.5 per step (1.7 %), for a process-dependent choice of algorithms."""

    def with_every(self, k: int) -> "SDSConfig":
        """This config on every k-th step with k views per sampled time and the loss times k: the SDS statistics
        of every step with one view per time, in k times fewer steps (what the node's and CLI's ``every`` set)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"SDS every must be an int >= 1, got {k!r}")
        return dataclasses.replace(self, every=k, views_per_time=k, carry_skipped=True)


def sds_timesteps(step: int, total: int, batch: int, t_min: float, t_max: float, anneal: bool,
                  generator: Optional[torch.Generator] = None, num_train_timesteps: int = 1000) -> Tensor:
    """Diffusion timesteps ``[B]`` (int64, CPU) for fit iteration ``step`` of ``total``.

    Annealed: ``t = round(hi - (hi - lo) * step / total)`` shared by the batch, so step 0 gives ``t_max`` and the
    last step gives ``t_min`` (DreamGaussian's ``(1 - step/iters) * 1000`` clipped to [20, 980] differs only at the
    clipped ends). Otherwise uniform integers in ``[lo, hi]`` per view.
    """
    if not 0.0 <= t_min <= t_max <= 1.0:
        raise ValueError(f"need 0 <= t_min <= t_max <= 1, got t_min={t_min}, t_max={t_max}")
    if total < 1 or batch < 1:
        raise ValueError(f"total steps and batch must be >= 1, got total={total}, batch={batch}")
    lo = int(round(t_min * num_train_timesteps))
    hi = min(int(round(t_max * num_train_timesteps)), num_train_timesteps - 1)
    lo = min(lo, hi)
    if anneal:
        frac = min(max(step / total, 0.0), 1.0)
        return torch.full((batch,), int(round(hi - (hi - lo) * frac)), dtype=torch.long)
    dev = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(lo, hi + 1, (batch,), generator=generator, device=dev).cpu()


def sds_weight(alphas_cumprod: Tensor, t: Tensor) -> Tensor:
    """w(t) = 1 - ᾱ_t, ``[B]`` (DreamFusion's choice, used by all zero123 SDS implementations)."""
    return 1.0 - alphas_cumprod.to(t.device)[t]


def sds_gradient(eps_pred: Tensor, eps: Tensor, w: Tensor) -> Tensor:
    """SDS gradient on the latent, paper eq. 8: ``g = w(t) (ε̂ - ε)``, ``[B, 4, h, w]``.

    Non-finite entries (an fp16 UNet overflow) are zeroed rather than clipped to the float max, which would turn
    the surrogate loss into inf and stop the fit.
    """
    g = w.float().view(-1, 1, 1, 1) * (eps_pred.float() - eps.float())
    return torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)


def sds_loss(latents: Tensor, grad: Tensor, reduction: str = "mean") -> Tensor:
    """Surrogate whose gradient w.r.t. ``latents`` is ``grad`` (``/ B`` for ``mean``): ``½‖z - sg(z - g)‖²``."""
    if latents.shape != grad.shape:
        raise ValueError(f"latents {tuple(latents.shape)} and SDS gradient {tuple(grad.shape)} must match")
    target = (latents.float() - grad).detach()
    loss = 0.5 * F.mse_loss(latents.float(), target, reduction="sum")
    if reduction == "mean":
        return loss / latents.shape[0]
    if reduction == "sum":
        return loss
    raise ValueError(f"SDS reduction must be 'mean' or 'sum', got {reduction!r}")


def cfg_noise_prediction(unet, z_t: Tensor, t: Tensor, cond: Tensor, ref_latents: Tensor, scale: float) -> Tensor:
    """ε̂ with classifier-free guidance, ``[B, 4, h, w]``.

    The conditional branch sees ``[z_t | reference latent]`` (8 channels) and the projected CLIP+camera token;
    the unconditional branch zeroes both (zero123 was trained with this dropout). One UNet call on a 2B batch.
    """
    B = z_t.shape[0]
    x = torch.cat([torch.cat([z_t, z_t]), torch.cat([ref_latents, torch.zeros_like(ref_latents)])], dim=1)
    ehs = torch.cat([cond, torch.zeros_like(cond)])
    dt = next(unet.parameters()).dtype
    out = unet(x.to(dt), torch.cat([t, t]).to(z_t.device), encoder_hidden_states=ehs.to(dt)).sample
    eps_c, eps_u = out[:B].float(), out[B:].float()
    return eps_u + scale * (eps_c - eps_u)


def clip_pixels(processor, images: Tensor) -> Tensor:
    """CLIP inputs ``[N, 3, 224, 224]`` from RGB ``[N, H, W, 3]`` in [0, 1], through the repo's CLIPImageProcessor
    on uint8 (the PIL path zero123 and DreamGaussian use: bicubic resize, centre crop, CLIP mean/std)."""
    arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return processor(images=list(arr), return_tensors="pt").pixel_values


@dataclass
class ReferenceCache:
    """Per-frame conditioning computed once in :meth:`Zero123Guidance.prepare`."""

    clip: Tensor  # [T, D] CLIP image_embeds of each input frame
    latents: Tensor  # [T, 4, h, w] unscaled VAE latents (posterior mode) of each input frame at render size
    azimuth: float  # reference (input) camera orbit coordinates, degrees / world units
    elevation: float
    radius: float
    focal: float  # focal length in pixels at render_size
    frames_encoded: int = 0


Loader = Callable[[], Zero123Components]


class Zero123Guidance:
    """Zero123 SDS guidance implementing the fit's Guidance protocol (``weight``, ``prepare``, ``sample_cameras``,
    ``loss``).

    Args:
        model: loaded :class:`Zero123Components`, or a zero-argument callable returning them; the callable is only
            invoked on :meth:`prepare`, so a guidance object built by a ComfyUI node holds no GPU memory until the
            fit uses it.
        config: :class:`SDSConfig`.
        device: where to run (default: the view matrix's device at :meth:`prepare`).
        dtype: model dtype (default fp16 on CUDA, fp32 elsewhere).
    """

    def __init__(self, model: Union[Zero123Components, Loader], config: Optional[SDSConfig] = None,
                 device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None) -> None:
        config = SDSConfig() if config is None else config
        if config.variant not in VARIANTS:
            raise ValueError(f"SDSConfig.variant must be one of {VARIANTS}, got {config.variant!r}")
        self.config = config
        self._model = model if isinstance(model, Zero123Components) else None
        self._loader = None if isinstance(model, Zero123Components) else model
        self.device = None if device is None else torch.device(device)
        self.dtype = dtype
        self.cache: Optional[ReferenceCache] = None
        self._alphas: Optional[Tensor] = None
        self._pending: Optional[tuple[Tensor, Tensor, Tensor]] = None
        self._gen: Optional[torch.Generator] = None
        self.last: dict = {}
        self.keep_debug = False
        self._graphs = GraphedCFG(cfg_noise_prediction)
        self._encoder = GraphedEncoder()
        self.prepare_s = 0.0
        """Seconds of the last :meth:`prepare` (model load/move and the reference encodings)."""

    def _eps(self, unet, z_t: Tensor, t: Tensor, cond: Tensor, ref: Tensor, scale: float) -> Tensor:
        """Guided eps through the captured CUDA graph when enabled (CUDA, no grad), else eagerly."""
        fn = self._graphs if self.config.cuda_graphs else cfg_noise_prediction
        return fn(unet, z_t, t, cond, ref, scale)

    # -- protocol -------------------------------------------------------------------------------
    @property
    def weight(self) -> float:
        return float(self.config.weight)

    @property
    def capture_s(self) -> float:
        """Seconds spent capturing CUDA graphs (guided UNet call and VAE encoder) since the last release."""
        return self._graphs.capture_s + self._encoder.capture_s

    @property
    def components(self) -> Zero123Components:
        if self._model is None:
            raise RuntimeError("Zero123Guidance.prepare(vm) must be called before use (it loads the model)")
        return self._model

    def _ensure_model(self, device: torch.device) -> Zero123Components:
        if self._model is None:
            self._model = self._loader()
        dtype = self.dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        if self._model.device != device or self._model.dtype != dtype:
            self._graphs.clear()
            self._encoder.clear()
            self._model.to(device=device, dtype=dtype)
        if self.config.channels_last and device.type == "cuda":
            fast_sds_layers(self._model)
        if self._alphas is None:
            self._alphas = self._model.alphas_cumprod()
        return self._model

    def prepare(self, vm) -> None:
        """Encode every input frame once (CLIP embedding + VAE latent) and remember the input camera.

        Uses ``vm.input_images`` / ``vm.input_camera`` when the view matrix has them, otherwise view 0 of the
        matrix (its camera and images) as the reference.
        """
        t0 = time.perf_counter()
        if vm.has_input:
            frames, cam = vm.input_images, vm.input_camera
        else:
            frames, cam = vm.images[:, 0], vm.cameras[[0]]
        device = self.device or vm.images.device
        comps = self._ensure_model(device)
        az, el, r = (float(x[0]) for x in orbit_coordinates(cam))
        focal = float(cam.K[0, 0, 0]) * self.config.render_size / cam.width
        clip, lat = encode_references(comps, frames.to(device), self.config.render_size)
        self.cache = ReferenceCache(clip, lat, az, el, r, focal, frames_encoded=int(frames.shape[0]))
        self._gen = torch.Generator(device=device).manual_seed(int(self.config.seed))
        self._pending = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.prepare_s = time.perf_counter() - t0

    def sample_cameras(self, time_idx: Tensor, step: int, total: int,
                       generator: Optional[torch.Generator] = None) -> Cameras:
        """One random novel view per entry of ``time_idx`` ``[B]`` (relative to the input camera, same radius)."""
        c = self._require_cache()
        if time_idx.ndim != 1 or time_idx.numel() == 0:
            raise ValueError(f"time_idx must be a non-empty [B] index tensor, got shape {tuple(time_idx.shape)}")
        B, cfg = int(time_idx.numel()), self.config
        d_el, d_az = sample_relative_views(B, cfg.elevation_range, cfg.azimuth_range, generator)
        el = (c.elevation + d_el).clamp(-cfg.max_abs_elevation, cfg.max_abs_elevation)
        cams = orbit_cameras(c.azimuth + d_az, el, c.radius, cfg.render_size, c.focal)
        self._pending = (time_idx.detach().cpu().clone(), el - c.elevation, d_az)
        return cams.to(c.latents.device)

    def loss(self, renders: Tensor, time_idx: Tensor, step: int, total: int) -> Tensor:
        """SDS surrogate loss (unweighted; the fit multiplies by ``weight``) for renders ``[B, 3, H, W]`` in [0, 1]
        of the cameras returned by the last :meth:`sample_cameras` call for the same ``time_idx``."""
        if self.skips(step):
            return renders.sum() * 0.0  # keeps the graph, contributes nothing
        z, _, _, g = self._sds_terms(renders, time_idx, step, total)
        return (sds_loss(z, g, self.config.reduction) * self.step_factor()).to(renders.device)

    # -- pieces (shared with the refine guidance) -----------------------------------------------
    def skips(self, step: int) -> bool:
        """True on the fit steps :attr:`SDSConfig.every` leaves out."""
        if self.config.every < 1:
            raise ValueError(f"SDSConfig.every must be >= 1, got {self.config.every}")
        return step % self.config.every != 0

    @property
    def views_per_time(self) -> int:
        """Novel views per sampled fit time (:attr:`SDSConfig.views_per_time`; read by the fit)."""
        return self.config.views_per_time

    def working_bytes(self, views: int) -> int:
        """Device memory one SDS step of ``views`` renders needs beyond the weights (the VAE encoder's activations
        kept for its backward, the graphs' buffers): about 0.3 GB per 256² view (H200, fp16, channels_last: the fit's
        peak grew by 1.2 GB from 4 to 8 views a step), scaled with the render area."""
        return int(views * 0.3e9 * (self.config.render_size / 256) ** 2)

    def step_factor(self) -> float:
        """Loss multiplier of an applied step: ``every`` with :attr:`SDSConfig.carry_skipped`, else 1."""
        return float(self.config.every) if self.config.carry_skipped else 1.0

    def _require_cache(self) -> ReferenceCache:
        if self.cache is None:
            raise RuntimeError("call Zero123Guidance.prepare(view_matrix) before sampling cameras or computing the loss")
        return self.cache

    def condition_tokens(self, time_idx: Tensor) -> Tensor:
        """``[B, 1, D]`` projected CLIP + camera tokens for the views of the last :meth:`sample_cameras` call."""
        c = self._require_cache()
        if self._pending is None or not torch.equal(self._pending[0], time_idx.detach().cpu()):
            raise ValueError("loss() must follow sample_cameras() with the same time_idx; got "
                             f"{time_idx.tolist()}, last sampled {None if self._pending is None else self._pending[0].tolist()}")
        _, d_el, d_az = self._pending
        B = d_el.shape[0]
        emb = zero123_camera_embedding(d_el, d_az, torch.zeros(B), torch.full((B,), c.elevation), self.config.variant)
        comps = self.components
        idx = time_idx.to(c.clip.device).long()
        x = torch.cat([c.clip[idx][:, None, :].float(), emb.to(c.clip.device)], dim=-1)
        return comps.camera_projection(x.to(comps.dtype))

    def encode_renders(self, renders: Tensor) -> Tensor:
        """Scaled VAE latents ``[B, 4, s/8, s/8]`` of renders ``[B, 3, H, W]`` in [0, 1], differentiable."""
        comps, s = self.components, self.config.render_size
        if renders.shape[-2:] != (s, s):
            renders = F.interpolate(renders, (s, s), mode="bilinear", align_corners=False)
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        x = (renders * 2.0 - 1.0).to(comps.device, comps.dtype)  # autograd carries the gradient back across devices
        graphed = self.config.cuda_graphs and self.config.graph_encoder
        with cudnn_benchmark(self.config.cudnn_benchmark):
            moments = self._encoder(comps.vae, x) if graphed else encoder_moments(comps.vae, x)
        post = DiagonalGaussianDistribution(moments)
        return post.sample(generator=self._gen) * comps.vae.config.scaling_factor

    def _sds_terms(self, renders: Tensor, time_idx: Tensor, step: int, total: int):
        c, cfg = self._require_cache(), self.config
        if renders.ndim != 4 or renders.shape[1] != 3:
            raise ValueError(f"renders must be [B, 3, H, W] in [0, 1], got {tuple(renders.shape)}")
        if time_idx.shape != (renders.shape[0],):
            raise ValueError(f"time_idx must be [B]=[{renders.shape[0]}], got {tuple(time_idx.shape)}")
        comps = self.components
        B = renders.shape[0]
        cond = self.condition_tokens(time_idx)
        z = self.encode_renders(renders)
        t_cpu = sds_timesteps(step, total, B, cfg.t_min, cfg.t_max, cfg.anneal, self._gen)
        t = t_cpu.to(z.device, non_blocking=True)
        with torch.no_grad():
            eps = torch.randn(z.shape, generator=self._gen, device=z.device, dtype=torch.float32)
            ab = self._alphas[t_cpu].view(-1, 1, 1, 1).to(z.device, non_blocking=True)
            z_t = ab.sqrt() * z.detach().float() + (1 - ab).sqrt() * eps
            ref = c.latents[time_idx.to(c.latents.device).long()]
            with cudnn_benchmark(cfg.cudnn_benchmark):
                eps_pred = self._eps(comps.unet, z_t, t, cond, ref, cfg.guidance_scale)
            g = sds_gradient(eps_pred, eps, sds_weight(self._alphas, t_cpu).to(z.device, non_blocking=True))
        if self.keep_debug:
            if z.requires_grad:
                z.retain_grad()
            self.last = dict(latents=z, t=t, eps=eps, z_t=z_t, eps_pred=eps_pred, grad=g, cond=cond.detach(), ref=ref)
        return z, t, eps, g

    def release(self) -> None:
        """Drop the model and the caches (frees GPU memory; the next prepare() reloads through the loader)."""
        if self._loader is not None:
            self._model = None
        self._graphs, self._encoder = GraphedCFG(cfg_noise_prediction), GraphedEncoder()  # drops graphs, timings
        self.cache, self._pending, self._alphas = None, None, None


@torch.no_grad()
def encode_references(comps: Zero123Components, frames: Tensor, size: int = 256, chunk: int = 8
                      ) -> tuple[Tensor, Tensor]:
    """CLIP image embeddings ``[T, D]`` and unscaled VAE latents ``[T, 4, size/8, size/8]`` of frames
    ``[T, H, W, 3]`` in [0, 1] on white (zero123's ``c_concat`` is the posterior mode without the 0.18215 scale)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"reference frames must be [T, H, W, 3] in [0, 1], got {tuple(frames.shape)}")
    dev, dt = comps.device, comps.dtype
    clips, lats = [], []
    for i in range(0, frames.shape[0], chunk):
        f = frames[i:i + chunk]
        px = clip_pixels(comps.image_processor, f).to(dev, dt)
        clips.append(comps.image_encoder(pixel_values=px).image_embeds.float())
        x = f.permute(0, 3, 1, 2).float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False)
        lats.append(comps.vae.encode((x * 2 - 1).to(dev, dt)).latent_dist.mode().float())
    return torch.cat(clips), torch.cat(lats)
