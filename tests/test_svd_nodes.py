"""SVD node adapters called directly (no server): dropdown, loading both layouts, outputs and their order."""
from __future__ import annotations

import pytest
import torch

from comfy_env import comfy, comfy_dirs, require_comfy  # noqa: F401

require_comfy()

from test_nodes_memory import import_model_patcher, loaded_patchers, spy_loaded, user_model  # noqa: E402,F401

import_model_patcher()

from nodes import svd as N  # noqa: E402
from tiny_svd import write_tiny_svd, write_tiny_svd_single_file  # noqa: E402
from tiny_zero123 import hide_torchvision_stub  # noqa: E402


@pytest.fixture(autouse=True)
def _no_torchvision_stub():
    hide_torchvision_stub()  # see tests/tiny_zero123.py: ComfyUI's CPU stub confuses transformers


def test_schemas():
    assert [c.GET_SCHEMA().node_id for c in N.NODES] == ["E4D_SVDLoader", "E4D_SVDImageToVideo"]
    for cls in N.NODES:
        s = cls.GET_SCHEMA()
        assert s.category.startswith("Efficient4D") and s.description
        assert all(i.tooltip for i in s.inputs) and all(o.tooltip for o in s.outputs)


def test_loader_and_image_to_video(comfy_dirs, user_model, monkeypatch):
    import folder_paths

    import e4d.svd.pipeline as pipeline

    assert N._svd_choices() == [N.M.NO_MODELS]
    msg = N.SVDLoader.validate_inputs(N.M.NO_MODELS)
    assert isinstance(msg, str) and "stable-video-diffusion-img2vid-xt" in msg
    write_tiny_svd(comfy_dirs["models"] / "diffusers" / "svd-tiny")
    write_tiny_svd_single_file(comfy_dirs["models"] / "checkpoints" / "svd_tiny.safetensors")
    (comfy_dirs["models"] / "checkpoints" / "sd15.safetensors").write_bytes(b"")  # not offered
    folder_paths.filename_list_cache.clear()
    assert N._svd_choices() == ["diffusers/svd-tiny", "checkpoints/svd_tiny.safetensors"]
    assert N.SVDLoader.validate_inputs("diffusers/svd-tiny") is True
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (pipe,) = N.SVDLoader.execute("diffusers/svd-tiny", "fp32").result
    assert not [w for w in caught if "torch_dtype" in str(w.message)]  # dtype= where diffusers knows it
    (pipe2,) = N.SVDLoader.execute("checkpoints/svd_tiny.safetensors", "auto").result
    assert pipe2.model.core.unet.dtype == torch.float32 and pipe2.model.get_dtype() == torch.float32  # auto on CPU
    assert set(pipe.model.parts) == {"unet", "vae", "image_encoder"}  # one managed model for the whole pipeline
    seen = spy_loaded(monkeypatch, pipeline, "image_to_video")
    img = torch.ones(1, 40, 40, 4)
    img[0, 10:30, 10:30, :3] = 0.2
    img[0, ..., 3] = 0
    img[0, 10:30, 10:30, 3] = 1
    frames, masks = N.SVDImageToVideo.execute(pipe, img, frames=4, width=64, height=64, steps=1, decode_chunk=4,
                                              keep_frames=2).result
    assert frames.shape == (2, 64, 64, 3) and masks.shape == (2, 64, 64)
    assert frames.device.type == "cpu" and masks.dtype == torch.float32
    assert len(seen) == 1 and pipe in seen[0] and user_model in loaded_patchers()
