"""Time interpolation of frame batches and view matrices (paper §4.1, M = 4K - 3)."""
from __future__ import annotations

import pytest
import torch

from e4d.cameras import input_view, syncdreamer16
from e4d.interp.sequences import (count_batches, interpolate_frames, interpolate_sequences, interpolate_times,
                             interpolate_view_matrix, resolve_method)
from e4d.progress import Cancelled
from e4d.interp import Interpolator, RifeInterpolator
from e4d.rife.loader import build_model
from e4d.viewmatrix import ViewMatrix
from tiny_rife import tiny_rife_state_dict


class Lerp(Interpolator):
    """Exact reference interpolator: (1 - t) a + t b, extras likewise; counts calls and batch sizes."""

    name = "lerp"

    def __init__(self, midpoint_only: bool = False):
        self.midpoint_only = midpoint_only
        self.calls: list[int] = []

    def interpolate_with_extra(self, img0, img1, t=0.5, extra0=None, extra1=None):
        tt = torch.as_tensor(t, dtype=img0.dtype).flatten().expand(img0.shape[0]).view(-1, 1, 1, 1)
        if self.midpoint_only:
            assert torch.all(tt == 0.5)
        self.calls.append(img0.shape[0])
        ex = None if extra0 is None else (1 - tt) * extra0 + tt * extra1
        return (1 - tt) * img0 + tt * img1, ex


def _vm(T=3, V=2, S=32, with_input=True, alpha=True) -> ViewMatrix:
    g = torch.Generator().manual_seed(0)
    cams = syncdreamer16(S)[list(range(V))]
    kw = {}
    if with_input:
        kw = dict(input_images=torch.rand(T, S, S, 3, generator=g), input_alpha=torch.rand(T, S, S, generator=g),
                  input_camera=input_view(0.0, S))
    return ViewMatrix(torch.rand(T, V, S, S, 3, generator=g), cams, torch.linspace(0, 1, T),
                      torch.rand(T, V, S, S, generator=g) if alpha else None, **kw)


def test_times():
    torch.testing.assert_close(interpolate_times(torch.tensor([0.0, 0.5, 1.0]), 4), torch.linspace(0, 1, 9))
    torch.testing.assert_close(interpolate_times(torch.tensor([0.0, 0.3]), 3), torch.tensor([0.0, 0.1, 0.2, 0.3]))


@pytest.mark.parametrize("method,midpoint_only", [("direct", False), ("recursive", False), ("auto", True)])
def test_sequences_are_exact_with_lerp(method, midpoint_only):
    seq = torch.rand(4, 3, 3, 8, 8)
    interp = Lerp(midpoint_only)
    out, _ = interpolate_sequences(seq, interp, 4, method, batch=7)
    assert out.shape == (13, 3, 3, 8, 8)
    assert torch.equal(out[::4], seq)
    w = torch.arange(4) / 4
    for i in range(3):
        exp = seq[i][None] * (1 - w).view(4, 1, 1, 1, 1) + seq[i + 1][None] * w.view(4, 1, 1, 1, 1)
        torch.testing.assert_close(out[4 * i:4 * i + 4], exp)
    assert sum(interp.calls) == 3 * 3 * 3 and max(interp.calls) <= 7
    used = resolve_method(interp, 4, method)
    assert len(interp.calls) == count_batches(4, 3, 4, used, 7)


def test_method_rules():
    with pytest.raises(ValueError, match="method='direct'"):
        resolve_method(Lerp(), 3, "recursive")
    assert resolve_method(Lerp(midpoint_only=True), 3, "auto") == "direct"  # bisection inside the interpolator
    assert resolve_method(Lerp(midpoint_only=True), 8, "auto") == "recursive"
    with pytest.raises(ValueError, match="multiplier"):
        resolve_method(Lerp(), 0)


