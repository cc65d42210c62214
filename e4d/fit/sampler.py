"""(time, view) batch sampling for the fit, planned up front so the training loop never waits on the host.

Every step renders ``B`` times x ``C`` views in one renderer call. The whole plan is drawn on the CPU from the
fit's seeded ``torch.Generator`` (identical on every device) and moved to the device once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class BatchPlan:
    """Indices of every step's batch.

    Attributes:
        time_idx: ``[S, B]`` long, indices into the view matrix times.
        view_idx: ``[S, B, C]`` long, indices into the training views (distinct within each row).
    """

    time_idx: Tensor
    view_idx: Tensor

    def to(self, device) -> "BatchPlan":
        return BatchPlan(self.time_idx.to(device), self.view_idx.to(device))

    @property
    def steps(self) -> int:
        return int(self.time_idx.shape[0])


def _epoch_cycle(n: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` indices in ``[0, n)`` as concatenated random permutations, so every index is used equally often."""
    reps = -(-count // n)
    return torch.cat([torch.randperm(n, generator=generator) for _ in range(reps)])[:count]


def plan_batches(num_times: int, num_views: int, steps: int, times_per_batch: int, views_per_batch: int,
                 generator: torch.Generator) -> BatchPlan:
    """Draw the batches of ``steps`` steps.

    Times cycle through shuffled epochs of all ``num_times`` (so each time is visited equally often); for each
    sampled time, ``views_per_batch`` distinct views are drawn uniformly. Batch sizes larger than the data are
    clamped to it (a 1-time matrix renders 1 time per step).
    """
    if num_times < 1 or num_views < 1 or steps < 1:
        raise ValueError(f"plan_batches needs >= 1 time, view and step, got T={num_times}, V={num_views}, steps={steps}")
    B = min(times_per_batch, num_times)
    C = min(views_per_batch, num_views)
    # Draw time epochs in blocks of B so no time repeats inside a step (B <= T and each block is from one
    # permutation when T is a multiple of B; otherwise a rare repeat at an epoch boundary is harmless).
    time_idx = _epoch_cycle(num_times, steps * B, generator).view(steps, B)
    view_idx = torch.rand(steps, B, num_views, generator=generator).argsort(dim=-1)[..., :C]
    return BatchPlan(time_idx, view_idx.contiguous())


__all__ = ["BatchPlan", "plan_batches"]
