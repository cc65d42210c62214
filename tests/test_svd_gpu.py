"""SVD image-to-video on CUDA in fp16 (tiny model, single-file layout)."""
from __future__ import annotations

import pytest
import torch

from tiny_svd import write_tiny_svd_single_file
from tiny_zero123 import hide_torchvision_stub

pytestmark = pytest.mark.gpu


def test_svd_fp16_cuda_single_file(tmp_path):
    hide_torchvision_stub()
    from e4d.svd.pipeline import SVDConfig, image_to_video, load_svd

    pipe = load_svd(write_tiny_svd_single_file(tmp_path / "svd_xt.safetensors"), torch.float16, "cuda")
    img = torch.ones(48, 48, 3)
    img[10:30, 10:30] = 0.3
    res = image_to_video(pipe, img, config=SVDConfig(num_frames=4, width=64, height=64, steps=2, keep_frames=3))
    assert res.frames.shape == (3, 64, 64, 3) and torch.isfinite(res.frames).all()
    assert res.masks.shape == (3, 64, 64)
