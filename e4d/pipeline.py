"""The whole Efficient4D chain in one call: video (or one image) -> fitted 4D Gaussians.

:func:`video_to_4d` runs the paper's stages as numbered phases, one call each:

1. prepare: crop and centre the object on a white 256² canvas (:func:`e4d.preprocess.prepare_object_frames`);
2. multi-view: SyncDreamer-T makes 16 views of K key frames (:func:`e4d.syncdreamer.pipeline.syncdreamer_t`);
3. interpolate: RIFE (or the weights-free flow fallback) densifies time, K -> M = 4K - 3 frames
   (:func:`e4d.interp.interpolate_view_matrix`);
4. confidence: per-pixel trust maps from interpolation errors (:func:`e4d.confidence_maps.confidence_for_view_matrix`);
5. fit: 4D Gaussians with the confidence-weighted loss and optional Zero123 SDS (:func:`e4d.fit.fit`).

:func:`image_to_4d` runs Stable Video Diffusion first and then the same phases; :func:`views_to_4d` fits a view
matrix you already have (phases 4-5). :func:`save_outputs` renders the orbit video and writes the native file and
the PLY sequence. Models come in a :class:`PipelineModels` (see :func:`e4d.model_folder.load_models`).

Progress and cancel follow :mod:`e4d.progress`: ``callback(step, total, info)`` is called once at the start of
every stage with ``info = {"stage": name, "event": "start"}`` (``step``/``total`` count the stages) and then by
the stage's own loop with ``info["stage"] = name`` added; raising :class:`~e4d.progress.Cancelled` from it stops
the run (nothing is written). ``hooks`` (see :mod:`e4d.pipeline_hooks`) are called before and after every stage.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .confidence_maps import ConfidenceConfig, confidence_for_view_matrix
from .fit import FitConfig, FitResult, fit, preset
from .gaussians4d import Gaussians4D
from .guidance.zero123 import SDSConfig
from .orbit import OrbitConfig
from .pipeline_hooks import StageHook, SubstageClock, run_stage
from .preprocess import PrepareConfig, prepare_object_frames
from .progress import Cancelled, ProgressCallback, report
from .svd.pipeline import SVDConfig
from .syncdreamer.sampler import SamplerConfig
from .viewmatrix import ViewMatrix

log = logging.getLogger(__name__)


@dataclass
class InterpolationConfig:
    """Time densification of the generated view matrix (paper §4.1)."""

    multiplier: int = 4
    """m: K frames become (K - 1) m + 1 (paper: 4, midpoints applied twice, M = 4K - 3)."""
    method: str = "auto"
    """``"auto"``, ``"direct"`` or ``"recursive"`` (see :mod:`e4d.interp.sequences`)."""
    batch: int = 64
    """Images per interpolator call (lower it when memory is short)."""


@dataclass
class ExportConfig:
    """What :func:`save_outputs` writes."""

    ply_times: int = 0
    """PLY files written, at evenly spaced times over the fitted range; 0 = one per key frame (K)."""
    video_fps: float = 24.0
    """Frame rate of the orbit video."""


@dataclass
class PipelineConfig:
    """Every setting of the chain, one nested config per stage; defaults are the paper's / the nodes'."""

    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    """Object crop and centring (256² canvas, object 200 px, one box for the clip)."""
    white_background_masks: bool = False
    """When the input has no alpha: take the object mask from a white background (else that is an error)."""
    keyframes: int = 16
    """K: frames given to SyncDreamer-T, evenly spread over the input (paper: 16; 0 = all)."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """SyncDreamer-T sampling (50 DDIM steps, decomposed guidance 2/1, view_batch 16)."""
    interpolation: InterpolationConfig = field(default_factory=InterpolationConfig)
    """Time densification (x4)."""
    confidence: Optional[ConfidenceConfig] = field(default_factory=ConfidenceConfig)
    """Confidence maps (paper eq. 13/16/17); None = fit without them (e.g. ground-truth views)."""
    fit: FitConfig = field(default_factory=lambda: preset("recommended"))
    """The 4D Gaussian fit (the recommended preset: paper loss + alpha term + densification, 500 steps)."""
    sds: SDSConfig = field(default_factory=SDSConfig)
    """Zero123 SDS settings; SDS runs when :attr:`PipelineModels.guidance` is set."""
    svd: SVDConfig = field(default_factory=lambda: SVDConfig(keep_frames=16))
    """Stable Video Diffusion for :func:`image_to_4d` (SVD-XT, 1024x576, 25 steps, 16 frames kept)."""
    orbit: OrbitConfig = field(default_factory=OrbitConfig)
    """Orbit video of :func:`save_outputs` (the time range is taken from the fit)."""
    export: ExportConfig = field(default_factory=ExportConfig)
    """Files of :func:`save_outputs`."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class PipelineModels:
    """The loaded models of the chain (see :func:`e4d.model_folder.load_models`); unused ones may be None."""

    syncdreamer: Any = None
    """:class:`~e4d.syncdreamer.model.SyncDreamer` (needed by both entry points)."""
    interpolator: Any = None
    """An :class:`~e4d.interp.Interpolator` (RIFE); None = the OpenCV flow fallback."""
    guidance: Any = None
    """Zero123 :class:`~e4d.guidance.loader.Zero123Components` (or a zero-argument loader of them) for SDS;
    None = fit without SDS."""
    svd: Any = None
    """A diffusers ``StableVideoDiffusionPipeline`` (only :func:`image_to_4d`)."""
    sources: Dict[str, str] = field(default_factory=dict)
    """Which file each model came from (for logs and metadata)."""


