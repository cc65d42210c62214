"""Confidence maps (paper eq. 13, 16, 17, and the released code's normalised variant)."""
from __future__ import annotations

import pytest
import torch

from e4d.confidence import Confidence
from e4d.confidence_maps import (ConfidenceConfig, compute_confidence, confidence_preview, interpolation_error,
                                 ssim_error)
from e4d.metrics import ssim_map
from e4d.progress import Cancelled
from test_interpolate import Lerp


def _const_seq(values, V=1, S=16):
    v = torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1, 1)
    return v.expand(len(values), V, S, S, 3).clone()


def test_paper_rgb_hand_computed():
    imgs = _const_seq([0.0, 0.0, 0.6, 0.0, 0.0])
    conf = compute_confidence(imgs, Lerp(), ConfidenceConfig(mode="paper", batch=3))
    assert isinstance(conf, Confidence) and conf.shape == (5, 1, 16, 16)
    got = conf.c_rgb[:, 0, 8, 8]
    # t=2: both pairs predict 0 -> error 0.6 -> 0.4; t=1,3: only the +-1 pair, (0 + 0.6)/2 = 0.3 -> 0.7; ends: 1
    torch.testing.assert_close(got, torch.tensor([1.0, 0.7, 0.4, 0.7, 1.0]))
    assert torch.all(conf.c_ssim[0] == 1) and torch.all(conf.c_ssim[-1] == 1)


def test_consistent_sequence_is_fully_confident():
    imgs = _const_seq([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    conf = compute_confidence(imgs, Lerp())
    torch.testing.assert_close(conf.c_rgb, torch.ones_like(conf.c_rgb))
    torch.testing.assert_close(conf.c_ssim, torch.ones_like(conf.c_ssim), atol=1e-5, rtol=0)


def test_paper_ssim_equals_formula():
    g = torch.Generator().manual_seed(1)
    imgs = torch.rand(5, 2, 16, 16, 3, generator=g)
    conf = compute_confidence(imgs, Lerp(), ConfidenceConfig(batch=4))
    x = imgs.permute(0, 1, 4, 2, 3)
    t, v = 2, 1
    p1, p2 = (x[t - 1, v] + x[t + 1, v]) / 2, (x[t - 2, v] + x[t + 2, v]) / 2
    s1, s2 = ssim_map(x[t, v][None], p1[None]).mean(1)[0], ssim_map(x[t, v][None], p2[None]).mean(1)[0]
    torch.testing.assert_close(conf.c_ssim[t, v], (1 - 0.5 * ((1 - s1) + (1 - s2))).clamp(0, 1), atol=1e-5, rtol=0)
    e1 = (x[t, v] - p1).abs().mean(0)
    e2 = (x[t, v] - p2).abs().mean(0)
    torch.testing.assert_close(conf.c_rgb[t, v], 1 - 0.5 * (e1 + e2), atol=1e-6, rtol=0)


def test_official_normalisation():
    g = torch.Generator().manual_seed(2)
    imgs = torch.rand(6, 1, 16, 16, 3, generator=g)
    conf = compute_confidence(imgs, Lerp(), ConfidenceConfig(mode="official"))
    x = imgs.permute(0, 1, 4, 2, 3)[:, 0]
    t = 2
    p1, p2 = (x[t - 1] + x[t + 1]) / 2, (x[t - 2] + x[t + 2]) / 2
    err = 0.5 * (interpolation_error(x[t][None], p1[None], "sum") + interpolation_error(x[t][None], p2[None], "sum"))[0]
    gap = err.max() - err
    torch.testing.assert_close(conf.c_rgb[t, 0], gap / gap.max(), atol=1e-6, rtol=0)
    serr = 0.5 * (ssim_error(x[t][None], p1[None]) + ssim_error(x[t][None], p2[None]))[0]
    torch.testing.assert_close(conf.c_ssim[t, 0], (serr.max() - serr) / (serr.max() - serr).max(), atol=1e-5, rtol=0)
    # second frame uses only the +-1 pair; first/last all ones; every map spans [0, 1]
    e = interpolation_error(x[1][None], ((x[0] + x[2]) / 2)[None], "sum")[0]
    torch.testing.assert_close(conf.c_rgb[1, 0], (e.max() - e) / (e.max() - e).max(), atol=1e-6, rtol=0)
    assert torch.all(conf.c_rgb[0] == 1) and torch.all(conf.c_rgb[-1] == 1)
    assert conf.c_rgb[1:-1].amin((1, 2, 3)).max() < 1e-6


def test_preview_errors_and_cancel():
    conf = Confidence.ones(3, 2, 8, 8)
    conf.c_ssim[1, 1] = 0.25
    prev = confidence_preview(conf)
    assert prev.shape == (3, 16, 16, 3)
    assert torch.all(prev[1, 8:, 8:] == 0.25) and torch.all(prev[1, :8] == 1)
    imgs = torch.rand(4, 1, 8, 8, 3)
    with pytest.raises(ValueError, match="mode"):
        compute_confidence(imgs, Lerp(), ConfidenceConfig(mode="nope"))
    with pytest.raises(ValueError, match=r"\[T, V, H, W, 3\]"):
        compute_confidence(imgs[0], Lerp())

    def cancel(step, total, info):
        raise Cancelled()

    with pytest.raises(Cancelled):
        compute_confidence(imgs, Lerp(), callback=cancel)


def test_with_fallback_interpolator_on_real_motion():
    from e4d.interp.flow import FlowInterpolator
    from test_rife_fallback import pattern

    frames = torch.cat([pattern(32, 32, 1.5 * k, k) for k in range(5)])  # smooth motion: high confidence
    imgs = frames.permute(0, 2, 3, 1)[:, None]
    bad = imgs.clone()
    bad[2, 0, 8:24, 8:24] = 1 - bad[2, 0, 8:24, 8:24]  # a temporally inconsistent patch at t=2
    c_ok = compute_confidence(imgs, FlowInterpolator())
    c_bad = compute_confidence(bad, FlowInterpolator())
    assert c_ok.c_rgb[2, 0, 8:24, 8:24].mean() > 0.9
    assert c_bad.c_rgb[2, 0, 8:24, 8:24].mean() < c_ok.c_rgb[2, 0, 8:24, 8:24].mean() - 0.1