def test_view_matrix_counts_times_alpha_input():
    vm = _vm(T=3, V=2)
    interp = Lerp()
    out = interpolate_view_matrix(vm, interp, levels=2, batch=4)
    assert out.T == 4 * 3 - 3 and out.V == 2 and out.images.shape == (9, 2, 32, 32, 3)
    torch.testing.assert_close(out.times, torch.linspace(0, 1, 9))
    assert torch.equal(out.images[::4], vm.images) and torch.equal(out.alpha[::4], vm.alpha)
    torch.testing.assert_close(out.alpha[2], (vm.alpha[0] + vm.alpha[1]) / 2)
    torch.testing.assert_close(out.input_images[1], 0.75 * vm.input_images[0] + 0.25 * vm.input_images[1])
    torch.testing.assert_close(out.input_alpha[6], (vm.input_alpha[1] + vm.input_alpha[2]) / 2)
    assert out.cameras is vm.cameras
    same = interpolate_view_matrix(vm, Lerp(), multiplier=4, method="recursive", batch=4)
    torch.testing.assert_close(same.images, out.images)
    plain = interpolate_view_matrix(_vm(T=2, V=1, with_input=False, alpha=False), Lerp(), multiplier=3)
    assert plain.T == 4 and plain.alpha is None and plain.input_images is None
    with pytest.raises(ValueError, match="not both"):
        interpolate_view_matrix(vm, interp, multiplier=3, levels=2)


def test_views_are_interpolated_independently():
    """Flow never crosses view borders: changing view 1 leaves view 0's in-betweens unchanged (real RIFE)."""
    it = RifeInterpolator(build_model(tiny_rife_state_dict("4.7")))
    vm = _vm(T=2, V=2, with_input=False)
    a = interpolate_view_matrix(vm, it, multiplier=2)
    imgs = vm.images.clone()
    imgs[:, 1] = 1 - imgs[:, 1]
    b = interpolate_view_matrix(ViewMatrix(imgs, vm.cameras, vm.times, vm.alpha), it, multiplier=2)
    torch.testing.assert_close(a.images[:, 0], b.images[:, 0], atol=1e-5, rtol=0)
    assert (a.images[1, 1] - b.images[1, 1]).abs().max() > 1e-2


def test_frames_rgba_and_progress_cancel():
    frames = torch.rand(3, 16, 16, 4)
    steps = []
    out = interpolate_frames(frames, Lerp(), multiplier=2, batch=1, callback=lambda s, n, i: steps.append((s, n)))
    assert out.shape == (5, 16, 16, 4)
    torch.testing.assert_close(out[1], (frames[0] + frames[1]) / 2)
    assert steps == [(1, 2), (2, 2)]

    def cancel(step, total, info):
        raise Cancelled("user pressed cancel")

    with pytest.raises(Cancelled):
        interpolate_frames(frames, Lerp(), multiplier=2, batch=1, callback=cancel)
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\|4\]"):
        interpolate_frames(torch.rand(3, 16, 16), Lerp())
    assert torch.equal(interpolate_frames(frames[:1], Lerp(), 4), frames[:1])


def test_midpoint_only_rife_multiplier3_and_4():
    it = RifeInterpolator(build_model(tiny_rife_state_dict("3.6")))
    frames = torch.rand(2, 32, 32, 3)
    out4 = interpolate_frames(frames, it, multiplier=4)  # auto -> recursive midpoints
    x0, x1 = frames[:1].permute(0, 3, 1, 2), frames[1:].permute(0, 3, 1, 2)
    mid = it.interpolate(x0, x1)
    torch.testing.assert_close(out4[2:3].permute(0, 3, 1, 2), mid, atol=1e-5, rtol=0)
    torch.testing.assert_close(out4[1:2].permute(0, 3, 1, 2), it.interpolate(x0, mid), atol=1e-5, rtol=0)
    assert interpolate_frames(frames, it, multiplier=3).shape == (4, 32, 32, 3)  # direct via bisection


@pytest.mark.gpu
def test_view_matrix_on_cuda_fp16_rife():
    it = RifeInterpolator(build_model(tiny_rife_state_dict("4.7"))).to("cuda", torch.float16)
    vm = _vm(T=3, V=4, S=64).to("cuda")
    out = interpolate_view_matrix(vm, it, multiplier=4, batch=16)
    assert out.images.device.type == "cuda" and out.images.dtype == torch.float32 and out.T == 9
    assert torch.isfinite(out.images).all() and torch.equal(out.images[::4], vm.images)