@dataclass
class PipelineResult:
    """Output of :func:`video_to_4d` / :func:`image_to_4d` / :func:`views_to_4d`."""

    gaussians: Gaussians4D
    """The fitted 4D Gaussians (on the compute device)."""
    view_matrix: ViewMatrix
    """The K-frame view matrix the fit started from (generated, before interpolation; on the CPU)."""
    fit: FitResult
    """Loss history and the fit loop's wall time."""
    substages: Dict[str, Dict[str, float]] = field(default_factory=dict)
    """Seconds of the named parts inside a stage, per stage (e.g. ``{"syncdreamer": {"condition": 0.3,
    "graph capture": 0.2, "sampling": 30.8, "decode": 0.9, ...}, "fit": {"setup": 0.6, "loop": 22.4}}``)."""

    @property
    def key_times(self) -> Tensor:
        """``[K]`` normalized times of the key frames."""
        return self.view_matrix.times

    @property
    def time_range(self) -> tuple[float, float]:
        t = self.view_matrix.times
        return float(t.min()), float(t.max())


class _Stages:
    """Runs named stages: a cancel point and a progress event at each start, hooks around, stage-tagged progress."""

    def __init__(self, names: Sequence[str], models: PipelineModels, callback: Optional[ProgressCallback],
                 hooks: Sequence[StageHook]) -> None:
        self.names, self.models, self.callback, self.hooks = list(names), models, callback, tuple(hooks or ())

    def tagged(self, stage: str) -> Optional[ProgressCallback]:
        if self.callback is None:
            return None
        cb = self.callback
        return lambda step, total, info=None: cb(step, total, {**(info or {}), "stage": stage})

    def __call__(self, stage: str, fn: Callable[[Optional[ProgressCallback]], Any]) -> Any:
        report(self.callback, self.names.index(stage) + 1, len(self.names), stage=stage, event="start")
        return run_stage(stage, lambda: fn(self.tagged(stage)), self.models, self.hooks)


def compute_device(models: PipelineModels, device: Optional[Union[str, torch.device]] = None) -> torch.device:
    """``device`` if given, else where the SyncDreamer weights are (CPU when there is none)."""
    if device is not None:
        return torch.device(device)
    sd = models.syncdreamer
    if sd is not None:
        return next(sd.parameters()).device
    return torch.device("cpu")


