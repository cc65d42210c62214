"""The pack's plumbing: entry point, guarded module loading, model folders, progress/cancel, tensor conversions."""
from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from pathlib import Path

import pytest
import torch

from comfy_env import comfy, comfy_dirs, require_comfy  # noqa: F401

require_comfy()

import nodes as pack_nodes  # noqa: E402
from nodes import _common, _devices, _models, _tensors  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _load_pack_like_comfyui(name: str):
    """Import the repo root the way ComfyUI's load_custom_node does (module named by its path)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_entrypoint_lists_only_v3_nodes_with_unique_ids(comfy_dirs):
    pack = _load_pack_like_comfyui("/tmp/custom_nodes/efficient4d_entrytest")
    assert not hasattr(pack, "NODE_CLASS_MAPPINGS"), "V1 mappings would make ComfyUI ignore comfy_entrypoint"
    assert pack.WEB_DIRECTORY == "./web"
    ext = asyncio.run(pack.comfy_entrypoint())
    node_list = asyncio.run(ext.get_node_list())
    ids = [c.GET_SCHEMA().node_id for c in node_list]
    assert len(ids) == len(set(ids))
    for cls in node_list:
        s = cls.GET_SCHEMA()
        assert s.node_id.startswith("E4D_") and s.category.startswith("Efficient4D"), s.node_id
        assert s.description, f"{s.node_id} lacks a description"
        for i in s.inputs or []:
            assert i.tooltip, f"{s.node_id}.{i.id} lacks a tooltip"
        for o in s.outputs or []:
            assert o.tooltip, f"{s.node_id} output {o.display_name or o.id} lacks a tooltip"


def test_failing_module_disables_only_its_nodes(monkeypatch, caplog):
    real_import = importlib.import_module

    def fake_import(name, *a, **k):
        if name.endswith(".video"):
            raise ImportError("simulated missing dependency 'av'")
        return real_import(name, *a, **k)

    real_find = importlib.util.find_spec
    monkeypatch.setattr(pack_nodes.importlib, "import_module", fake_import)
    monkeypatch.setattr(pack_nodes.importlib.util, "find_spec",
                        lambda name, *a: object() if name.endswith(".video") else real_find(name, *a))
    with caplog.at_level(logging.WARNING, logger="efficient4d"):
        got = pack_nodes.load_node_classes(("video", "prepare", "prepar"))
    assert "video" in caplog.text and "simulated missing dependency" in caplog.text
    typo = [r for r in caplog.records if "nodes.prepar " in r.getMessage()]
    assert len(typo) == 1 and typo[0].levelno == logging.ERROR  # a misspelt module name must show
    assert all(c.__module__.split(".")[-1] != "video" for c in got)
    assert any(c.__module__.split(".")[-1] == "prepare" for c in got)


def test_model_folders_registered_listed_and_resolved(comfy_dirs):
    import folder_paths

    _models.register_model_folders()  # idempotent
    paths, exts = folder_paths.folder_names_and_paths["syncdreamer"]
    assert paths == [str(comfy_dirs["models"] / "syncdreamer")]
    assert {".ckpt", ".safetensors", ".pth", ".pkl", ".pt"} <= exts
    assert _models.list_models("syncdreamer") == [_models.NO_MODELS]
    assert _models.list_models("syncdreamer", placeholder=False) == []
    with pytest.raises(FileNotFoundError) as e:
        _models.resolve_model("syncdreamer", "syncdreamer-pretrain.ckpt")
    msg = str(e.value)
    assert "syncdreamer-pretrain.ckpt" in msg and str(comfy_dirs["models"] / "syncdreamer") in msg
    assert "huggingface.co/liuyuan-pal/SyncDreamer" in msg
    d = comfy_dirs["models"] / "syncdreamer"
    d.mkdir()
    (d / "tiny.ckpt").write_bytes(b"x")
    (d / "readme.txt").write_text("not a model")
    folder_paths.filename_list_cache.clear()
    assert _models.list_models("syncdreamer") == ["tiny.ckpt"]
    assert _models.resolve_model("syncdreamer", "tiny.ckpt") == d / "tiny.ckpt"
    assert _models.validate_model_choice("syncdreamer", "tiny.ckpt") is True
    assert "not found" in _models.validate_model_choice("syncdreamer", "other.ckpt")
    (comfy_dirs["models"] / "secret.ckpt").write_bytes(b"x")
    with pytest.raises(FileNotFoundError):
        _models.resolve_model("syncdreamer", "../secret.ckpt")
    svd = comfy_dirs["models"] / "diffusers" / "svd-tiny"
    svd.mkdir(parents=True)
    (svd / "model_index.json").write_text("{}")
    assert _models.list_models("diffusers", kind="dirs") == ["svd-tiny"]
    assert _models.resolve_model("diffusers", "svd-tiny") == svd


def test_progress_callback_drives_bar_and_cancels(monkeypatch):
    import comfy.model_management as mm
    import comfy.utils

    seen = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda v, t, preview, node_id=None: seen.append((v, t)))
    cb = _common.progress_callback()
    for step in (1, 2, 3):
        cb(step, 3, {})
    # ComfyUI 0.30+ throttles the bar (first and last update always sent), older ones send every step
    assert seen[0] == (1, 3) and seen[-1] == (3, 3) and seen in ([(1, 3), (2, 3), (3, 3)], [(1, 3), (3, 3)])
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            cb(1, 3, {})
    finally:
        mm.interrupt_current_processing(False)


def test_image_and_mask_conversions():
    rgba = torch.rand(2, 8, 6, 4)
    rgb, alpha = _tensors.image_in(rgba)
    assert rgb.shape == (2, 8, 6, 3) and alpha.shape == (2, 8, 6)
    assert _tensors.image_in(torch.rand(8, 6, 3))[0].shape == (1, 8, 6, 3)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3 or 4\]"):
        _tensors.image_in(torch.rand(2, 3, 8, 6))
    bad = torch.rand(1, 4, 4, 3)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        _tensors.image_in(bad)
    assert _tensors.mask_in(torch.ones(8, 6), 2, 8, 6).shape == (2, 8, 6)
    with pytest.raises(ValueError, match="6x8"):
        _tensors.mask_in(torch.ones(1, 6, 8), 2, 8, 6)
    with pytest.raises(ValueError, match="3 masks for 2 images"):
        _tensors.mask_in(torch.ones(3, 8, 6), 2, 8, 6)
    out = _tensors.image_out(rgb, alpha)
    assert out.shape == (2, 8, 6, 4) and out.device == _devices.intermediate_device()
    assert _tensors.mask_out(alpha[..., None]).shape == (2, 8, 6)
    assert _tensors.parse_floats("0, 90;180 270", "azimuths") == [0, 90, 180, 270]
    with pytest.raises(ValueError, match="azimuths"):
        _tensors.parse_floats("0, north", "azimuths")
