"""SyncDreamer node adapters called directly: schema, dropdown + missing-file message, load, run, outputs."""
from __future__ import annotations

import pytest
import torch

from comfy_env import comfy, comfy_dirs, require_comfy  # noqa: F401

require_comfy()

from test_nodes_memory import import_model_patcher, loaded_patchers, spy_loaded, user_model  # noqa: E402,F401

import_model_patcher()

from nodes import syncdreamer as N  # noqa: E402
from tiny_syncdreamer import write_tiny_syncdreamer  # noqa: E402


def test_schemas():
    ids = [c.GET_SCHEMA().node_id for c in N.NODES]
    assert ids == ["E4D_SyncDreamerLoader", "E4D_SyncDreamerT"]
    for cls in N.NODES:
        s = cls.GET_SCHEMA()
        assert s.category.startswith("Efficient4D") and s.description
        assert all(i.tooltip for i in s.inputs) and all(o.tooltip for o in s.outputs)


def test_loader_dropdown_and_errors(comfy_dirs):
    import folder_paths

    msg = N.SyncDreamerLoader.validate_inputs("syncdreamer-pretrain.ckpt")
    assert isinstance(msg, str) and "huggingface.co/liuyuan-pal/SyncDreamer" in msg and "syncdreamer" in msg
    (comfy_dirs["models"] / "syncdreamer").mkdir(exist_ok=True)
    torch.save({"state_dict": {"x": torch.zeros(1)}}, comfy_dirs["models"] / "syncdreamer" / "wrong.ckpt")
    folder_paths.filename_list_cache.clear()
    with pytest.raises(ValueError, match="wrong.ckpt is not a SyncDreamer checkpoint"):
        N.SyncDreamerLoader.execute("wrong.ckpt", "fp32")


def test_load_and_run_tiny(comfy_dirs, user_model, monkeypatch):
    import folder_paths

    import e4d.syncdreamer.pipeline as pipeline

    write_tiny_syncdreamer(comfy_dirs["models"] / "syncdreamer")
    folder_paths.filename_list_cache.clear()
    assert "syncdreamer-tiny.ckpt" in N.M.list_models("syncdreamer")
    assert N.SyncDreamerLoader.validate_inputs("syncdreamer-tiny.ckpt") is True
    (sd,) = N.SyncDreamerLoader.execute("syncdreamer-tiny.ckpt", "auto").result
    assert sd.model.get_dtype() == torch.float32 and sd.model.name == "syncdreamer-tiny.ckpt"  # CPU: auto -> fp32
    assert sd.model_size() > 0 and sd not in loaded_patchers()  # read from disk, not yet on the compute device
    with pytest.raises(TypeError, match="Load SyncDreamer"):
        N.SyncDreamerT.execute(sd.model.core, torch.ones(2, 64, 64, 3))
    seen = spy_loaded(monkeypatch, pipeline, "syncdreamer_t")
    frames = torch.ones(3, 64, 64, 3)
    frames[:, 20:44, 24:40] = torch.tensor([0.8, 0.2, 0.1])
    with pytest.raises(ValueError, match="temporal weights"):
        N.SyncDreamerT.execute(sd, frames, temporal_weights="1,2")
    vm, preview = N.SyncDreamerT.execute(sd, frames, frames=2, steps=1, guidance="cfg", scale1=2.0,
                                         view_batch=16, prepare="none").result
    assert vm.images.shape == (2, 16, 64, 64, 3) and vm.times.tolist() == [0.0, 1.0]
    assert preview.shape == (2, 256, 256, 3) and preview.device.type == "cpu"
    torch.testing.assert_close(preview[0, :64, 64:128], vm.images[0, 1])  # grid: views row by row
    assert len(seen) == 1 and sd in seen[0]  # ComfyUI's memory manager held our model while it sampled
    assert user_model in loaded_patchers()  # and the user's other model survived