def _frames_and_alpha(frames, alpha, config: PipelineConfig):
    """RGB(A) frames -> (rgb-or-rgba frames, alpha) for :func:`prepare_object_frames`, with the white-background
    fallback when the input has no alpha."""
    from .masks import informative_alpha, masks_from_white

    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"frames must be [N, H, W, 3] (with alpha) or RGBA [N, H, W, 4], got {tuple(frames.shape)}")
    alpha = informative_alpha(None if alpha is None else torch.as_tensor(alpha))  # all ones = no alpha
    if alpha is not None or frames.shape[-1] == 4:
        return frames, alpha
    if not config.white_background_masks:
        raise ValueError(f"the {frames.shape[0]} input frames have no alpha, so the object cannot be cut out: give "
                         "RGBA frames or an alpha/mask, or, for an object on a white background, set "
                         "PipelineConfig.white_background_masks (CLI: --white-background)")
    rgb = torch.as_tensor(np.asarray(frames) if not isinstance(frames, Tensor) else frames)
    rgb = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
    return rgb, masks_from_white(rgb)


def check_models(models: PipelineModels, need: Sequence[str]) -> None:
    """Raise ValueError naming every required model that is None."""
    missing = [n for n in need if getattr(models, n) is None]
    if missing:
        raise ValueError(f"PipelineModels.{', '.join(missing)} is None but this entry point needs it; load it with "
                         "e4d.model_folder.load_models(models_dir) or set the field")


def video_to_4d(frames, models: PipelineModels, config: Optional[PipelineConfig] = None,
                callback: Optional[ProgressCallback] = None, hooks: Sequence[StageHook] = (),
                alpha=None, device: Optional[Union[str, torch.device]] = None) -> PipelineResult:
    """Efficient4D on a video of one object: frames -> fitted 4D Gaussians.

    Args:
        frames: ``[N, H, W, 4]`` RGBA or ``[N, H, W, 3]`` RGB (with ``alpha``, or on white with
            ``config.white_background_masks``), float in [0, 1] or uint8 (tensor or array).
        models: ``syncdreamer`` required; ``interpolator`` (None = flow fallback) and ``guidance`` (None = no SDS)
            optional.
        config: :class:`PipelineConfig` (default: the paper's settings).
        callback: progress / cancel (module docstring).
        hooks: :class:`~e4d.pipeline_hooks.StageHook` objects called around every stage.
        alpha: optional ``[N, H, W]`` object coverage (1 = object).
        device: where the stages run; default: the SyncDreamer weights' device.

    Returns:
        :class:`PipelineResult`. Raises ValueError on bad inputs or missing models, :class:`Cancelled` when the
        callback cancels.
    """
    config = config or PipelineConfig()
    check_models(models, ["syncdreamer"])
    dev = compute_device(models, device)
    run = _Stages(["preprocess", "syncdreamer", "interpolate", "confidence", "fit"], models, callback, hooks)
    return _video_phases(run, frames, alpha, models, config, dev)


def _video_phases(run: _Stages, frames, alpha, models: PipelineModels, config: PipelineConfig,
                  dev: torch.device) -> PipelineResult:
    """Phases 1-5 (shared by :func:`video_to_4d` and :func:`image_to_4d`)."""
    from .interp import interpolate_view_matrix
    from .syncdreamer.pipeline import syncdreamer_t

    interp = _interpolator(models)
    ic = config.interpolation

    # 1. prepare: object centred on white, one crop box for the clip
    frames, alpha = _frames_and_alpha(frames, alpha, config)
    prep = run("preprocess", lambda cb: prepare_object_frames(frames, alpha, config.prepare))

    # 2. multi-view: SyncDreamer-T, K key frames x 16 views
    sd_clock = SubstageClock(dev)
    vm = run("syncdreamer", lambda cb: syncdreamer_t(models.syncdreamer, prep.images.to(dev), prep.alpha,
                                                     num_frames=config.keyframes, prepare="none",
                                                     config=config.sampler, callback=cb, clock=sd_clock))

    # 3. interpolate: K -> (K - 1) m + 1 frames (paper: M = 4K - 3)
    dense = run("interpolate", lambda cb: interpolate_view_matrix(vm.to(interp.device), interp, ic.multiplier,
                                                                  method=ic.method, batch=ic.batch, callback=cb))

    # 4. confidence: where the generated views disagree in time, trust them less
    conf = None
    if config.confidence is not None:
        conf = run("confidence", lambda cb: confidence_for_view_matrix(dense, interp, config.confidence, cb))

    # 5. fit: 4D Gaussians, confidence-weighted loss, optional Zero123 SDS
    fit_clock = SubstageClock(dev)
    fitted = run("fit", lambda cb: _fit(dense, conf, models, config, dev, cb, fit_clock))
    return PipelineResult(gaussians=fitted.gaussians, view_matrix=vm.to("cpu"), fit=fitted,
                          substages={"syncdreamer": sd_clock.seconds, "fit": fit_clock.seconds})


