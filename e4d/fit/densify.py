"""Optional densify/prune for the fit (off in the paper, which keeps its 50k random Gaussians fixed).

Every ``densify_every`` steps between ``densify_from`` and ``densify_until``:

* prune Gaussians whose opacity fell below ``prune_opacity``;
* split the ``densify_fraction`` of the remaining Gaussians with the largest mean gradient norm of their 3D
  mean (a screen-space-free proxy of 3DGS's view-space gradient; using a *fraction* instead of an absolute
  threshold keeps it independent of the loss scale): each is replaced by two children drawn from its spatial
  extent with the spatial scales divided by 1.6, as 3DGS splits;
* keep the Adam moments of the surviving Gaussians (children start with zero moments).

The count never exceeds ``max_points``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .config import FitConfig


class Densifier:
    """Gradient statistics and the densify/prune step (run state, separate from the config)."""

    def __init__(self, config: FitConfig) -> None:
        self.config = config
        self.grad_sum: Optional[torch.Tensor] = None
        self.count: Optional[torch.Tensor] = None

    def accumulate(self, params, out) -> None:
        """Add this step's xyz gradient norms (call after backward, before the optimizer step)."""
        grad = params.tensors["xyz"].grad
        if grad is None:
            return
        norm = grad.detach().norm(dim=-1)
        if self.grad_sum is None or self.grad_sum.shape != norm.shape:
            self.grad_sum, self.count = torch.zeros_like(norm), torch.zeros_like(norm)
        self.grad_sum += norm
        self.count += (norm > 0).to(norm.dtype)

    def maybe_step(self, step: int, params, opt: torch.optim.Optimizer, config: FitConfig,
                   dt: float) -> Optional[torch.optim.Optimizer]:
        """Densify/prune at the scheduled steps; returns a new optimizer when the set changed, else None."""
        c = config
        if not (c.densify_from <= step <= c.densify_until and step % c.densify_every == 0) or self.grad_sum is None:
            return None
        p = params.tensors
        n = p["xyz"].shape[0]
        with torch.no_grad():
            keep = torch.sigmoid(p["opacity_logit"]) > c.prune_opacity
            score = torch.where(keep, self.grad_sum / self.count.clamp_min(1.0), torch.full_like(self.grad_sum, -1.0))
            budget = max(0, c.max_points - int(keep.sum()))
            k = min(int(math.ceil(c.densify_fraction * n)), budget, int(keep.sum()))
            split = torch.zeros_like(keep)
            if k > 0:
                split[torch.topk(score, k).indices] = True
            survivors = (keep & ~split).nonzero().squeeze(-1)
            parents = split.nonzero().squeeze(-1)
            gen = torch.Generator(device=p["xyz"].device).manual_seed(int(c.seed) * 7919 + step)
            children = {}
            for name, t in p.items():
                children[name] = t.detach()[parents].repeat(2, *([1] * (t.ndim - 1)))
            sigma = torch.exp(children["log_scales"][:, :3])
            children["xyz"] = children["xyz"] + sigma * torch.randn(children["xyz"].shape, generator=gen,
                                                                    device=sigma.device, dtype=sigma.dtype)
            children["log_scales"][:, :3] -= math.log(1.6)
        self._rebuild(params, opt, survivors, children)
        self.grad_sum = self.count = None
        return self._new_optimizer(params, opt, survivors, len(parents) * 2)

    @staticmethod
    def _rebuild(params, opt, survivors: torch.Tensor, children: dict) -> None:
        for name, t in list(params.tensors.items()):
            new = torch.cat([t.detach()[survivors], children[name]]).requires_grad_(True)
            params.tensors[name] = new

    @staticmethod
    def _new_optimizer(params, opt: torch.optim.Optimizer, survivors: torch.Tensor, added: int) -> torch.optim.Optimizer:
        groups, states = [], []
        for gr in opt.param_groups:
            old = gr["params"][0]
            st = opt.state.get(old, {})
            new = params.tensors[gr["name"]]
            groups.append({**{k: v for k, v in gr.items() if k != "params"}, "params": [new]})
            if st:
                moved = {}
                for key, val in st.items():
                    if torch.is_tensor(val) and val.ndim > 0 and val.shape[0] == old.shape[0]:
                        pad = val.new_zeros(added, *val.shape[1:])
                        moved[key] = torch.cat([val[survivors], pad])
                    else:
                        moved[key] = val
                states.append((new, moved))
        defaults = {k: v for k, v in opt.defaults.items() if k in ("lr", "betas", "eps", "fused")}
        new_opt = type(opt)(groups, **defaults)
        for new, st in states:
            new_opt.state[new] = st
        return new_opt


__all__ = ["Densifier"]
