"""Optional densify/prune strategy of the fit (off in the paper, which keeps its 50k random Gaussians fixed).

Modelled on gsplat's ``strategy/``: a config (:class:`DensifyStrategy`), an explicit run state
(:class:`DensifyState`) and :meth:`DensifyStrategy.step_post_backward`, which edits the parameter dict and the
optimizer's parameters and Adam moments in place (the optimizer object, its groups and learning rates stay).

Every ``every`` steps between ``start`` and ``stop``:

* prune Gaussians whose opacity fell below ``prune_opacity``;
* split the ``fraction`` of the remaining Gaussians with the largest mean gradient norm of their 3D mean (a
  screen-space-free proxy of 3DGS's view-space gradient; using a *fraction* instead of an absolute threshold
  keeps it independent of the loss scale): each is replaced by two children drawn from its spatial extent with
  the spatial scales divided by 1.6, as 3DGS splits;
* keep the Adam moments of the surviving Gaussians (children start with zero moments).

The count never exceeds ``max_points``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import Tensor

from .config import FitConfig

SPLIT_SCALE = 1.6
"""Children's spatial scales are the parent's divided by this (3DGS's split factor)."""


@dataclass
class DensifyState:
    """Run state of the strategy: per-Gaussian xyz-gradient statistics since the last densify step."""

    grad_sum: Optional[Tensor] = None
    """``[N]`` sum of the xyz gradient norms (allocated on the parameters' device at the first step)."""
    count: Optional[Tensor] = None
    """``[N]`` number of steps in which the Gaussian got a non-zero gradient."""


@dataclass
class DensifyStrategy:
    """When and how much to densify and prune. Build it with :meth:`from_config` (the defaults live in
    :class:`~e4d.fit.config.FitConfig`: ``densify_from``, ``densify_until``, ``densify_every``,
    ``densify_fraction``, ``prune_opacity``, ``max_points``, ``seed``)."""

    start: int
    """First step (1-based) at which densification may run."""
    stop: int
    """Last step at which densification may run."""
    every: int
    """Period in steps."""
    fraction: float
    """Fraction of the Gaussians split at each densify step (largest mean xyz-gradient norm first)."""
    prune_opacity: float
    """Gaussians whose opacity is at or below this are removed."""
    max_points: int
    """Upper bound on the number of Gaussians."""
    seed: int
    """Seed of the children's positions (mixed with the step, so every densify step draws anew)."""

    @classmethod
    def from_config(cls, config: FitConfig) -> "DensifyStrategy":
        return cls(config.densify_from, config.densify_until, config.densify_every, config.densify_fraction,
                   config.prune_opacity, config.max_points, config.seed)

    def initialize_state(self) -> DensifyState:
        return DensifyState()

    def step_post_backward(self, params: Dict[str, Tensor], optimizer: torch.optim.Optimizer, state: DensifyState,
                           step: int) -> None:
        """Accumulate this step's xyz gradients and, at the scheduled steps, densify/prune in place.

        Call after ``optimizer.step()`` and before ``zero_grad`` (the gradients are read, not changed).

        Args:
            params: name -> leaf tensor ``[N, ...]`` (must hold ``xyz [N, 3]``, ``log_scales [N, 4]``,
                ``opacity_logit [N]``); replaced entries are new leaves of the new size.
            optimizer: the Adam whose groups hold exactly these tensors (one tensor per group); its groups and
                state are updated to the new tensors.
            state: from :meth:`initialize_state`.
            step: 1-based number of the step just taken.
        """
        grad = params["xyz"].grad
        if grad is not None:
            norm = grad.detach().norm(dim=-1)
            if state.grad_sum is None or state.grad_sum.shape != norm.shape:
                state.grad_sum, state.count = torch.zeros_like(norm), torch.zeros_like(norm)
            state.grad_sum += norm
            state.count += (norm > 0).to(norm.dtype)
        if not (self.start <= step <= self.stop and step % self.every == 0) or state.grad_sum is None:
            return
        survivors, children = self._select(params, state, step)
        _replace_rows(params, optimizer, survivors, children)
        state.grad_sum = state.count = None

    def _select(self, params: Dict[str, Tensor], state: DensifyState, step: int) -> tuple[Tensor, Dict[str, Tensor]]:
        """Indices ``[S]`` of the Gaussians kept as they are and the new rows of every parameter."""
        n = params["xyz"].shape[0]
        with torch.no_grad():
            keep = torch.sigmoid(params["opacity_logit"]) > self.prune_opacity
            score = torch.where(keep, state.grad_sum / state.count.clamp_min(1.0),
                                torch.full_like(state.grad_sum, -1.0))
            budget = max(0, self.max_points - int(keep.sum()))
            k = min(int(math.ceil(self.fraction * n)), budget, int(keep.sum()))
            split = torch.zeros_like(keep)
            if k > 0:
                split[torch.topk(score, k).indices] = True
            survivors = (keep & ~split).nonzero().squeeze(-1)
            parents = split.nonzero().squeeze(-1)
            dev = params["xyz"].device
            gen = torch.Generator(device=dev).manual_seed(int(self.seed) * 7919 + step)
            children = {name: t.detach()[parents].repeat(2, *([1] * (t.ndim - 1))) for name, t in params.items()}
            sigma = torch.exp(children["log_scales"][:, :3])
            children["xyz"] = children["xyz"] + sigma * torch.randn(children["xyz"].shape, generator=gen,
                                                                    device=dev, dtype=sigma.dtype)
            children["log_scales"][:, :3] -= math.log(SPLIT_SCALE)
        return survivors, children


def _replace_rows(params: Dict[str, Tensor], optimizer: torch.optim.Optimizer, survivors: Tensor,
                  children: Dict[str, Tensor]) -> None:
    """Every parameter becomes ``cat(old[survivors], children)``; its Adam moments follow (zeros for children)."""
    group_of = {id(gr["params"][0]): gr for gr in optimizer.param_groups}
    for name, old in list(params.items()):
        new = torch.cat([old.detach()[survivors], children[name]]).requires_grad_(True)
        added = new.shape[0] - survivors.shape[0]
        st = optimizer.state.pop(old, {})
        for key, val in st.items():
            if torch.is_tensor(val) and val.ndim > 0 and val.shape[0] == old.shape[0]:
                st[key] = torch.cat([val[survivors], val.new_zeros(added, *val.shape[1:])])
        group_of[id(old)]["params"] = [new]
        if st:
            optimizer.state[new] = st
        params[name] = new


__all__ = ["DensifyStrategy", "DensifyState", "SPLIT_SCALE"]