def _interpolator(models: PipelineModels):
    if models.interpolator is not None:
        return models.interpolator
    from .interp import load_interpolator

    log.info("no RIFE model given: interpolating with the OpenCV flow fallback")
    return load_interpolator(None)


def _fit(vm: ViewMatrix, conf, models: PipelineModels, config: PipelineConfig, dev: torch.device,
         callback: Optional[ProgressCallback], clock: Optional[SubstageClock] = None) -> FitResult:
    """:func:`e4d.fit.fit` on ``dev`` with Zero123 SDS when the models have a guidance model. ``clock`` receives
    ``setup`` (data upload, initialisation), ``loop`` (the fit loop) and, with SDS, ``SDS references`` (model
    placement and reference encodings, part of the setup) and ``SDS graph capture`` (inside the loop's first
    steps, not counted in ``loop``)."""
    import time

    from .guidance.zero123 import Zero123Guidance

    clock = clock or SubstageClock()
    guidance = None if models.guidance is None else Zero123Guidance(models.guidance, config.sds, device=dev)
    try:  # the fit needs autograd even when the caller runs under inference mode (ComfyUI)
        t0 = time.perf_counter()
        with torch.inference_mode(False), torch.enable_grad():
            res = fit(vm.to(dev), None if conf is None else conf.to(dev), config.fit, guidance=guidance,
                      callback=callback)
        clock.sync()
        capture = guidance.capture_s if guidance is not None else 0.0
        refs = guidance.prepare_s if guidance is not None else 0.0
        clock.add("setup", time.perf_counter() - t0 - res.seconds - refs)
        if guidance is not None:
            clock.add("SDS references", refs)
            clock.add("SDS graph capture", capture)
        clock.add("loop", res.seconds - capture)
        return res
    finally:
        if guidance is not None:
            guidance.release()  # per-frame CLIP/VAE references go with the fit


def image_to_4d(image, models: PipelineModels, config: Optional[PipelineConfig] = None,
                callback: Optional[ProgressCallback] = None, hooks: Sequence[StageHook] = (),
                mask: Optional[Tensor] = None, device: Optional[Union[str, torch.device]] = None) -> PipelineResult:
    """Efficient4D from one image: SVD animates it, then :func:`video_to_4d`'s phases run on the clip.

    Args:
        image: ``[H, W, 3]`` or RGBA ``[H, W, 4]`` float in [0, 1] (the object; alpha or ``mask`` mark it).
        models: ``svd`` and ``syncdreamer`` required; ``interpolator`` and ``guidance`` optional.
        mask: optional ``[H, W]`` object mask (1 = object).
        config, callback, hooks, device: as :func:`video_to_4d`.
    """
    from .svd.pipeline import image_to_video

    config = config or PipelineConfig()
    check_models(models, ["svd", "syncdreamer"])
    image = torch.as_tensor(image)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"image must be [H, W, 3] or RGBA [H, W, 4], got {tuple(image.shape)}")
    dev = compute_device(models, device)
    run = _Stages(["svd", "preprocess", "syncdreamer", "interpolate", "confidence", "fit"], models, callback, hooks)

    # 0. animate: SVD image-to-video on white, masks from the white background, K frames kept
    clip = run("svd", lambda cb: image_to_video(models.svd, image, mask, config.svd, callback=cb))
    return _video_phases(run, clip.frames.cpu(), clip.masks.cpu(), models, config, dev)


