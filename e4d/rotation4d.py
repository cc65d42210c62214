"""4D rotations and covariances of native 4D Gaussians (Yang et al. 2024, §3.1).

A rotation of R^4 is written as the product of a left- and a right-isoclinic rotation, each given by one unit
quaternion: ``R = M_l(q_l) @ M_r(q_r)``. Coordinates are ordered ``(x, y, z, t)``; quaternions are ``(w, x, y, z)``
and are normalized here, so raw (unnormalized) optimizer parameters can be passed in.

Note: the paper's matrices are used as printed. The released official code stores the transposed ``M_r`` and
flips both axes of ``R``; with identity quaternions (the random init) both conventions give the identity, but
checkpoints of the official code are not interchangeable with ours without a conversion.
"""
from __future__ import annotations

import functools
from typing import Tuple

import torch
from torch import Tensor


def normalize_quaternion(q: Tensor, eps: float = 1e-12) -> Tensor:
    """Unit quaternions ``[..., 4]`` (w, x, y, z); ``eps`` keeps an all-zero quaternion from producing NaN."""
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


# Each isoclinic matrix is linear in its quaternion: entry (i, j) = sign[i][j] * q[index[i][j]]. Building it
# with one gather and one multiply keeps the autograd graph to a few kernels (this runs every fitting step).
_LEFT_INDEX = ((0, 1, 2, 3), (1, 0, 3, 2), (2, 3, 0, 1), (3, 2, 1, 0))
_LEFT_SIGN = ((1, -1, -1, -1), (1, 1, -1, 1), (1, 1, 1, -1), (1, -1, 1, 1))
_RIGHT_INDEX = ((0, 1, 2, 3), (1, 0, 3, 2), (2, 3, 0, 1), (3, 2, 1, 0))
_RIGHT_SIGN = ((1, -1, -1, -1), (1, 1, 1, -1), (1, -1, 1, 1), (1, 1, -1, 1))


@functools.lru_cache(maxsize=32)
def _tables(index, sign, device: torch.device, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    # cached per device: building them each call would copy host->device (and sync) every fitting step. Built
    # outside inference mode (ComfyUI runs nodes under it) so a later fit can save them for backward.
    with torch.inference_mode(False):
        return (torch.tensor(index, device=device).reshape(-1),
                torch.tensor(sign, device=device, dtype=dtype).reshape(4, 4))


def _signed_gather(q: Tensor, index, sign) -> Tensor:
    idx, sgn = _tables(index, sign, q.device, q.dtype)
    return q[..., idx].reshape(*q.shape[:-1], 4, 4) * sgn


def left_isoclinic(q_l: Tensor) -> Tensor:
    """Left-isoclinic rotation ``M_l(q_l)`` ``[..., 4, 4]`` from quaternions ``[..., 4]`` (normalized here).

    With ``q_l = (a, b, c, d)`` this is the matrix of left quaternion multiplication ``v -> q_l * v``::

        M_l = [[a, -b, -c, -d],
               [b,  a, -d,  c],
               [c,  d,  a, -b],
               [d, -c,  b,  a]]
    """
    return _signed_gather(normalize_quaternion(q_l), _LEFT_INDEX, _LEFT_SIGN)


def right_isoclinic(q_r: Tensor) -> Tensor:
    """Right-isoclinic rotation ``M_r(q_r)`` ``[..., 4, 4]`` from quaternions ``[..., 4]`` (normalized here).

    With ``q_r = (p, q, r, s)`` this is the matrix of right quaternion multiplication ``v -> v * q_r``::

        M_r = [[p, -q, -r, -s],
               [q,  p,  s, -r],
               [r, -s,  p,  q],
               [s,  r, -q,  p]]
    """
    return _signed_gather(normalize_quaternion(q_r), _RIGHT_INDEX, _RIGHT_SIGN)


def rotation_4d(q_l: Tensor, q_r: Tensor) -> Tensor:
    """4D rotation ``R = M_l(q_l) @ M_r(q_r)``, ``[..., 4, 4]``; orthonormal with det 1 for any nonzero inputs."""
    if q_l.shape != q_r.shape or q_l.shape[-1] != 4:
        raise ValueError(f"rotation_4d needs two [..., 4] quaternion tensors of one shape, got "
                         f"{tuple(q_l.shape)} and {tuple(q_r.shape)}")
    return left_isoclinic(q_l) @ right_isoclinic(q_r)


def covariance_4d(log_scales: Tensor, q_l: Tensor, q_r: Tensor) -> Tensor:
    """4D covariance ``Sigma = R S S^T R^T`` ``[N, 4, 4]`` with ``S = diag(exp(log_scales))``.

    Args:
        log_scales: ``[N, 4]`` log standard deviations along the Gaussian's own axes (x, y, z, t).
        q_l, q_r: ``[N, 4]`` left/right quaternions (w, x, y, z), normalized here.
    """
    if log_scales.shape[-1] != 4 or log_scales.shape[:-1] != q_l.shape[:-1]:
        raise ValueError(f"covariance_4d: log_scales must be [N, 4] matching the quaternions {tuple(q_l.shape)}, "
                         f"got {tuple(log_scales.shape)}")
    # R @ S scales the columns of R; Sigma = (R S)(R S)^T avoids building S explicitly.
    L = rotation_4d(q_l, q_r) * torch.exp(log_scales)[..., None, :]
    return L @ L.transpose(-1, -2)
