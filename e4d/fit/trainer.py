"""The 4D Gaussian fit of Efficient4D (paper §4.2): random init, Adam, batched (time, view) rendering.

Speed design (the target is 500 steps in seconds on one GPU; figures in docs/benchmarks.md):

* one renderer call per step renders ``times_per_batch x views_per_batch`` images (``w2c [B, C, 4, 4]``);
* all targets, confidences and the whole (time, view) sampling plan live on the device from the start;
* the loop never reads a value back to the host except every ``log_every`` steps;
* fused Adam on CUDA; the learning-rate schedule only writes Python floats into the param groups.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor

from ..confidence import Confidence
from ..gaussians4d import Gaussians4D, init_random
from ..masks import informative_alpha
from ..progress import ProgressCallback, report
from ..render.backends import fit_time_estimate, log_backend
from ..viewmatrix import ViewMatrix
from .config import FitConfig
from .densify import DensifyState, DensifyStrategy
from .guidance_api import (check_guidance, check_guidance_cameras, check_guidance_loss, guidance_skips,
                           guidance_views_per_time)
from .losses import alpha_loss, image_terms, weighted_sum
from .sampler import BatchPlan, plan_batches

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """Output of :func:`fit`.

    Attributes:
        gaussians: the fitted :class:`~e4d.gaussians4d.Gaussians4D` (detached, on the view matrix's device).
        history: one dict per logged step: ``step`` (1-based), ``loss`` and its terms, ``lr_xyz``, ``num``.
        seconds: wall time of the optimisation loop (device-synchronized; excludes input checks and data upload).
    """

    gaussians: Gaussians4D
    history: List[Dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _TrainData:
    """Everything the loop indexes, already on the device. V' = training views (+ the input view)."""

    targets: Tensor            # [T, V', 3, H, W]
    w2c: Tensor                # [V', 4, 4]
    K: Tensor                  # [V', 3, 3]
    times: Tensor              # [T]
    c_rgb: Optional[Tensor]    # [T, V', 1, H, W] or None (= ones)
    c_ssim: Optional[Tensor]   # [T, V', 1, H, W] or None
    alpha: Optional[Tensor]    # [T, V', 1, H, W] or None
    alpha_valid: Optional[Tensor]  # [V'] float 0/1
    width: int
    height: int


# ----------------------------------------------------------------------------------------------- checks
def check_inputs(vm: ViewMatrix, confidence: Optional[Confidence], config: FitConfig,
                 init: Optional[Gaussians4D]) -> None:
    """Validate the fit's inputs; raise TypeError/ValueError stating the rule, the value and the fix."""
    if not isinstance(vm, ViewMatrix):
        raise TypeError(f"fit needs an e4d.viewmatrix.ViewMatrix, got {type(vm).__name__}")
    if not isinstance(config, FitConfig):
        raise TypeError(f"config must be a FitConfig (see e4d.fit.preset), got {type(config).__name__}")
    config.validate()
    if vm.images.numel() == 0:
        raise ValueError(f"the view matrix is empty (images {tuple(vm.images.shape)}); it needs >= 1 time and view")
    vm.validate()  # shapes, NaN/inf, camera count (one sync; it is outside the loop)
    dev = vm.images.device
    if vm.cameras.device != dev or vm.times.device != dev:
        raise ValueError(f"view matrix tensors live on different devices (images {dev}, cameras "
                         f"{vm.cameras.device}, times {vm.times.device}); call vm.to(device)")
    if confidence is not None:
        if not isinstance(confidence, Confidence):
            raise TypeError(f"confidence must be an e4d.confidence.Confidence or None, got {type(confidence).__name__}")
        confidence.check_matches(vm)
    if init is not None:
        if not isinstance(init, Gaussians4D):
            raise TypeError(f"init must be a Gaussians4D or None, got {type(init).__name__}")
        init.validate()
    if config.backend == "gsplat" and dev.type != "cuda":
        raise ValueError(f"backend 'gsplat' needs the view matrix on a CUDA device, it is on {dev}; "
                         "use backend 'auto' or 'reference', or vm.to('cuda')")


def frame_spacing(times: Tensor) -> float:
    """Spacing of the view-matrix times (median step; 1.0 for a single time), the unit of the frame-based fields."""
    if times.numel() < 2:
        return 1.0
    return float(torch.median(times[1:] - times[:-1]))


def initial_gaussians(vm: ViewMatrix, config: FitConfig, generator: torch.Generator) -> Gaussians4D:
    """The paper's random init (uniform ball, identity rotations) with sigma_t = sqrt((K - 1) / 5) frames."""
    dt = frame_spacing(vm.times)
    k = vm.T
    sigma_frames = config.sigma_t_frames if config.sigma_t_frames is not None else math.sqrt(max(k - 1, 1) / 5.0)
    t0, t1 = float(vm.times.min()), float(vm.times.max())
    return init_random(num=config.num_points, radius=config.init_radius, time_range=(t0, t1),
                       sigma_t=sigma_frames * dt, sh_degree=config.sh_degree, time_degree=config.time_degree,
                       opacity=config.init_opacity, scale=config.init_scale, generator=generator,
                       device=vm.images.device, dtype=torch.float32)


def _prepare_data(vm: ViewMatrix, confidence: Optional[Confidence], config: FitConfig) -> _TrainData:
    dev = vm.images.device
    # Half-precision targets halve the memory of long clips; 8-bit sources carry far less precision than fp16.
    store = torch.float16 if dev.type == "cuda" else torch.float32
    images = vm.images.permute(0, 1, 4, 2, 3)  # [T, V, 3, H, W]
    w2c, K = vm.cameras.w2c, vm.cameras.K
    use_input = config.use_input_view and vm.has_input
    if use_input and (vm.input_camera.width, vm.input_camera.height) != (vm.W, vm.H):
        raise ValueError(f"the input view is {vm.input_camera.width}x{vm.input_camera.height} but the views are "
                         f"{vm.W}x{vm.H}; resize the input frames or set use_input_view=False")
    if use_input:
        images = torch.cat([images, vm.input_images.permute(0, 3, 1, 2)[:, None]], 1)
        w2c = torch.cat([w2c, vm.input_camera.w2c.to(dev)], 0)
        K = torch.cat([K, vm.input_camera.K.to(dev)], 0)

    def conf_stack(c: Optional[Tensor]) -> Optional[Tensor]:
        if c is None:
            return None
        c = c.to(dev)[:, :, None]
        if use_input:  # the user's own frames are trusted fully
            c = torch.cat([c, torch.ones_like(c[:, :1])], 1)
        return c.to(store).contiguous()

    alpha = valid = None
    view_alpha = informative_alpha(vm.alpha)
    if vm.alpha is not None and view_alpha is None:
        log.warning("the view matrix alpha is all ones (no coverage information); the alpha term ignores it")
    if config.w_alpha > 0 and (view_alpha is not None or (use_input and vm.input_alpha is not None)):
        a = view_alpha if view_alpha is not None else torch.zeros(vm.T, vm.V, vm.H, vm.W, device=dev)
        valid = torch.full((vm.V,), float(view_alpha is not None), device=dev)
        if use_input:
            ia = vm.input_alpha if vm.input_alpha is not None else torch.zeros(vm.T, vm.H, vm.W, device=dev)
            a = torch.cat([a, ia[:, None]], 1)
            valid = torch.cat([valid, torch.full((1,), float(vm.input_alpha is not None), device=dev)])
        alpha = a[:, :, None].to(store).contiguous()
    elif config.w_alpha > 0:
        log.warning("w_alpha=%s but the view matrix has no alpha; the alpha term is skipped", config.w_alpha)
    return _TrainData(images.to(store).contiguous(), w2c.float().contiguous(), K.float().contiguous(),
                      vm.times.float(), conf_stack(None if confidence is None else confidence.c_rgb),
                      conf_stack(None if confidence is None else confidence.c_ssim), alpha, valid,
                      vm.W, vm.H)


# ------------------------------------------------------------------------------------------- parameters
class _Params:
    """Optimizable leaf tensors, split where the learning rates differ (xyz vs t, DC vs higher colour bands)."""

    def __init__(self, g: Gaussians4D) -> None:
        n = g.num
        src = g.detach()
        self.cfg = g.config()
        self.sh_shape = tuple(src.sh.shape)
        self.tensors: Dict[str, Tensor] = {
            "xyz": src.means[:, :3].clone(), "t": src.means[:, 3:].clone(),
            "log_scales": src.log_scales.clone(), "rot_l": src.rot_l.clone(), "rot_r": src.rot_r.clone(),
            "opacity_logit": src.opacity_logit.clone(), "sh_dc": src.sh.reshape(n, -1, 3)[:, :1].clone(),
        }
        if self.sh_shape[1] * self.sh_shape[2] > 1:
            self.tensors["sh_rest"] = src.sh.reshape(n, -1, 3)[:, 1:].clone()
        for t in self.tensors.values():
            t.requires_grad_(True)

    def gaussians(self) -> Gaussians4D:
        """The current Gaussians as a differentiable view of the leaves (cheap: two cats, no sync)."""
        p = self.tensors
        n = p["xyz"].shape[0]
        sh = p["sh_dc"] if "sh_rest" not in p else torch.cat([p["sh_dc"], p["sh_rest"]], 1)
        return Gaussians4D(torch.cat([p["xyz"], p["t"]], 1), p["log_scales"], p["rot_l"], p["rot_r"],
                           p["opacity_logit"], sh.reshape(n, *self.sh_shape[1:]), **self.cfg)


def _optimizer(params: _Params, config: FitConfig, dt: float, device: torch.device) -> torch.optim.Adam:
    lrs = {"xyz": config.lr_xyz, "t": config.lr_t * dt, "log_scales": config.lr_scale,
           "rot_l": config.lr_rotation, "rot_r": config.lr_rotation, "opacity_logit": config.lr_opacity,
           "sh_dc": config.lr_color, "sh_rest": config.lr_color / 20.0}
    groups = [{"params": [t], "lr": lrs[name], "name": name} for name, t in params.tensors.items()]
    kw = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.Adam(groups, lr=0.0, eps=config.adam_eps, betas=(0.9, 0.999), **kw)


def xyz_learning_rate(step: int, config: FitConfig) -> float:
    """Log-linear decay of the xyz learning rate from ``lr_xyz`` to ``lr_xyz_final`` over ``lr_xyz_steps``."""
    if config.lr_xyz == 0 or config.lr_xyz_final == 0:
        return config.lr_xyz
    u = min(max(step / config.lr_xyz_steps, 0.0), 1.0)
    return math.exp((1 - u) * math.log(config.lr_xyz) + u * math.log(config.lr_xyz_final))


# ------------------------------------------------------------------------------------------------ loss
def _gather(x: Optional[Tensor], ti: Tensor, vi: Tensor) -> Optional[Tensor]:
    """``x [T, V', c, H, W]`` at the step's pairs -> ``[B*C, c, H, W]`` float32."""
    if x is None:
        return None
    return x[ti[:, None], vi].flatten(0, 1).float()


def loss_weights(config: FitConfig, guidance_weight: float = 0.0) -> Dict[str, float]:
    """The one weight map of the fit's loss (eq. 14 plus the alpha term): term name -> weight."""
    return {"l_rgb": config.w_rgb, "l_ssim": config.w_ssim, "l_alpha": config.w_alpha,
            "l_sds": config.lambda_sds * float(guidance_weight)}


# ------------------------------------------------------------------------------------------------- fit
@dataclass
class _Run:
    """Everything the loop reads or updates, built once by :func:`_setup`."""

    config: FitConfig
    data: _TrainData
    params: _Params
    opt: torch.optim.Adam
    xyz_group: dict                 # the optimizer's xyz param group (its lr is scheduled every step)
    plan: BatchPlan                 # on the device
    plan_cpu: BatchPlan             # for the guidance's camera sampling
    weights: Dict[str, float]
    render: Callable
    generator: torch.Generator
    guidance: Optional[object]
    strategy: Optional[DensifyStrategy]
    state: Optional[DensifyState]


def _setup(vm: ViewMatrix, confidence: Optional[Confidence], config: FitConfig, guidance: Optional[object],
           init: Optional[Gaussians4D]) -> _Run:
    from ..render import render  # heavy backends resolve lazily

    dev = vm.images.device
    gen = torch.Generator().manual_seed(int(config.seed))
    g0 = init.to(device=dev, dtype=torch.float32) if init is not None else initial_gaussians(vm, config, gen)
    data = _prepare_data(vm, confidence, config)
    params = _Params(g0)
    opt = _optimizer(params, config, frame_spacing(vm.times), dev)
    plan_cpu = plan_batches(vm.T, data.targets.shape[1], config.iterations, config.times_per_batch,
                            config.views_per_batch, gen)
    strategy = DensifyStrategy.from_config(config) if config.densify else None
    use_guidance = guidance is not None and guidance.weight > 0 and config.lambda_sds > 0
    if guidance is not None:
        guidance.prepare(vm)
    return _Run(config, data, params, opt, next(gr for gr in opt.param_groups if gr["name"] == "xyz"),
                plan_cpu.to(dev), plan_cpu, loss_weights(config, guidance.weight if guidance is not None else 0.0),
                render, gen, guidance if use_guidance else None, strategy,
                strategy.initialize_state() if strategy is not None else None)


def _step_terms(run: _Run, step: int) -> Dict[str, Tensor]:
    """Render the step's (time, view) batch (and the guidance's cameras) and return every loss term by name."""
    c, d = run.config, run.data
    ti, vi = run.plan.time_idx[step], run.plan.view_idx[step]  # [B], [B, C]
    g = run.params.gaussians()
    out = run.render(g, d.times[ti], d.w2c[vi], d.K[vi], d.width, d.height, background=float(c.background),
                     backend=c.backend, packed=c.packed)
    pred = out.rgb.flatten(0, 1).permute(0, 3, 1, 2)  # [B*C, 3, H, W]
    terms = image_terms(c.loss, pred, _gather(d.targets, ti, vi), _gather(d.c_rgb, ti, vi),
                        _gather(d.c_ssim, ti, vi), with_ssim=c.w_ssim > 0)
    if d.alpha is not None:
        terms["l_alpha"] = alpha_loss(out.alpha.flatten(0, 1).permute(0, 3, 1, 2), _gather(d.alpha, ti, vi),
                                      d.alpha_valid[vi].flatten())
    if run.guidance is not None and not guidance_skips(run.guidance, step):
        k = guidance_views_per_time(run.guidance)
        ti_cpu = run.plan_cpu.time_idx[step].repeat_interleave(k)  # k consecutive views per sampled time
        cams = check_guidance_cameras(run.guidance.sample_cameras(ti_cpu, step, c.iterations, run.generator),
                                      len(ti_cpu)).to(g.device)
        b = len(ti)
        gout = run.render(g, d.times[ti], cams.w2c.reshape(b, k, 4, 4), cams.K.reshape(b, k, 3, 3), cams.width,
                          cams.height, background=float(c.background), backend=c.backend, packed=c.packed)
        terms["l_sds"] = check_guidance_loss(run.guidance.loss(gout.rgb.flatten(0, 1).permute(0, 3, 1, 2), ti_cpu,
                                                               step, c.iterations))
    return terms


def _record(run: _Run, step: int, terms: Dict[str, Tensor], lr: float, history: List[Dict[str, float]]) -> dict:
    """The loss terms as floats on logged steps (one host sync), appended to ``history``; {} on other steps."""
    c = run.config
    if (step + 1) % c.log_every and step + 1 != c.iterations:
        return {}
    names = list(terms)
    values = torch.stack([terms[k].detach().float().reshape(()) for k in names]).tolist()  # one sync
    info = dict(zip(names, values))
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"the fit diverged at step {step + 1}: {info}; lower the learning rates "
                         f"(lr_xyz={c.lr_xyz}) or check the input images")
    info.update(lr_xyz=lr, num=run.params.tensors["xyz"].shape[0])
    history.append({"step": step + 1, **info})
    return info


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fit(vm: ViewMatrix, confidence: Optional[Confidence] = None, config: Optional[FitConfig] = None,
        guidance: Optional[object] = None, callback: Optional[ProgressCallback] = None,
        init: Optional[Gaussians4D] = None) -> FitResult:
    """Fit native 4D Gaussians to a view matrix (Efficient4D §4.2, eq. 11-14).

    Args:
        vm: the view matrix (images ``[T, V, H, W, 3]`` on white, cameras, times). Its device is the fit's device.
        confidence: optional per-pixel weights of this view matrix (:class:`~e4d.confidence.Confidence`, maps
            ``[T, V, H, W]``; all ones when ``None``); the input view, when used, always has confidence 1.
        config: :class:`FitConfig` (default: the paper preset).
        guidance: optional object of the :mod:`e4d.fit.guidance_api` protocol adding ``lambda_sds * weight * L``.
        callback: ``callback(step, total, info)`` after every step (``info`` holds the loss terms on logged steps
            only, so the loop does not sync every step); raise from it to cancel.
        init: optional starting Gaussians (e.g. to continue a fit); otherwise the paper's random init.
    Returns:
        :class:`FitResult` with the detached Gaussians, the logged history and the loop's wall time.
    Raises:
        TypeError/ValueError on bad inputs (before any work), ValueError if the loss becomes NaN (seen at a
        logged step).
    """
    config = config if config is not None else FitConfig()
    check_inputs(vm, confidence, config, init)
    if guidance is not None:
        check_guidance(guidance)
    run = _setup(vm, confidence, config, guidance, init)
    history: List[Dict[str, float]] = []
    dev = vm.images.device
    log_backend(config.backend, dev)
    _synchronize(dev)
    start = time.perf_counter()
    for step in range(config.iterations):
        if step == 2 and dev.type != "cuda":  # step 2 is typical (step 1 allocates); CUDA fits are seconds long
            fit_time_estimate(config.backend, dev, (time.perf_counter() - start) / 2, config.iterations - 2)
        run.xyz_group["lr"] = lr = xyz_learning_rate(step, config)
        terms = _step_terms(run, step)
        terms["loss"] = loss = weighted_sum(terms, run.weights)
        loss.backward()
        run.opt.step()
        if run.strategy is not None:  # reads this step's gradients, may resize the parameters and Adam moments
            run.strategy.step_post_backward(run.params.tensors, run.opt, run.state, step + 1)
        run.opt.zero_grad(set_to_none=True)
        report(callback, step + 1, config.iterations, **_record(run, step, terms, lr, history))
    _synchronize(vm.images.device)
    seconds = time.perf_counter() - start
    return FitResult(run.params.gaussians().detach(), history, seconds)


__all__ = ["fit", "FitResult", "check_inputs", "initial_gaussians", "frame_spacing", "xyz_learning_rate",
           "loss_weights"]
