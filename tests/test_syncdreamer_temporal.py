"""SyncDreamer-T smoothing (eq. 10 / 15) against the official Efficient4D get_w matrices."""
from __future__ import annotations

import json

import pytest
import torch

from e4d.syncdreamer.temporal import auto_kernel, parse_kernel, smooth_volumes, smoothing_matrix


@pytest.fixture(scope="module")
def official(shared_dir):
    return json.loads((shared_dir / "reference" / "syncdreamer" / "temporal_weights.json").read_text())["weights"]


def _norm(w):
    w = torch.tensor(w, dtype=torch.float64)
    return w / w.sum(1, keepdim=True)


def test_agree_with_official_where_the_paper_agrees(official):
    """K = 1, 2 (eq. 10, w = 0.25), 7..12 (7-tap) and >= 13 (13-tap): identical normalised matrices."""
    for k in [1, 2] + list(range(7, 25)):
        for cyc in (0, 1):
            if k == 2 and cyc:
                continue  # a 3-tap kernel cannot wrap on 2 frames; the official table equals the non-cyclic one
            ours = smoothing_matrix(k, auto_kernel(k), cyclic=bool(cyc))
            torch.testing.assert_close(ours, _norm(official[f"n{k}_cyc{cyc}"]), rtol=0, atol=1e-6,
                                       msg=f"K={k} cyclic={cyc}")


def test_deliberate_differences(official):
    """K = 5, 6: the paper's 5-tap kernel (official fall-through uses 7 taps, or raises when cyclic);
    K = 3, 4: the paper's (1.5, 7, 1.5) instead of the official hand tables."""
    for k in (5, 6):
        ours = smoothing_matrix(k, auto_kernel(k))
        assert auto_kernel(k) == [1, 1, 6, 1, 1]
        assert not torch.allclose(ours, _norm(official[f"n{k}_cyc0"]), atol=1e-3)
        assert torch.allclose(ours, smoothing_matrix(k, [1, 1, 6, 1, 1]))
        assert isinstance(official[f"n{k}_cyc1"], str)  # the official code raises here; we wrap around
        assert torch.allclose(smoothing_matrix(k, auto_kernel(k), cyclic=True).sum(1), torch.ones(k, dtype=torch.float64))
    for k in (3, 4):
        assert auto_kernel(k) == [1.5, 7.0, 1.5]
        assert not torch.allclose(smoothing_matrix(k, auto_kernel(k)), _norm(official[f"n{k}_cyc0"]), atol=1e-3)


def test_truncation_and_wrap():
    M = smoothing_matrix(5, [1, 1, 6, 1, 1])
    torch.testing.assert_close(M[0], torch.tensor([6, 1, 1, 0, 0], dtype=torch.float64) / 8)
    Mc = smoothing_matrix(5, [1, 1, 6, 1, 1], cyclic=True)
    torch.testing.assert_close(Mc[0], torch.tensor([6, 1, 1, 1, 1], dtype=torch.float64) / 10)


def test_smooth_volumes_is_the_weighted_sum():
    V = torch.randn(6, 3, 4, 4, 4)
    out = smooth_volumes(V, [1, 1, 6, 1, 1])
    ref = (6 * V[2] + V[0] + V[1] + V[3] + V[4]) / 10
    torch.testing.assert_close(out[2], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[0], (6 * V[0] + V[1] + V[2]) / 8, rtol=1e-5, atol=1e-6)
    assert smooth_volumes(V, [1.0]) is V


def test_parse_kernel():
    assert parse_kernel("auto", 16) == auto_kernel(16)
    assert parse_kernel("1, 1,6,1,1", 3) == [1, 1, 6, 1, 1]
    assert parse_kernel("none", 8) == [1.0]
    for bad in ("1,2", "a,b,c", "1,-1,1", "1,0,1"):
        with pytest.raises(ValueError, match="temporal weights"):
            parse_kernel(bad, 8)
