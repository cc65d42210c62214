"""Typed configuration of the 4D Gaussian fit (Efficient4D paper §4.2, eq. 11-14) and its named presets.

Units: space is the view matrix's world (the object fits in the sphere of radius 0.5); time is normalized to
[0, 1] inside the model. Two fields are given in *frame units* like the released code (``sigma_t_frames`` and
``lr_t``); the trainer multiplies them by the frame spacing of the view matrix (``1 / T`` for ``T`` evenly spaced
times), so the same config behaves the same for 16 or 61 frames.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from ..limits import check_finite_fields

PRESETS = ("recommended", "paper", "official-release")


@dataclass
class FitConfig:
    """Hyper-parameters of :func:`e4d.fit.fit`. Defaults are the paper's (§4.2) unless a field says otherwise."""

    # -- schedule and model size ---------------------------------------------------------------
    iterations: int = 500
    """Adam steps (paper: 500)."""
    num_points: int = 50_000
    """Number of 4D Gaussians of the random initialisation (paper: 50,000); ignored when ``init`` is given."""
    init_radius: float = 0.5
    """Spatial means start uniformly inside the sphere of this radius (paper: 0.5, SyncDreamer's object sphere)."""
    init_scale: Optional[float] = None
    """Initial spatial standard deviation of every Gaussian (world units); ``None`` = the expected nearest-neighbour
    distance of ``num_points`` uniform points in the init sphere (0.012 for 50k in radius 0.5), see
    :func:`e4d.gaussians4d.mean_neighbour_distance`."""
    init_opacity: float = 0.1
    """Initial opacity (after the sigmoid) of every Gaussian (3DGS / 4DGS default 0.1)."""
    sigma_t_frames: Optional[float] = None
    """Initial temporal standard deviation in frame units; ``None`` = sqrt((K - 1) / 5) for K frames, the released
    4DGS init (``scale_t = sqrt(duration / 5)``)."""
    sh_degree: int = 0
    """Spherical-harmonics degree of the colour (paper: 0, view-independent colour)."""
    time_degree: int = 0
    """Degree of the temporal colour basis (0 = colour constant over each Gaussian's life)."""
    densify: bool = False
    """Clone/split large-gradient Gaussians and prune transparent ones (paper: off; see :mod:`e4d.fit.densify`)."""
    densify_from: int = 100
    """First step of densification (when ``densify``)."""
    densify_until: int = 350
    """Last step of densification (when ``densify``)."""
    densify_every: int = 50
    """Densify/prune period in steps (when ``densify``)."""
    densify_fraction: float = 0.05
    """Fraction of the Gaussians (largest mean xyz-gradient norm) split in two at each densify step."""
    prune_opacity: float = 0.005
    """Gaussians whose opacity falls below this are removed (when ``densify``)."""
    max_points: int = 200_000
    """Upper bound on the number of Gaussians when densifying."""

    # -- sampling ----------------------------------------------------------------------------------
    times_per_batch: int = 4
    """Distinct times rendered per step (one renderer call renders times x views images)."""
    views_per_batch: int = 8
    """Views rendered per sampled time and step (drawn without replacement; the input view counts as one view)."""
    use_input_view: bool = True
    """Also train on the user's input video frames with their camera when the view matrix has them (as the
    released code does: 16 generated views + the input view)."""

    # -- loss (eq. 11-14) --------------------------------------------------------------------------
    loss: str = "l1_ssim"
    """``"l1_ssim"``: paper eq. 14, w_rgb * C_rgb * L1 + w_ssim * C_ssim * (1 - SSIM); ``"mse"``: the released
    code's MSE on colour (+ ``w_alpha`` * MSE on alpha)."""
    w_rgb: float = 8000.0
    """Weight of the confidence-weighted L1 colour term (paper eq. 14: 8000)."""
    w_ssim: float = 2000.0
    """Weight of the confidence-weighted (1 - SSIM) term (paper eq. 14: 2000)."""
    w_alpha: float = 0.0
    """Weight of the alpha (silhouette) term; 0 in the paper, used by the released code's MSE loss. Needs alpha in
    the view matrix (views without alpha are skipped)."""
    lambda_sds: float = 1.0
    """Multiplier of the guidance loss (paper eq. 14's lambda_SDS); used only when a guidance object is passed. The
    effective weight is ``lambda_sds * guidance.weight``."""
    background: float = 1.0
    """Background colour the renders are composited on (white, like the view matrix contract)."""

    # -- optimiser (Adam) --------------------------------------------------------------------------
    lr_xyz: float = 0.01
    """Initial learning rate of the spatial means (world units per step)."""
    lr_xyz_final: float = 0.0002
    """Final learning rate of the spatial means, reached log-linearly after ``lr_xyz_steps`` steps."""
    lr_xyz_steps: int = 300
    """Steps of the log-linear xyz learning-rate decay (constant at ``lr_xyz_final`` afterwards)."""
    lr_t: float = 0.01
    """Learning rate of the temporal means in frame units (scaled by the frame spacing like ``sigma_t_frames``)."""
    lr_color: float = 0.01
    """Learning rate of the DC colour coefficients (higher SH bands and temporal bands use 1/20 of it, as 3DGS)."""
    lr_opacity: float = 0.05
    """Learning rate of the opacity logits."""
    lr_scale: float = 0.005
    """Learning rate of the log-scales (3 spatial + 1 temporal)."""
    lr_rotation: float = 0.005
    """Learning rate of both quaternions (left and right isoclinic) of the 4D rotation."""
    adam_eps: float = 1e-15
    """Adam epsilon (3DGS uses 1e-15 so that tiny gradients of far Gaussians still move them)."""

    # -- runtime -----------------------------------------------------------------------------------
    seed: int = 0
    """Seed of the initialisation and of the (time, view) sampling; the fit is deterministic given it on CPU."""
    backend: str = "auto"
    """Renderer backend: ``"auto"`` (gsplat if its CUDA extension is built, else Triton on a GPU, else the pure-torch
    reference: :mod:`e4d.render.backends`), ``"gsplat"``, ``"triton"``, ``"reference"``."""
    packed: bool = False
    """gsplat's packed (sparse) intermediate layout; unpacked is cheap in memory at 50k Gaussians x ~32 images.
    The renderer honours packed only for one time per call (gsplat 1.5.3 packed + a batch of times renders
    wrong images), so with ``times_per_batch > 1`` this has no effect; the reference renderer ignores it."""
    log_every: int = 50
    """Record the loss in ``history`` every this many steps (each record costs one host-device sync)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field, the rule and the value."""
        check_finite_fields(self)  # NaN passes every range check below
        positive_int = ("iterations", "num_points", "times_per_batch", "views_per_batch", "log_every",
                        "lr_xyz_steps", "densify_every", "max_points")
        for name in positive_int:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"FitConfig.{name} must be an integer >= 1, got {v!r}")
        nonneg = ("w_rgb", "w_ssim", "w_alpha", "lambda_sds", "lr_xyz", "lr_xyz_final", "lr_t", "lr_color",
                  "lr_opacity", "lr_scale", "lr_rotation")
        for name in nonneg:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v != v or v < 0:
                raise ValueError(f"FitConfig.{name} must be a number >= 0, got {v!r}")
        if not 0.0 <= self.densify_fraction <= 1.0:
            raise ValueError(f"FitConfig.densify_fraction must be in [0, 1], got {self.densify_fraction}")
        if self.init_radius <= 0:
            raise ValueError(f"FitConfig.init_radius must be > 0, got {self.init_radius}")
        if not 0.0 < self.init_opacity < 1.0:
            raise ValueError(f"FitConfig.init_opacity must be in (0, 1), got {self.init_opacity}")
        if self.init_scale is not None and self.init_scale <= 0:
            raise ValueError(f"FitConfig.init_scale must be > 0 or None, got {self.init_scale}")
        if self.sigma_t_frames is not None and self.sigma_t_frames <= 0:
            raise ValueError(f"FitConfig.sigma_t_frames must be > 0 or None, got {self.sigma_t_frames}")
        if self.lr_xyz_final > 0 and self.lr_xyz == 0:
            raise ValueError("FitConfig.lr_xyz is 0 but lr_xyz_final is not; set both to 0 to freeze the means")
        for name in ("sh_degree", "time_degree"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 0 <= v <= 3:
                raise ValueError(f"FitConfig.{name} must be an integer in [0, 3], got {v!r}")
        if self.loss not in ("l1_ssim", "mse"):
            raise ValueError(f"FitConfig.loss must be 'l1_ssim' (paper) or 'mse' (released code), got {self.loss!r}")
        if self.backend not in ("auto", "gsplat", "triton", "reference"):
            raise ValueError(f"FitConfig.backend must be 'auto', 'gsplat', 'triton' or 'reference', "
                             f"got {self.backend!r}")
        if not 0.0 <= float(self.background) <= 1.0:
            raise ValueError(f"FitConfig.background must be in [0, 1], got {self.background}")

    def replace(self, **changes) -> "FitConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def preset(name: str = "paper", **overrides) -> FitConfig:
    """A named configuration, optionally with some fields overridden.

    * ``"paper"``: §4.2 of the paper: L1 + SSIM (eq. 11-14, weights 8000 / 2000), 500 steps, 50k Gaussians, no
      densification, batches of 4 times x 8 views. Learning rates are the released code's (below), which move the
      random init far enough in 500 steps.
    * ``"recommended"`` (the node's and CLI's default): the paper's loss plus an alpha (coverage) term
      ``w_alpha = 2000`` where the view matrix has alpha, and gradient-based densification (top 10 % every 50 steps
      between steps 100 and 350, at most 120k Gaussians); higher held-out PSNR than ``"paper"`` on CesiumMan for
      a little more time (figures in docs/benchmarks.md).
    * ``"official-release"``: the released fit (fudan-zvg/4d-gaussian-splatting, branch ``generation``): MSE on rgb
      and alpha, xyz lr 0.01 -> 0.0002 log-linear over 300 steps, t 0.01, colour 0.01, opacity 0.05, scales and both
      rotations 0.005. The released code renders every (time, view) pair each step; we keep the batched sampler.
    """
    if name == "paper":
        cfg = FitConfig()
    elif name == "recommended":
        cfg = FitConfig(w_alpha=2000.0, densify=True, densify_fraction=0.1, max_points=120_000)
    elif name in ("official-release", "official"):
        cfg = FitConfig(loss="mse", w_rgb=1.0, w_ssim=0.0, w_alpha=1.0)
    else:
        raise ValueError(f"unknown fit preset {name!r}; choose one of {PRESETS}")
    return cfg.replace(**overrides) if overrides else cfg


def reduced_for_cpu(config: Optional[FitConfig] = None, **overrides) -> FitConfig:
    """A CPU-sized version of ``config`` (default: the paper preset) for the demo and tests.

    2,000 Gaussians, 200 steps, 2 times x 4 views per step; the learning-rate schedule is compressed to the step
    count. Any field can be overridden.
    """
    cfg = config or FitConfig()
    iters = overrides.get("iterations", 200)
    points = overrides.get("num_points", 2_000)
    base = dict(num_points=points, max_points=2 * points, iterations=iters, times_per_batch=2, views_per_batch=4,
                lr_xyz_steps=max(1, round(cfg.lr_xyz_steps * iters / max(cfg.iterations, 1))),
                log_every=max(1, iters // 10), backend="auto")
    base.update(overrides)
    return cfg.replace(**base)


__all__ = ["FitConfig", "preset", "reduced_for_cpu", "PRESETS"]
