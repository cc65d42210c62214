"""bench/e2e_comfy.py's pieces that need no server: the import stubs ComfyUI starts with on the GPU image, and
(e2e_comfy_measure.py) the reading of websocket messages and probe records into per-node figures."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bench(name: str):
    sys.path.insert(0, str(REPO / "bench"))  # the bench imports its siblings
    try:
        spec = importlib.util.spec_from_file_location(f"e4d_bench_{name}", REPO / "bench" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(REPO / "bench"))


def test_import_stubs_take_comfyuis_no_kitchen_and_no_pyav_paths(tmp_path):
    """ComfyUI 0.30 imports comfy_kitchen unguarded (JoyImage), guards ``from comfy_kitchen.tensor import ...`` with
    ImportError and ``ck.stochastic_rounding_fp8`` with AttributeError; it imports three PyAV names at start-up."""
    setup = _bench("e2e_comfy_setup")
    stubs, names = setup.import_stubs(tmp_path, force=True)
    assert names == ["av", "comfy_kitchen"]
    code = """
import comfy_kitchen
try:
    from comfy_kitchen.tensor import QuantizedTensor
    raise SystemExit("comfy_kitchen.tensor must not import")
except ImportError:
    pass
try:
    comfy_kitchen.stochastic_rounding_fp8
    raise SystemExit("stub attributes must raise AttributeError")
except AttributeError:
    pass
import av
from av.container import InputContainer
from av.subtitles.stream import SubtitleStream
from av.video.reformatter import ColorRange
assert av.__version__.endswith("e4d-stub") and ColorRange.JPEG == 2
print("stubs ok")
"""
    r = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(stubs)}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "stubs ok" in r.stdout, r.stderr


def test_first_step_and_node_figures_from_messages_and_probe():
    bench = _bench("e2e_comfy_measure")
    prompt = {"3": {"class_type": "E4D_SyncDreamerLoader"}, "4": {"class_type": "E4D_SyncDreamerT"}}
    events = [(1.0, {"type": "executing", "data": {"node": "3", "prompt_id": "p"}}),
              (2.0, {"type": "executing", "data": {"node": "4", "prompt_id": "p"}}),
              (2.5, {"type": "progress", "data": {"node": "4", "value": 0, "max": 50, "prompt_id": "p"}}),
              (3.0, {"type": "progress_state", "data": {"prompt_id": "p", "nodes": {"4": {"value": 1, "max": 50}}}}),
              (3.1, {"type": "progress", "data": {"node": "4", "value": 1, "max": 50, "prompt_id": "p"}}),
              (9.0, {"type": "executing", "data": {"node": None, "prompt_id": "p"}})]
    assert bench.first_step_at(events, "p", "4") == 3.0  # value 1 = the first DDIM step done, either message
    assert bench.first_step_at(events[:3], "p", "4") is None
    assert bench.first_step_at(events, "other", "4") is None

    class NoGpu:
        def peak(self, t0, t1):
            return None

    probe = [{"node": "3", "prompt_id": "p", "s": 1.0, "torch_peak_alloc_gb": 0.5, "managed_models_gb": []},
             {"node": "4", "prompt_id": "p", "s": 7.0, "torch_peak_alloc_gb": 6.2,
              "managed_models_gb": [["syncdreamer-pretrain.ckpt", 2.4]]},
             {"node": "4", "prompt_id": "old", "s": 1.0, "torch_peak_alloc_gb": 99.0}]
    nodes = bench.node_timings(events, "p", prompt, NoGpu(), 10.0, probe)
    assert [(n["node"], n["class_type"], n["s"]) for n in nodes] == [("3", "E4D_SyncDreamerLoader", 1.0),
                                                                     ("4", "E4D_SyncDreamerT", 7.0)]
    assert nodes[1]["torch_peak_alloc_gb"] == 6.2 and nodes[1]["managed_models_gb"] == [["syncdreamer-pretrain.ckpt", 2.4]]
    assert "E4D_SyncDreamerT" in bench.table({"workflow": "video_to_4d", "run": 1, "nodes": nodes})
