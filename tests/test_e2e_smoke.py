"""CPU smoke test of ``bench/e2e.py --tiny``: the product's pipeline (``e4d.pipeline.video_to_4d`` +
``save_outputs``: prepare -> SyncDreamer-T -> RIFE -> confidence -> fit with SDS -> orbit -> export) on tiny random
models, timed stage by stage by the pipeline's hooks.

The benchmark runs as a subprocess: it puts ``bench/`` on ``sys.path`` (to reuse the random model builders of
``bench/syncdreamer.py``, ``bench/sds.py`` and ``bench/svd.py``), which must not leak into the test session. The
input is the bundled 64 px demo clip (8 RGBA frames), so the test does not depend on ``../shared``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "e4d" / "data" / "cesium_man_demo"
STAGES = ["preprocess", "syncdreamer", "interpolate", "confidence", "fit", "orbit", "export"]


def _run(*args: str, timeout: float = 180.0) -> tuple[int, list[dict], str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    r = subprocess.run([sys.executable, str(REPO / "bench" / "e2e.py"), *args], cwd=str(REPO), env=env,
                       capture_output=True, text=True, timeout=timeout)
    recs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return r.returncode, recs, r.stderr


def test_tiny_chain_runs_every_stage_and_exports(tmp_path):
    out = tmp_path / "export"
    log = tmp_path / "e2e.jsonl"
    rc, recs, err = _run("--tiny", "--data", str(DEMO), "--out", str(out), "--json-out", str(log), "--repeat", "2")
    assert rc == 0, err[-3000:]
    assert [r["load"] for r in recs if "load" in r] == ["syncdreamer", "rife", "zero123"]  # built once
    summaries = [r for r in recs if r.get("summary")]
    assert [r["run"] for r in summaries] == [1, 2]  # --repeat 2: the same models run the chain twice
    stages = [r for r in recs if "stage" in r and r["run"] == 2]
    assert [r["stage"] for r in recs if "stage" in r] == STAGES * 2 and not any("error" in r for r in stages)
    summ = recs[-1]
    assert summ["summary"] is True and summ["mode"] == "video" and summ["offload"] is False
    assert summ["stages_s"] == {r["stage"]: r["s"] for r in stages}
    # the named parts inside the two model stages (device-synchronized; no graph capture on the CPU)
    sd, fit = summ["substages_s"]["syncdreamer"], summ["substages_s"]["fit"]
    assert list(sd) == ["prepare", "condition", "sampling", "decode", "to host", "alpha masks"]
    assert sum(sd.values()) <= summ["stages_s"]["syncdreamer"] and sd["sampling"] > 0
    assert list(fit) == ["setup", "SDS references", "SDS graph capture", "loop"] and fit["SDS graph capture"] == 0
    assert sum(fit.values()) == pytest.approx(summ["stages_s"]["fit"], abs=0.05)
    assert summ["total_s"] == pytest.approx(sum(summ["stages_s"].values()), abs=0.01)
    # the stages are timed inside the process's wall time, and the two model stages did measurable work
    assert summ["total_s"] + summ["load_s"] <= summ["wall_s"]
    assert summ["stages_s"]["syncdreamer"] > 0.01 and summ["stages_s"]["fit"] > 0.01
    assert summ["frames_in"] == 8 and summ["keyframes"] == 3  # 3 of the 8 demo frames through SyncDreamer-T
    assert summ["config"]["fit"]["iterations"] == 3 and summ["config"]["interpolation"]["multiplier"] == 2
    # exports exist and load back
    from e4d.export import load_native, read_ply

    g = load_native(out / "model.safetensors")
    assert g.means.shape == (summ["gaussians"], 4) and torch.isfinite(g.means).all()
    plys = sorted((out / "ply").glob("*.ply"))
    assert len(plys) == 2 and len(read_ply(plys[0])["x"]) > 0
    assert Path(summ["files"]["video"]).stat().st_size > 0
    # --json-out mirrors stdout
    assert [json.loads(x) for x in log.read_text().splitlines()] == recs


@pytest.fixture(scope="module")
def e2e():
    import importlib.util

    spec = importlib.util.spec_from_file_location("e4d_bench_e2e", REPO / "bench" / "e2e.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_missing_input_names_the_fix(e2e, tmp_path):
    with pytest.raises(FileNotFoundError, match="no input frames.*--data"):
        e2e.load_frames(tmp_path)


def test_full_size_needs_a_gpu(e2e):
    with pytest.raises(SystemExit, match="need a GPU"):
        e2e.main(["--quick", "--device", "cpu"])


def test_flags_reach_the_pipeline_config(e2e):
    args = e2e.parse(["--view-batch", "32", "--sds-every", "2", "--iterations", "7", "--orbit-res", "64"])
    c = e2e.pipeline_config(args)
    assert (c.sampler.view_batch, c.sds.every, c.fit.iterations, c.orbit.resolution) == (32, 2, 7, 64)
    assert (c.keyframes, c.sampler.steps, c.interpolation.multiplier) == (16, 50, 4)  # the pipeline's defaults


@pytest.mark.gpu
def test_quick_chain_on_gpu_with_offload(tmp_path):
    rc, recs, err = _run("--quick", "--offload", "--out", str(tmp_path), timeout=600)
    assert rc == 0, err[-3000:]
    summ = recs[-1]
    assert summ["summary"] and summ["peak_alloc_gb"] > 0 and summ["offload"] is True


def test_comfy_prompt_surgery_drops_av_nodes_and_their_consumers():
    """bench/e2e_comfy.py removes CreateVideo/SaveVideo (no PyAV on the GPU image) and everything fed by them."""
    import importlib.util

    sys.path.insert(0, str(REPO / "bench"))  # e2e_comfy imports its sibling e2e_comfy_setup
    try:
        spec = importlib.util.spec_from_file_location("e4d_bench_e2e_comfy", REPO / "bench" / "e2e_comfy.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(REPO / "bench"))
    prompt = {"1": {"class_type": "E4D_OrbitRender", "inputs": {"frames": 12}},
              "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 24.0}},
              "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0]}},
              "4": {"class_type": "E4D_Export4D", "inputs": {"frames": ["1", 0]}}}
    assert mod.drop_nodes(prompt, mod.AV_NODES) == ["2", "3"]
    assert sorted(prompt) == ["1", "4"]
    mod.set_inputs(prompt, "E4D_OrbitRender", frames=4)
    assert prompt["1"]["inputs"]["frames"] == 4
    with pytest.raises(ValueError, match="no E4D_Fit4DGS node"):
        mod.set_inputs(prompt, "E4D_Fit4DGS", iterations=3)
