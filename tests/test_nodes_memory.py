"""Our models live under ComfyUI's memory manager: a loader returns a ModelPatcher over one ModelBundle, a running
node asks ComfyUI to load it (so the manager reports it while the node runs), and a user's other loaded model
survives our nodes. Helpers here (``user_model``, ``spy_loaded``) are reused by the per-model node tests."""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from comfy_env import comfy, comfy_dirs, require_comfy  # noqa: F401

require_comfy()


def import_model_patcher() -> None:
    """Import ``comfy.model_patcher`` (its imports reach ``torchvision``, which ComfyUI's server start-up finds as the
    harness's import-only stub) and then hide the stub again, so transformers and diffusers still see no
    torchvision in later tests of the session (see tests/tiny_zero123.py)."""
    import sys

    from comfy_env import stubs_dir

    stubs = str(stubs_dir())
    sys.path.insert(0, stubs)
    try:
        import comfy.model_patcher  # noqa: F401
    finally:
        sys.path.remove(stubs)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]


import_model_patcher()

from nodes import _models as M  # noqa: E402


def loaded_patchers() -> list:
    import comfy.model_management as mm

    return [lm.model for lm in mm.current_loaded_models if lm.model is not None]


@pytest.fixture
def user_model():
    """A user's model (not ours) loaded through ComfyUI, as a checkpoint loader + sampler would leave it; every
    model is unloaded again afterwards so tests do not share memory-manager state."""
    import comfy.model_management as mm
    import comfy.model_patcher

    patcher = comfy.model_patcher.ModelPatcher(torch.nn.Linear(8, 8), load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    mm.load_models_gpu([patcher])
    assert patcher in loaded_patchers()
    try:
        yield patcher
    finally:
        mm.unload_all_models()  # test cleanup only: our nodes never call it


def spy_loaded(monkeypatch, module, name: str) -> list:
    """Wrap ``module.name`` so each call records the patchers ComfyUI reports as loaded at that moment."""
    seen: list = []
    real = getattr(module, name)

    @functools.wraps(real)  # nodes read widget defaults from the core function's signature
    def wrapper(*args, **kwargs):
        seen.append(loaded_patchers())
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return seen


def test_bundle_needs_parts_and_is_not_called():
    with pytest.raises(ValueError, match="at least one"):
        M.ModelBundle(object(), {}, "empty", torch.float32)
    b = M.ModelBundle("core", {"lin": torch.nn.Linear(2, 2)}, "tiny", torch.float16)
    assert b.core == "core" and b.get_dtype() == torch.float16
    assert [n for n, _ in b.named_parameters()] == ["parts.lin.weight", "parts.lin.bias"]  # core not registered
    with pytest.raises(TypeError, match="not called"):
        b(torch.zeros(2))


def test_manage_and_load_keep_the_users_model(comfy, user_model):
    import comfy.model_management as mm

    net = torch.nn.Linear(4, 4)
    patcher = M.manage({"net": net}, {"net": net}, "ours", torch.float32)
    assert patcher.load_device == mm.get_torch_device() and patcher.offload_device == mm.unet_offload_device()
    assert patcher.model_size() == sum(p.numel() * 4 for p in net.parameters())
    assert M.load_managed(patcher)["net"] is net
    assert patcher in loaded_patchers() and user_model in loaded_patchers()
    M.reserve_memory(1 << 20)  # the fit's request: room is there, so nothing is offloaded
    assert patcher in loaded_patchers() and user_model in loaded_patchers()
    with pytest.raises(TypeError, match="must come from 'Load X'"):
        M.check_managed(net, "model", "Load X")


def run_on_comfy_030(script: str, cwd: Path, expect: str) -> str:
    """Run ``script`` in its own interpreter with the ComfyUI 0.30.0 tree importable (one ComfyUI per process);
    ``sys.argv[1:4]`` = repo, ComfyUI root, start-up stubs. Fails unless it exits 0 and prints ``expect``; skips
    only outside CI when the tree cannot be fetched."""
    from comfy_env import comfy_root, stubs_dir

    try:
        root = comfy_root("0.30.0")
    except Exception as e:  # no network, no pip: skip locally, fail in CI
        if os.environ.get("CI"):
            raise
        pytest.skip(f"ComfyUI 0.30.0 not available: {e}")
    prelude = textwrap.dedent("""
        import sys
        repo, root, stubs = sys.argv[1:4]
        sys.path[:0] = [repo]
        sys.path += [root, stubs]
        import torch
        torch.set_num_threads(1)
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
    """)
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script), str(repo), str(root),
                        str(stubs_dir())], capture_output=True, text=True, cwd=cwd, timeout=300,
                       env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0 and expect in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def test_memory_manager_on_comfyui_030(tmp_path):
    run_on_comfy_030("""
        import comfy.model_management as mm
        import comfy.model_patcher
        from nodes import _models as M

        user = comfy.model_patcher.ModelPatcher(torch.nn.Linear(8, 8), mm.get_torch_device(), mm.unet_offload_device())
        mm.load_models_gpu([user])
        net = torch.nn.Linear(4, 4)
        ours = M.manage({"net": net}, {"net": net}, "ours", torch.float32)
        assert M.load_managed(ours)["net"] is net
        M.reserve_memory(1 << 20)
        loaded = [lm.model for lm in mm.current_loaded_models]
        assert ours in loaded and user in loaded, loaded
        print("MM OK")
    """, tmp_path, "MM OK")


def test_every_node_schema_builds_on_comfyui_030(tmp_path):
    """The pack's node list (all topic modules, plus the SPLAT node that exists only there) on ComfyUI 0.30."""
    run_on_comfy_030("""
        import nodes as pack
        from nodes.render import OrbitRender

        names = list(pack.TOPIC_MODULES) + [m for m in ("splat",) if m not in pack.TOPIC_MODULES]
        empty = [name for name in names if not pack._module_nodes(name)]  # a failing module gives no nodes
        assert not empty, f"node modules without nodes on ComfyUI 0.30: {empty}"
        ids = [c.GET_SCHEMA().node_id for c in pack.load_node_classes(tuple(names))]
        assert "E4D_SliceToSplat" in ids and len(ids) == len(set(ids)), ids
        assert "camera_info" in {i.id for i in OrbitRender.GET_SCHEMA().inputs}
        print("SCHEMAS OK", len(ids))
    """, tmp_path, "SCHEMAS OK")
