"""SVD image-to-video on tiny random models (CPU): folder + single file, masks, subsampling, progress, errors."""
from __future__ import annotations

import pytest
import torch

from e4d.progress import Cancelled
from e4d.masks import composite_on_white, masks_from_white, pad_to_aspect, subsample_indices
from e4d.svd.pipeline import SVDConfig, image_to_video, load_svd

from tiny_svd import write_tiny_svd, write_tiny_svd_single_file
from tiny_zero123 import hide_torchvision_stub  # noqa: E402


@pytest.fixture(autouse=True)
def _no_torchvision_stub():
    hide_torchvision_stub()  # see tests/tiny_zero123.py: ComfyUI's CPU stub confuses transformers


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_tiny_svd(tmp_path_factory.mktemp("svd") / "stable-video-diffusion-img2vid-xt")


def _rgba(size=48):
    img = torch.zeros(size, size, 4)
    img[..., :3] = torch.tensor([0.9, 0.1, 0.1])  # red object colour, also under transparent pixels
    img[12:36, 16:32, 3] = 1.0
    return img


def test_composite_and_pad():
    rgba = _rgba()
    rgb = composite_on_white(rgba)
    assert rgb.shape == (48, 48, 3)
    torch.testing.assert_close(rgb[0, 0], torch.ones(3))
    torch.testing.assert_close(rgb[20, 20], torch.tensor([0.9, 0.1, 0.1]))
    m = torch.zeros(48, 48)
    m[0:4, 0:4] = 1
    torch.testing.assert_close(composite_on_white(rgba, m)[20, 20], torch.ones(3))  # explicit mask wins
    with pytest.raises(ValueError, match="resize the mask"):
        composite_on_white(rgba, torch.ones(10, 10))
    padded = pad_to_aspect(rgb, 1024, 576)
    assert padded.shape[1] / padded.shape[0] == pytest.approx(1024 / 576, abs=0.03)
    torch.testing.assert_close(padded[:, :3], torch.ones(padded.shape[0], 3, 3))


def test_masks_from_white_clean_speckle():
    f = torch.ones(2, 40, 40, 3)
    f[:, 10:30, 10:20] = 0.3
    f[:, 2, 35] = 0.5  # one-pixel speckle: removed by the opening
    f[1, 15, 15] = 1.0  # pinhole inside the object: filled by the closing
    m = masks_from_white(f, threshold=0.04, kernel=3)
    expect = torch.zeros(40, 40)
    expect[10:30, 10:20] = 1
    assert m.shape == (2, 40, 40)
    assert (m[0] != expect).sum() <= 4 and (m[1] != expect).sum() <= 4  # corners may round off
    assert m[:, 2, 35].sum() == 0 and m[1, 15, 15] == 1


def test_subsample_indices():
    assert subsample_indices(25, 16)[0] == 0 and subsample_indices(25, 16)[-1] == 24
    assert len(set(subsample_indices(25, 16))) == 16
    assert subsample_indices(4, 0) == [0, 1, 2, 3] and subsample_indices(4, 9) == [0, 1, 2, 3]
    assert subsample_indices(4, 3) == [0, 2, 3] and subsample_indices(5, 1) == [0]


def test_tiny_pipeline_frames_masks_progress(tiny_folder):
    pipe = load_svd(tiny_folder)
    seen = []
    cfg = SVDConfig(num_frames=4, width=64, height=64, steps=2, decode_chunk_size=2, keep_frames=3, seed=1)
    res = image_to_video(pipe, _rgba(), config=cfg, callback=lambda s, t, i: seen.append((s, t)))
    assert seen == [(1, 2), (2, 2)]
    assert res.frames.shape == (3, 64, 64, 3) and res.masks.shape == (3, 64, 64)
    assert res.indices == [0, 2, 3]
    assert res.frames.min() >= 0 and res.frames.max() <= 1
    assert set(res.masks.unique().tolist()) <= {0.0, 1.0}
    again = image_to_video(pipe, _rgba(), config=cfg)
    torch.testing.assert_close(again.frames, res.frames)  # seeded
    seg = torch.zeros(4, 32, 32)
    seg[:, 8:24, 8:24] = 1
    s = image_to_video(pipe, _rgba(), config=cfg, segmentation=seg)
    assert s.masks[:, 0, 0].sum() == 0 and s.masks[:, 32, 32].sum() == 3
    torch.testing.assert_close(s.frames[:, 0, 0], torch.ones(3, 3))

    def cancel(step, total, info):
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        image_to_video(pipe, _rgba(), config=cfg, callback=cancel)
    with pytest.raises(ValueError, match="multiples of 8"):
        image_to_video(pipe, _rgba(), config=SVDConfig(width=60, height=64))


def test_single_file_pipeline_runs(tmp_path):
    f = write_tiny_svd_single_file(tmp_path / "svd_xt.safetensors")
    pipe = load_svd(f)
    assert pipe.unet.config.block_out_channels == [32, 64] or list(pipe.unet.config.block_out_channels) == [32, 64]
    res = image_to_video(pipe, _rgba(), config=SVDConfig(num_frames=2, width=64, height=64, steps=1))
    assert res.frames.shape == (2, 64, 64, 3)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="stabilityai/stable-video-diffusion-img2vid-xt"):
        load_svd(tmp_path / "svd_xt.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty is not a Stable Video Diffusion diffusers folder"):
        load_svd(tmp_path / "empty")
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="other.safetensors has no first_stage_model"):
        load_svd(tmp_path / "other.safetensors")
