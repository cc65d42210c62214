"""3D Gaussian factorisation shared by the exporters: covariance <-> (scales, rotation quaternion).

The quaternion convention is the 3DGS / INRIA one: (w, x, y, z), ``R = quaternion_to_rotation(q)``, ``cov = R diag(s^2) R^T``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def rotation_to_quaternion(R: Tensor) -> Tensor:
    """Unit quaternions ``[N, 4]`` (w, x, y, z, with w >= 0) of rotation matrices ``R`` ``[N, 3, 3]``
    (the 3DGS convention: ``R = quat_to_rotmat(q)``). Branch-free: the largest of the four diagonal forms wins."""
    m = R
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cands = torch.stack([
        torch.stack([1 + tr, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
        torch.stack([m[:, 2, 1] - m[:, 1, 2], 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2], m[:, 0, 1] + m[:, 1, 0],
                     m[:, 0, 2] + m[:, 2, 0]], -1),
        torch.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0], 1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2],
                     m[:, 1, 2] + m[:, 2, 1]], -1),
        torch.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1],
                     1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1),
    ], 1)  # [N, 4 candidates, 4]; candidate k has component k = 4 q_k^2 (up to scale)
    diag = torch.stack([1 + tr, 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2], 1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2],
                        1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1)
    best = diag.argmax(-1)
    q = cands[torch.arange(len(m)), best]
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return torch.where(q[:, :1] < 0, -q, q)


def quaternion_to_rotation(q: Tensor) -> Tensor:
    """Rotation matrices ``[N, 3, 3]`` of quaternions ``[N, 4]`` (w, x, y, z; normalised here)."""
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def covariance_to_scale_rotation(cov3: Tensor, min_scale: float = 1e-7) -> tuple[Tensor, Tensor]:
    """Factor symmetric covariances ``[N, 3, 3]`` as ``R diag(s^2) R^T``: returns scales ``[N, 3]`` and
    quaternions ``[N, 4]`` (w, x, y, z). Eigenvalues are floored at ``min_scale^2`` (float round-off can make a
    needle-thin conditional covariance slightly indefinite)."""
    if cov3.ndim != 3 or cov3.shape[1:] != (3, 3):
        raise ValueError(f"covariances must be [N, 3, 3], got {tuple(cov3.shape)}")
    sym = 0.5 * (cov3 + cov3.transpose(1, 2))
    # On the CPU: CUDA's batched eigh reserves a solver workspace that grows with the number of matrices (many GB
    # for a fit's ~100k; figures in docs/benchmarks.md), while 3x3 problems are cheap on the CPU.
    evals, evecs = torch.linalg.eigh(sym.detach().double().cpu())
    evals, evecs = evals.to(cov3.device), evecs.to(cov3.device)
    flip = torch.linalg.det(evecs) < 0  # make R a proper rotation: flipping one axis keeps R S^2 R^T
    evecs[flip, :, 2] *= -1
    scales = evals.clamp_min(min_scale ** 2).sqrt()
    return scales.to(cov3.dtype), rotation_to_quaternion(evecs).to(cov3.dtype)


__all__ = ["rotation_to_quaternion", "quaternion_to_rotation", "covariance_to_scale_rotation"]
