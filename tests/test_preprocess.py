"""Object-frame preprocessing: bit-exact against the official SyncDreamer recipe, clip/frame boxes, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from e4d.masks import composite_on_white
from e4d.preprocess import PrepareConfig, alpha_boxes, prepare_object_frames


@pytest.fixture(scope="module")
def fixture_inputs(shared_dir):
    from safetensors.torch import load_file

    f = load_file(str(shared_dir / "reference" / "syncdreamer" / "fixture.safetensors"))
    return f["input/src_rgba_uint8"].numpy(), f["input/rgba256_uint8"].numpy()


def test_official_rgba_bit_exact(fixture_inputs):
    src, ref = fixture_inputs
    out = prepare_object_frames(src)  # uint8 RGBA, default crop 200 / size 256
    assert out.boxes.tolist() == [[12, 22, 92, 138]]  # right/bottom exclusive, as the official crop
    np.testing.assert_array_equal(out.rgba_uint8[0], ref)
    rgba = torch.from_numpy(ref).float() / 255.0
    rgb, a = composite_on_white(rgba), rgba[..., 3]
    torch.testing.assert_close(out.images[0], rgb, rtol=0, atol=0)
    torch.testing.assert_close(out.alpha[0], a, rtol=0, atol=0)


def test_float_rgb_plus_mask_matches_uint8(fixture_inputs):
    src, ref = fixture_inputs
    f = torch.from_numpy(src).float() / 255.0
    out = prepare_object_frames(f[None, ..., :3], f[None, ..., 3], PrepareConfig(box="frame"))
    np.testing.assert_array_equal(out.rgba_uint8[0], ref)
    assert out.images.shape == (1, 256, 256, 3) and out.alpha.shape == (1, 256, 256)


def _moving_square(T=3, H=48, W=64):
    fr = np.zeros((T, H, W, 4), np.uint8)
    fr[..., :3] = 90
    for t in range(T):
        fr[t, 10:30, 5 + 12 * t:25 + 12 * t, 3] = 255
    return fr


def test_clip_box_keeps_motion_frame_box_removes_it():
    fr = _moving_square()
    cfg = dict(size=32, crop_size=24)
    clip = prepare_object_frames(fr, config=PrepareConfig(box="clip", **cfg))
    frame = prepare_object_frames(fr, config=PrepareConfig(box="frame", **cfg))
    assert (clip.boxes == clip.boxes[0]).all()
    assert clip.boxes[0].tolist() == [5, 10, 48, 29]
    cx = lambda a: (a.sum(1) * torch.arange(a.shape[-1])).sum(-1) / a.sum((1, 2))  # noqa: E731
    assert torch.all(torch.diff(cx(clip.alpha)) > 3)  # object moves right inside the clip box
    assert torch.allclose(cx(frame.alpha), cx(frame.alpha)[0].expand(3), atol=0.01)  # per-frame: centred each time
    assert clip.images.min() >= 0 and clip.images.max() <= 1


def test_no_crop_mode_pads_to_square():
    fr = _moving_square(T=1)
    out = prepare_object_frames(fr, config=PrepareConfig(size=32, crop_size=-1))
    assert out.images.shape == (1, 32, 32, 3)
    assert out.alpha[0, :4].max() == 0  # padding rows (H < W) stay transparent -> white


@pytest.mark.parametrize("case", ["rgb_only", "all_zero", "all_one"])
def test_unusable_alpha_errors(case):
    rgb = np.full((2, 16, 16, 3), 0.5, np.float32)
    if case == "rgb_only":
        args = (rgb, None)
    elif case == "all_zero":
        args = (rgb, np.zeros((2, 16, 16), np.float32))
    else:
        args = (rgb, np.ones((2, 16, 16), np.float32))
    with pytest.raises(ValueError, match="background-removal"):
        prepare_object_frames(*args, config=PrepareConfig(size=16, crop_size=12))


def test_empty_frame_only_fails_in_frame_mode():
    fr = _moving_square(T=2)
    fr[1, ..., 3] = 0
    prepare_object_frames(fr, config=PrepareConfig(size=32, crop_size=24, box="clip"))
    with pytest.raises(ValueError, match="frame 1"):
        prepare_object_frames(fr, config=PrepareConfig(size=32, crop_size=24, box="frame"))


def test_bad_config_and_shapes():
    with pytest.raises(ValueError, match="box"):
        prepare_object_frames(_moving_square(), config=PrepareConfig(box="union"))
    with pytest.raises(ValueError, match=r"\[T, H, W\]"):
        prepare_object_frames(np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 9), np.float32))
    with pytest.raises(ValueError, match="thinner"):
        a = np.zeros((1, 16, 16), np.uint8)
        a[0, 3, 3:9] = 255  # one row: the exclusive end makes the box 0 px tall
        prepare_object_frames(np.zeros((1, 16, 16, 3), np.uint8), a, PrepareConfig(size=16, crop_size=12))
    assert alpha_boxes(np.array([[[0, 9], [0, 0]]], np.uint8)).tolist() == [[1, 0, 1, 0]]
