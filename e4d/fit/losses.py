"""Reconstruction losses of the fit (Efficient4D paper §4.2, eq. 11-14) and the released code's MSE variant.

Image tensors are ``[B, 3, H, W]`` in [0, 1]; confidence maps ``[B, 1, H, W]`` (or ``None`` = all ones).

Normalisation (stated because the paper's sums leave it open): every term is a **per-pixel mean** over batch,
channels and pixels, dividing by the pixel count rather than by the confidence mass. So a zero-confidence pixel
contributes neither a value nor a gradient, and halving all confidences halves the term. With Adam the global
scale of the loss barely matters; the 8000 : 2000 ratio of eq. 14 is what sets the balance.
"""
from __future__ import annotations

from typing import Dict, Optional

from torch import Tensor

from ..metrics import ssim_map


def _check(pred: Tensor, target: Tensor, conf: Optional[Tensor], name: str) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"{name}: pred and target must be one [B, C, H, W] shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    if conf is not None and (conf.ndim != 4 or conf.shape[0] != pred.shape[0] or conf.shape[2:] != pred.shape[2:]
                             or conf.shape[1] not in (1, pred.shape[1])):
        raise ValueError(f"{name}: confidence must be [B, 1, H, W] (or [B, C, H, W]) matching {tuple(pred.shape)}, "
                         f"got {tuple(conf.shape)}")


def confidence_l1(pred: Tensor, target: Tensor, c_rgb: Optional[Tensor] = None) -> Tensor:
    """Confidence-weighted L1 colour loss, paper eq. 11-12: ``mean(C_rgb * |I - I_hat|)``.

    Args:
        pred: ``[B, 3, H, W]`` rendered images.
        target: ``[B, 3, H, W]`` view-matrix images.
        c_rgb: ``[B, 1, H, W]`` per-pixel confidence in [0, 1] (paper eq. 17), or ``None`` for ones.
    Returns: a scalar (per-pixel mean, see the module docstring).
    """
    _check(pred, target, c_rgb, "confidence_l1")
    err = (pred - target).abs()
    if c_rgb is not None:
        err = err * c_rgb
    return err.mean()


def confidence_dssim(pred: Tensor, target: Tensor, c_ssim: Optional[Tensor] = None) -> Tensor:
    """Confidence-weighted structural loss, paper eq. 13: ``mean(C_ssim * (1 - SSIM(I, I_hat)))``.

    The SSIM map is :func:`e4d.metrics.ssim_map` (Gaussian window 11 / sigma 1.5, per pixel and channel), so the
    confidence can weight it pixel by pixel.

    Args: as :func:`confidence_l1`, with ``c_ssim`` the structural confidence (paper eq. 13's C_ssim).
    Returns: a scalar.
    """
    _check(pred, target, c_ssim, "confidence_dssim")
    d = 1.0 - ssim_map(pred, target)
    if c_ssim is not None:
        d = d * c_ssim
    return d.mean()


def mse_loss(pred: Tensor, target: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """Mean squared error (the released code's colour loss), optionally per-pixel weighted; scalar."""
    _check(pred, target, weight, "mse_loss")
    err = (pred - target).square()
    if weight is not None:
        err = err * weight
    return err.mean()


def alpha_loss(pred_alpha: Tensor, target_alpha: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """MSE between rendered and target alpha ``[B, 1, H, W]``; ``valid`` ``[B]`` (0/1) masks images without alpha.

    The mean is taken over the valid images only, so a batch mixing images with and without alpha is not
    down-weighted; an all-invalid batch gives 0 (with a graph, so backward still works).
    """
    _check(pred_alpha, target_alpha, None, "alpha_loss")
    err = (pred_alpha - target_alpha).square().mean(dim=(1, 2, 3))  # [B]
    if valid is None:
        return err.mean()
    valid = valid.to(err.dtype)
    return (err * valid).sum() / valid.sum().clamp_min(1.0)


def total_loss(l_rgb: Tensor, l_ssim: Tensor, l_sds: Optional[Tensor] = None, w_rgb: float = 8000.0,
               w_ssim: float = 2000.0, lambda_sds: float = 1.0) -> Tensor:
    """Paper eq. 14: ``L = w_rgb * L_rgb + w_ssim * L_ssim (+ lambda_SDS * L_SDS)`` with w_rgb 8000, w_ssim 2000."""
    loss = w_rgb * l_rgb + w_ssim * l_ssim
    if l_sds is not None:
        loss = loss + lambda_sds * l_sds
    return loss


def image_terms(kind: str, pred: Tensor, target: Tensor, c_rgb: Optional[Tensor], c_ssim: Optional[Tensor],
                with_ssim: bool) -> Dict[str, Tensor]:
    """The image terms by name: ``l_rgb`` (confidence L1 for ``kind="l1_ssim"``, weighted MSE for ``"mse"``) and,
    when ``with_ssim``, ``l_ssim`` (confidence DSSIM). Shapes as :func:`confidence_l1`."""
    terms = {"l_rgb": mse_loss(pred, target, c_rgb) if kind == "mse" else confidence_l1(pred, target, c_rgb)}
    if with_ssim:
        terms["l_ssim"] = confidence_dssim(pred, target, c_ssim)
    return terms


def weighted_sum(terms: Dict[str, Tensor], weights: Dict[str, float]) -> Tensor:
    """``sum_k weights[k] * terms[k]`` in the order of ``terms`` (eq. 14 when the terms are rgb, ssim, sds)."""
    missing = [k for k in terms if k not in weights]
    if missing:
        raise ValueError(f"loss terms {missing} have no weight; known weights: {sorted(weights)}")
    loss: Optional[Tensor] = None
    for name, value in terms.items():
        part = weights[name] * value
        loss = part if loss is None else loss + part
    if loss is None:
        raise ValueError("weighted_sum needs at least one loss term")
    return loss


__all__ = ["confidence_l1", "confidence_dssim", "mse_loss", "alpha_loss", "total_loss", "image_terms",
           "weighted_sum"]