def views_to_4d(view_matrix: ViewMatrix, models: PipelineModels, config: Optional[PipelineConfig] = None,
                callback: Optional[ProgressCallback] = None, hooks: Sequence[StageHook] = (),
                device: Optional[Union[str, torch.device]] = None) -> PipelineResult:
    """Phases 4-5 on a view matrix you already have (e.g. ground-truth renders): confidence (unless
    ``config.confidence`` is None; the interpolator as in :func:`video_to_4d`) and the fit. ``device`` defaults to
    the view matrix's."""
    config = config or PipelineConfig()
    dev = torch.device(device) if device is not None else view_matrix.images.device
    run = _Stages((["confidence"] if config.confidence is not None else []) + ["fit"], models, callback, hooks)

    # 4. confidence
    conf = None
    if config.confidence is not None:
        interp = _interpolator(models)
        conf = run("confidence", lambda cb: confidence_for_view_matrix(view_matrix, interp, config.confidence, cb))

    # 5. fit
    fit_clock = SubstageClock(dev)
    fitted = run("fit", lambda cb: _fit(view_matrix, conf, models, config, dev, cb, fit_clock))
    return PipelineResult(gaussians=fitted.gaussians, view_matrix=view_matrix.to("cpu"), fit=fitted,
                          substages={"fit": fit_clock.seconds})


def render_orbit(result: PipelineResult, config: Optional[PipelineConfig] = None,
                 callback: Optional[ProgressCallback] = None):
    """The orbit video frames (:func:`e4d.orbit.orbit_render`) over the fitted time range."""
    from .orbit import orbit_render

    config = config or PipelineConfig()
    t0, t1 = result.time_range
    oc = dataclasses.replace(config.orbit, time_start=t0, time_end=t1)
    return orbit_render(result.gaussians, oc, backend=config.fit.backend, callback=callback)


def save_outputs(result: PipelineResult, out_dir: Union[str, Path], config: Optional[PipelineConfig] = None,
                 callback: Optional[ProgressCallback] = None, hooks: Sequence[StageHook] = (),
                 meta: Optional[dict] = None, models: Optional[PipelineModels] = None) -> Dict[str, Any]:
    """Render the orbit, then write ``model.safetensors`` (native 4D), ``ply/frame_XXXX.ply`` and ``orbit.mp4``
    (``orbit.gif`` when no mp4 encoder is installed) into ``out_dir``, which is replaced as a whole and atomically
    (:func:`e4d.atomic.atomic_dir`): a cancel, an error or an interrupt leaves nothing (new) under ``out_dir``.
    Returns the paths (under ``out_dir``) and counts."""
    from .atomic import atomic_dir

    config = config or PipelineConfig()
    run = _Stages(["orbit", "export"], models or PipelineModels(), callback, hooks)
    orbit = run("orbit", lambda cb: render_orbit(result, config, cb))

    def export(cb) -> Dict[str, Any]:
        with atomic_dir(out_dir, overwrite=True) as tmp:
            files = _write_outputs(result, orbit.frames, Path(tmp), config, meta)
        final = Path(out_dir)
        return {k: (str(final / Path(v).relative_to(tmp)) if isinstance(v, str) else v) for k, v in files.items()}

    return run("export", export)


def _write_outputs(result: PipelineResult, frames: Tensor, out: Path, config: PipelineConfig,
                   meta: Optional[dict]) -> Dict[str, Any]:
    """The files of :func:`save_outputs` into the (temporary) folder ``out``; returns their paths and counts."""
    from .export import save_native, save_ply_sequence
    from .video_io import write_video

    t0, t1 = result.time_range
    n = config.export.ply_times
    times = result.key_times.tolist() if n <= 0 else torch.linspace(t0, t1, n).tolist()
    native = save_native(result.gaussians, out / "model.safetensors", time_range=(t0, t1),
                         meta={"times": result.key_times.tolist(), "fit": config.fit.to_dict(), **(meta or {})})
    plys = save_ply_sequence(result.gaussians, times, out / "ply", prefix="frame")
    try:
        video = write_video(frames, out / "orbit.mp4", fps=config.export.video_fps)
    except (OSError, RuntimeError, ValueError) as e:  # no mp4 encoder on this machine: a gif instead
        log.warning("mp4 writing failed (%s); writing a gif instead", e)
        video = write_video(frames, out / "orbit.gif", fps=config.export.video_fps)
    return {"native": str(native), "video": str(video), "ply": str(out / "ply"), "num_ply": len(plys)}


__all__ = ["PipelineConfig", "InterpolationConfig", "ExportConfig", "PipelineModels", "PipelineResult",
           "video_to_4d", "image_to_4d", "views_to_4d", "render_orbit", "save_outputs", "compute_device",
           "check_models", "Cancelled"]
