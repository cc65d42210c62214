"""SyncDreamer-T sampling: K input frames -> K x 16 views (Efficient4D stage 1, §4.1).

Per DDIM step: (1) the spatial volume of every frame from its 16 noisy views, (2) temporal smoothing of the K
volumes (eq. 10/15), (3) the UNet over all (frame, view) pairs in chunks of ``view_batch``, (4) the DDIM update of
all latents. The frame is the batch dimension; one initial noise is shared by all frames (as Efficient4D).
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..limits import check_finite_fields
from ..pipeline_hooks import SubstageClock
from ..progress import ProgressCallback, report
from .attention import profile_range
from .chunks import ChunkRunner
from .layers import fused_norm_works
from .model import Condition, SyncDreamer
from .schedule import ddim_schedule, ddim_step
from .speed import save_compile_cache, use_channels_last
from .temporal import parse_kernel, smooth_volumes, smoothing_matrix

log = logging.getLogger(__name__)


@dataclass
class SamplerConfig:
    """SyncDreamer-T sampling parameters (defaults = Efficient4D ``run.sh``)."""

    steps: int = 50
    """DDIM steps (timesteps ``range(0, 1000, 1000 // steps) + 1``)."""
    eta: float = 1.0
    """DDIM eta (1.0 = the official stochastic sampler)."""
    guidance: str = "decomposed"
    """``"decomposed"`` (HarmonyView, Efficient4D), ``"cfg"`` (SyncDreamer) or ``"none"``."""
    scales: Tuple[float, ...] = (2.0, 1.0)
    """Guidance scales: (s1, s2) for decomposed, (s,) for cfg (SyncDreamer's default is 2.0)."""
    elevation: float = 0.0
    """Elevation of the input view in degrees (Efficient4D uses 0)."""
    temporal_weights: str = "auto"
    """Volume-smoothing kernel over frames: ``"auto"`` (eq. 15 by K), ``"none"``, or e.g. ``"1,1,6,1,1"``."""
    cyclic: bool = False
    """Wrap the smoothing around (looping videos)."""
    view_batch: int = 16
    """(frame, view) pairs per UNet chunk; lower it to save memory (results do not change)."""
    seed: int = 0
    """Seed of the CPU generator used for every draw (device-independent results)."""
    shared_noise: bool = True
    """Start every frame from the same x_T (Efficient4D); False draws one per frame."""
    autocast_dtype: Optional[torch.dtype] = None
    """Run under ``torch.autocast`` with this dtype on CUDA (for fp32 weights); None = the weights' dtype."""
    cuda_graphs: bool = True
    """On CUDA, capture each chunk's frustum-net + UNet pass once per chunk size and replay it at every later step
    (same kernels, same results; removes the per-step launch overhead). Ignored on CPU, under ``autocast_dtype``
    and for ``torch.compile``d models; costs one extra eager pass per chunk size at the first step."""

    channels_last: bool = True
    """On CUDA, put the UNet's and the volume nets' convolution weights in channels_last(_3d) before sampling
    (:func:`~.speed.use_channels_last`, changes the model in place; same numbers up to kernel choice): cuDNN then
    skips its layout transposes (H200, K = 4, fp16: 0.168 s per step against 0.206 s contiguous). Only where the
    fused GroupNorm kernel works (:func:`~.layers.fused_norm_works`); False leaves the model's layout as it is."""

    def check(self) -> None:
        check_finite_fields(self)  # NaN passes every range check below
        if self.guidance not in ("decomposed", "cfg", "none"):
            raise ValueError(f"guidance must be 'decomposed', 'cfg' or 'none', got {self.guidance!r}")
        need = 2 if self.guidance == "decomposed" else 1
        if len(self.scales) < need:
            raise ValueError(f"guidance {self.guidance!r} needs {need} scale(s), got {tuple(self.scales)}")
        if self.view_batch < 1:
            raise ValueError(f"view_batch must be >= 1, got {self.view_batch}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")


@dataclass
class NoiseOverride:
    """Replay recorded randomness (parity tests): each field replaces the corresponding draw."""

    posterior: Optional[Tensor] = None
    """``[K, 4, h, w]`` VAE posterior noise."""
    x_T: Optional[Tensor] = None
    """``[K or 1, N, 4, h, w]`` initial latents."""
    step: Optional[Callable[[int], Tensor]] = None
    """index -> ``[K, N, 4, h, w]`` noise added after the step with that DDIM index (index > 0)."""


def _randn(shape, gen: torch.Generator, like: Tensor) -> Tensor:
    """Float32 normal noise from the CPU generator on ``like``'s device. To CUDA through pinned memory without
    blocking: a pageable copy would make the host wait for the whole queue at every DDIM step."""
    return _upload(torch.randn(shape, generator=gen, dtype=torch.float32), like.device)


def _upload(t: Tensor, device: torch.device) -> Tensor:
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class _LaggedProgress:
    """Reports DDIM step ``i`` once the device has finished it while step ``i + 1`` is already queued.

    On CUDA a step is only queued when the loop moves on; reporting (and the cancel check in the callback) right
    away would run ahead of the GPU, and waiting for each step before queueing the next would leave the GPU idle
    while Python queues it. One step in flight avoids both; a cancel lands within two steps.
    """

    def __init__(self, callback: Optional[ProgressCallback], total: int, device: torch.device) -> None:
        self.callback, self.total = callback, total
        self.cuda = device.type == "cuda" and callback is not None
        self.pending: list = []

    def queued(self, step: int, t: int) -> None:
        """Step ``step`` (1-based) with timestep ``t`` is queued."""
        if not self.cuda:
            report(self.callback, step, self.total, timestep=t)
            return
        ev = torch.cuda.Event()
        ev.record()
        self.pending.append((step, t, ev))
        while len(self.pending) > 1:
            self._pop()

    def finish(self) -> None:
        while self.pending:
            self._pop()

    def _pop(self) -> None:
        step, t, ev = self.pending.pop(0)
        ev.synchronize()
        report(self.callback, step, self.total, timestep=t)


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def predict_all_views(model: SyncDreamer, x: Tensor, t: int, cond: Condition, volumes: Tensor,
                      t_embed: Tensor, cfg: SamplerConfig, runner: Optional[ChunkRunner] = None) -> Tensor:
    """Guided eps for every (frame, view): ``x [K, N, 4, h, w]``, ``volumes [K, C, V, V, V]`` -> ``[K, N, 4, h, w]``.

    ``runner``: the run's :class:`~.chunks.ChunkRunner` (keeps its CUDA graphs across steps); None = an eager one.
    """
    K, N = x.shape[:2]
    if runner is None:
        runner = ChunkRunner(model, cond, cfg.guidance, cfg.scales, use_graphs=False)
    runner.set_step(volumes, t_embed, torch.full((1,), t, device=x.device, dtype=torch.long))
    eps = torch.empty_like(x)
    pairs = torch.arange(K * N, device=x.device)
    for start in range(0, K * N, cfg.view_batch):
        idx = pairs[start:start + cfg.view_batch]
        f, v = idx // N, idx % N
        eps[f, v] = runner(x[f, v], f, v)
    return eps


@torch.no_grad()
def sample_latents(model: SyncDreamer, images: Tensor, config: SamplerConfig = SamplerConfig(),
                   callback: Optional[ProgressCallback] = None,
                   noise: Optional[NoiseOverride] = None, cond: Optional[Condition] = None,
                   clock: Optional[SubstageClock] = None) -> Tensor:
    """Run SyncDreamer-T: ``images [K, 3, S, S]`` in [-1, 1] (frames on white) -> latents ``[K, N, 4, S/8, S/8]``.

    The returned latents are the scaled ones (decode with :meth:`SyncDreamer.decode_latent`). ``callback(step,
    total, info)`` runs after every DDIM step (on CUDA once the device has finished it); raising from it cancels
    between steps. ``cond`` replaces the conditioning computed from ``images`` (tests). ``clock`` receives the
    seconds of ``condition``, ``graph capture`` and ``sampling`` (the DDIM loop without the capture).

    The loop never waits for the device (schedule coefficients and the smoothing matrix are on it beforehand,
    noise goes up through pinned memory), so Python queues step ``i + 1`` while the GPU runs step ``i``.
    """
    config.check()
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [K, 3, H, W] in [-1, 1], got {tuple(images.shape)}")
    if images.shape[-1] != images.shape[-2] or images.shape[-1] % 64:
        raise ValueError(f"SyncDreamer needs square frames whose side is a multiple of 64 (256 for the real model), "
                         f"got {images.shape[-1]}x{images.shape[-2]}; use 'Prepare Object Frames' (size 256)")
    noise = noise or NoiseOverride()
    clock = clock or SubstageClock()
    dev = model.cc_projection.weight.device
    wdt = model.cc_projection.weight.dtype
    K, N = images.shape[0], model.num_views
    gen = torch.Generator().manual_seed(int(config.seed))
    images = images.to(dev)
    h = images.shape[-1] // 8
    kernel = parse_kernel(config.temporal_weights, K)
    smooth = smoothing_matrix(K, kernel, config.cyclic).to(device=dev, dtype=torch.float32)
    sched = ddim_schedule(model.alphas_cumprod, config.steps, config.eta)
    coef = torch.stack([sched.alphas, sched.alphas_prev, sched.sigmas], dim=1).to(dev)  # [S, 3] float32
    with _autocast(dev, config.autocast_dtype), clock("condition"):
        post = noise.posterior if noise.posterior is not None else _randn((K, 4, h, h), gen, images)
        elev = torch.full((K,), config.elevation, dtype=torch.float32).deg2rad()
        if cond is None:
            cond = model.condition(images.float(), elev, post.to(dev, torch.float32), batch=config.view_batch)
        if noise.x_T is not None:
            x = noise.x_T.to(dev, torch.float32).expand(K, N, 4, h, h).clone()
        else:
            x = _randn((1 if config.shared_noise else K, N, 4, h, h), gen, images).expand(K, -1, -1, -1, -1).clone()
    total = len(sched.timesteps)
    if config.channels_last and dev.type == "cuda" and fused_norm_works(dev, wdt):
        use_channels_last(model)  # PyTorch's GroupNorm would undo the layout at every norm: only with ours
    runner = ChunkRunner(model, cond, config.guidance, config.scales,
                         use_graphs=config.cuda_graphs and config.autocast_dtype is None)
    progress = _LaggedProgress(callback, total, dev)
    with _autocast(dev, config.autocast_dtype), clock("sampling"):
        for i in range(total):
            index = total - 1 - i
            t = int(sched.timesteps[index])
            t_embed = model.embed_time(torch.full((K,), t, device=dev, dtype=torch.long))
            with profile_range("sd/volume"):
                volumes = model.spatial_volume_for(x.to(wdt), t_embed, cond.v_embed)
                volumes = smooth_volumes(volumes, kernel, config.cyclic, smooth)  # SyncDreamer-T (eq. 10 / 15)
            eps = predict_all_views(model, x, t, cond, volumes, t_embed, config, runner)
            z = None
            if index > 0:
                z = _upload(noise.step(index), dev) if noise.step is not None else _randn(x.shape, gen, x)
                z = z.to(dev, torch.float32)
            x = ddim_step(x, eps, coef[index, 0], coef[index, 1], coef[index, 2], z)
            if i == 0 and getattr(model, "compiled", False):
                save_compile_cache(model)
            progress.queued(i + 1, t)
        progress.finish()
    if runner.capture_s:  # the first step's captures are inside the loop: report them apart
        clock.add("sampling", -runner.capture_s)
        clock.add("graph capture", runner.capture_s)
    return x


@torch.no_grad()
def decode_views(model: SyncDreamer, latents: Tensor, batch: int = 16) -> Tensor:
    """Latents ``[K, N, 4, h, w]`` -> images ``[K, N, 8h, 8w, 3]`` float32 in [0, 1]."""
    K, N = latents.shape[:2]
    flat = latents.reshape(K * N, *latents.shape[2:])
    out = [model.decode_latent(flat[s:s + batch]).float().clamp(-1, 1) for s in range(0, K * N, max(1, batch))]
    img = (torch.cat(out) + 1) / 2
    return img.permute(0, 2, 3, 1).reshape(K, N, img.shape[-2], img.shape[-1], 3)


def white_masks(images: Tensor, workers: int = 8) -> Tensor:
    """:func:`e4d.masks.masks_from_white` of CPU images ``[F, H, W, 3]`` -> ``[F, H, W]``, split over up to
    ``workers`` threads (OpenCV releases the GIL; the K x 16 generated views took seconds on one core)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..masks import masks_from_white

    n = max(1, min(workers, os.cpu_count() or 1, images.shape[0]))
    if n == 1:
        return masks_from_white(images)
    with ThreadPoolExecutor(n) as pool:
        return torch.cat(list(pool.map(masks_from_white, images.chunk(n))))


def generate_view_matrix(model: SyncDreamer, frames: Tensor, alpha: Optional[Tensor] = None,
                         config: SamplerConfig = SamplerConfig(), times: Optional[Sequence[float]] = None,
                         callback: Optional[ProgressCallback] = None, estimate_alpha: bool = True,
                         clock: Optional[SubstageClock] = None):
    """K prepared frames -> :class:`~e4d.viewmatrix.ViewMatrix` ``[K, 16, S, S, 3]`` (Efficient4D stage 1).

    Args:
        frames: ``[K, S, S, 3]`` float in [0, 1], object centred on white (see :mod:`e4d.preprocess`).
        alpha: optional ``[K, S, S]`` input alpha (stored as ``input_alpha``).
        config: :class:`SamplerConfig`.
        times: ``[K]`` normalised times; default ``linspace(0, 1, K)``.
        callback: progress per DDIM step (cancel by raising).
        estimate_alpha: also give the generated views an alpha estimated from the white background (SyncDreamer
            draws objects on white), so the fit can supervise coverage; measured on CesiumMan, the alpha term
            lifts held-out PSNR by about 2-3 dB (docs/benchmarks.md).
        clock: receives the seconds of each part (condition, graph capture, sampling, decode, to host, alpha
            masks; device-synchronized at part boundaries only); they are also logged at INFO.
    """
    from ..cameras import input_view, syncdreamer16
    from ..viewmatrix import ViewMatrix

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] != frames.shape[2]:
        raise ValueError(f"frames must be square [K, S, S, 3] in [0, 1] (run 'Prepare object frames' first), "
                         f"got {tuple(frames.shape)}")
    K, S = frames.shape[0], frames.shape[1]
    tt = torch.linspace(0, 1, K) if times is None else torch.as_tensor(list(times), dtype=torch.float32)
    if tt.shape != (K,):
        raise ValueError(f"times must have K={K} entries, got {tuple(tt.shape)}")
    dev = model.cc_projection.weight.device
    clock = clock if clock is not None else SubstageClock(dev)
    imgs = frames.permute(0, 3, 1, 2).float() * 2 - 1
    lat = sample_latents(model, imgs, config, callback, clock=clock)
    with clock("decode"):
        views = decode_views(model, lat, batch=config.view_batch)
    with clock("to host"):
        views = views.cpu()
    cams = syncdreamer16(views.shape[-2])
    view_alpha = None
    if estimate_alpha:
        with clock("alpha masks"):
            view_alpha = white_masks(views.flatten(0, 1)).view(views.shape[:-1])
    log.info("SyncDreamer-T, K=%d x %d views, %d steps: %s", K, views.shape[1], config.steps, clock.summary())
    return ViewMatrix(images=views, cameras=cams, times=tt, alpha=view_alpha,
                      input_images=frames.detach().float().cpu(),
                      input_alpha=None if alpha is None else alpha.detach().float().cpu(),
                      input_camera=input_view(config.elevation, size=S))
