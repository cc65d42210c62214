"""Held-out evaluation of fitted 4D Gaussians: render every (time, view) of a view matrix and score it on white."""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import Tensor

from ..gaussians4d import Gaussians4D
from ..metrics import psnr, ssim
from ..viewmatrix import ViewMatrix


@torch.no_grad()
def render_view_matrix(g: Gaussians4D, vm: ViewMatrix, background: float = 1.0, backend: str = "auto",
                       times_per_call: int = 8, input_view: bool = False) -> Tensor:
    """Renders ``[T, V, H, W, 3]`` of every (time, camera) of ``vm`` (or ``[T, 1, H, W, 3]`` of its input view)."""
    from ..render import render

    cams = vm.input_camera if input_view else vm.cameras
    if cams is None:
        raise ValueError("the view matrix has no input camera; evaluate its views instead (input_view=False)")
    g = g.to(device=vm.images.device)
    cams = cams.to(vm.images.device)
    out = []
    for s in range(0, vm.T, times_per_call):
        times = vm.times[s:s + times_per_call].to(vm.images.device).float()
        b = len(times)
        w2c = cams.w2c[None].expand(b, -1, -1, -1)
        K = cams.K[None].expand(b, -1, -1, -1)
        out.append(render(g, times, w2c, K, cams.width, cams.height, background=background, backend=backend).rgb)
    return torch.cat(out).clamp(0, 1)


def _scores(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image PSNR and SSIM ``[T, V]`` of ``[T, V, H, W, 3]`` tensors."""
    T, V = pred.shape[:2]
    p = pred.reshape(T * V, *pred.shape[2:]).permute(0, 3, 1, 2).float()
    t = gt.reshape(T * V, *gt.shape[2:]).permute(0, 3, 1, 2).float().to(p.device)
    return psnr(p, t).view(T, V), ssim(p, t).view(T, V)


def evaluate(g: Gaussians4D, vm: ViewMatrix, background: float = 1.0, backend: str = "auto",
             view_ids: Optional[List[int]] = None, include_input: bool = False) -> Dict[str, object]:
    """PSNR / SSIM of ``g`` against every image of ``vm`` (composited on white).

    PSNR is the mean of per-image PSNRs (each image's MSE over all pixels and channels), the convention of the
    3DGS/4DGS evaluation scripts. Returns ``{"psnr", "ssim", "per_view": [{"view", "psnr", "ssim"}], and when
    ``include_input`` and the matrix has an input view, "input_psnr", "input_ssim"}``; ``view_ids`` labels the
    views (default 0..V-1).
    """
    if not isinstance(g, Gaussians4D) or not isinstance(vm, ViewMatrix):
        raise TypeError(f"evaluate(g: Gaussians4D, vm: ViewMatrix), got {type(g).__name__}, {type(vm).__name__}")
    ids = list(range(vm.V)) if view_ids is None else list(view_ids)
    if len(ids) != vm.V:
        raise ValueError(f"view_ids has {len(ids)} labels for {vm.V} views")
    p, s = _scores(render_view_matrix(g, vm, background, backend), vm.images)
    res: Dict[str, object] = {
        "psnr": float(p.mean()), "ssim": float(s.mean()),
        "per_view": [{"view": v, "psnr": float(p[:, i].mean()), "ssim": float(s[:, i].mean())}
                     for i, v in enumerate(ids)],
    }
    if include_input and vm.has_input:
        pi, si = _scores(render_view_matrix(g, vm, background, backend, input_view=True), vm.input_images[:, None])
        res["input_psnr"], res["input_ssim"] = float(pi.mean()), float(si.mean())
    return res


__all__ = ["evaluate", "render_view_matrix"]
