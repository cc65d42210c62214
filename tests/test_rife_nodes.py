"""RIFE node adapters, called directly (no server): schema, dropdown, loading, outputs and their order."""
from __future__ import annotations

import pytest
import torch

from comfy_env import comfy, comfy_dirs, require_comfy  # noqa: F401

require_comfy()

from test_nodes_memory import import_model_patcher, loaded_patchers, spy_loaded, user_model  # noqa: E402,F401

import_model_patcher()

from nodes import rife as N  # noqa: E402
from test_interpolate import _vm  # noqa: E402
from tiny_rife import write_tiny_rife  # noqa: E402


def test_schemas_have_ids_tooltips():
    ids = [c.GET_SCHEMA().node_id for c in N.NODES]
    assert ids == ["E4D_RIFELoader", "E4D_InterpolateViews", "E4D_InterpolateFrames", "E4D_ConfidenceMaps"]
    for cls in N.NODES:
        s = cls.GET_SCHEMA()
        assert s.category.startswith("Efficient4D") and s.description
        assert all(i.tooltip for i in s.inputs) and all(o.tooltip for o in s.outputs)


def test_loader_lists_flow_first_and_loads_rife(comfy_dirs):
    import folder_paths

    assert N._checkpoints() == [N.FLOW_CHOICE]
    write_tiny_rife(comfy_dirs["models"] / "rife", "4.7")
    folder_paths.filename_list_cache.clear()
    assert N._checkpoints() == [N.FLOW_CHOICE, "rife47.pth"]
    assert N.RIFELoader.validate_inputs("rife47.pth") is True
    msg = N.RIFELoader.validate_inputs("rife49.pth")
    assert isinstance(msg, str) and "rife49.pth" in msg and "models/rife" in msg
    interp, name = N.RIFELoader.execute("rife47.pth").result
    assert name == "rife 4.7 (rife47.pth)" and interp.model.core.name == name and interp.model.name == name
    flow, fname = N.RIFELoader.execute(N.FLOW_CHOICE).result
    assert "no weights" in fname


def test_interpolate_frames_node_keeps_alpha_and_order(comfy_dirs, user_model, monkeypatch):
    import e4d.interp.sequences as sequences

    seen = spy_loaded(monkeypatch, sequences, "interpolate_frames")
    write_tiny_rife(comfy_dirs["models"] / "rife", "4.7")
    interp, _ = N.RIFELoader.execute("rife47.pth").result
    frames = torch.rand(3, 32, 32, 4)
    (out,) = N.InterpolateFrames.execute(frames, interp, multiplier=3, scale="1.0", fp16=True, batch=2).result
    assert out.shape == (7, 32, 32, 4) and out.device.type == "cpu" and out.dtype == torch.float32
    torch.testing.assert_close(out[::3], frames)
    assert len(seen) == 1 and interp in seen[0] and user_model in loaded_patchers()
    assert next(interp.model.core.net.parameters()).dtype == torch.float32  # the managed model was not cast


def test_views_and_confidence_nodes_with_fallback(comfy_dirs):
    interp, _ = N.RIFELoader.execute(N.FLOW_CHOICE).result
    vm = _vm(T=3, V=2, S=32)
    out, info = N.InterpolateViews.execute(vm, interp, multiplier=4, method="auto").result
    assert out.T == 9 and "flow" in info and "3 -> 9" in info
    conf, preview = N.ConfidenceMaps.execute(out, interp, mode="official", batch=8).result
    assert conf.shape == (9, 2, 32, 32)
    assert preview.shape == (9, 64, 64, 3) and preview.device.type == "cpu"


def test_loader_refuses_a_film_file_clearly(comfy_dirs):
    import folder_paths

    d = comfy_dirs["models"] / "rife"
    d.mkdir(exist_ok=True)
    film = {"extract.extract_sublevels.convs.0.0.conv.weight": torch.zeros(64, 3, 3, 3),
            "predict_flow.0.convs.0.conv.weight": torch.zeros(32, 128, 3, 3)}  # core FILM's sentinel key and more
    torch.save(film, d / "film_net_fp32.pt")
    folder_paths.filename_list_cache.clear()
    with pytest.raises(ValueError, match="FILM.*models/frame_interpolation.*Load Frame Interpolation Model"):
        N.RIFELoader.execute("film_net_fp32.pt")
