"""The pack inside a real ComfyUI server (subprocess, CPU) on every CI lane (``comfy_env.LANES``: 0.3.75 and 0.30.0;
``$E4D_COMFY_LANES`` or ``$E4D_COMFY_ROOT`` narrow it): import, /object_info, templates, every example workflow end
to end with tiny models in the official formats, a rejected wrong link, throttled progress, and cancel mid-fit.

One server per lane and test session (``server`` fixture, parametrized by lane). Tiny models are written into its
models folders before it starts, tiny inputs into its input folder (``comfy_tiny``); the workflows are converted
from UI to API format here, using the server's own /object_info, with their sizes shrunk (``comfy_tiny.TINY``).
tests/browser/test_comfy_templates.py queues the same workflows through the real frontend instead.
"""
from __future__ import annotations

import json
import time

import pytest

from comfy_env import DEFAULT_LANE, lanes, require_comfy
from comfy_harness import PACK_NAME, REPO, PromptRejected, start_server
from comfy_ui_api import ui_to_api
from comfy_tiny import WORKFLOWS, error_text, load_workflow, pick_models, prepare_base, tiny_overrides

pytestmark = pytest.mark.comfy

PACK_NODES = ("E4D_LoadVideo", "E4D_PrepareObjectFrames", "E4D_LoadViewMatrix", "E4D_SaveViewMatrix",
              "E4D_AssembleViewMatrix", "E4D_Fit4DGS", "E4D_OrbitRender", "E4D_Export4D", "E4D_Load4DGaussians")


@pytest.fixture(scope="session", params=lanes())
def server(request, tmp_path_factory):
    require_comfy()
    base = tmp_path_factory.mktemp(f"comfy-{request.param}")
    missing = prepare_base(base)
    srv = start_server(base, lane=request.param)
    srv.missing_writers = missing
    yield srv
    srv.stop()


# ----------------------------------------------------------------------------------------------------------------
def test_pack_imports_cleanly(server):
    log = server.log_text()
    assert f"Cannot import {server.base / 'custom_nodes' / PACK_NAME}" not in log
    assert "Efficient4D: nodes of" not in log, "a node module of the pack failed to import:\n" + log[-3000:]
    assert server.start_seconds < 120


def test_object_info_lists_every_node_with_declared_inputs(server):
    import nodes as pack_nodes

    info = server.object_info()
    for node_id in PACK_NODES:
        assert node_id in info, f"{node_id} missing from /object_info"
    for cls in pack_nodes.load_node_classes():
        v1 = cls.GET_NODE_INFO_V1()
        got = info[v1["name"]]
        for section in ("required", "optional"):
            assert list(got["input"].get(section, {})) == list(v1["input"].get(section, {})), (v1["name"], section)
        assert got["output"] == v1["output"] and got["category"].startswith("Efficient4D")


def test_workflow_templates_are_listed_and_served(server):
    listed = server.get("/api/workflow_templates")
    assert sorted(listed.get(PACK_NAME, [])) == sorted(WORKFLOWS)
    wf = server.get(f"/api/workflow_templates/{PACK_NAME}/video_to_4d.json")
    assert wf["nodes"] and wf["links"]
    for name in WORKFLOWS:
        assert (REPO / "workflows" / f"{name}.jpg").is_file()
        notes = [n for n in load_workflow(name)["nodes"] if n["type"] == "Note"]
        assert any("models/" in n["widgets_values"][0] for n in notes), f"{name} lacks the weights note"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_example_workflow_runs(server, name):
    info = server.object_info(refresh=True)
    wf = load_workflow(name)
    types = {n["type"] for n in wf["nodes"]}
    lacking = [server.missing_writers[t] for t in types if t in server.missing_writers]
    if lacking:
        pytest.skip(f"{name}: " + "; ".join(lacking))
    unknown = sorted(t for t in types if t not in info and t != "Note")
    assert not unknown, f"{name} uses node types the server lacks: {unknown}"
    # strict on the lane the templates are built on: a stale template (widget values that no longer fit) fails
    prompt = ui_to_api(wf, info, tiny_overrides(name), strict=server.lane == DEFAULT_LANE)
    pick_models(prompt, info)
    out_dir = server.base / "output"
    before = set(out_dir.rglob("*"))
    t0 = time.monotonic()
    entry = server.run(prompt, timeout=240)
    assert entry["status"]["status_str"] == "success", error_text(entry)
    new = {p.relative_to(out_dir).as_posix() for p in set(out_dir.rglob("*")) - before}
    assert any(p.endswith(".e4d.safetensors") for p in new), new
    assert any(p.endswith(".splatv") for p in new) and any(p.endswith("_ply") for p in new), new
    assert any(p.endswith(".mp4") and p.startswith("efficient4d/orbit") for p in new), new  # core SaveVideo
    print(f"{server.lane} {name}: {time.monotonic() - t0:.1f} s")


def test_wrong_link_is_rejected(server):
    prompt = {
        "1": {"class_type": "E4D_LoadVideo", "inputs": {"video": "object_rgba.webm", "start_frame": 0, "stride": 1,
                                                       "max_frames": 2, "max_side": 0, "fps_if_unknown": 8.0}},
        "2": {"class_type": "E4D_Fit4DGS", "inputs": {"view_matrix": ["1", 0], "preset": "paper", "iterations": 2,
                                                     "num_points": 64, "times_per_batch": 1, "views_per_batch": 2,
                                                     "sh_degree": 0, "densify": "off", "use_input_view": True,
                                                     "lambda_sds": 1.0, "seed": 0, "backend": "reference",
                                                     "overrides": ""}},
        "3": {"class_type": "E4D_Export4D", "inputs": {"gaussians": ["2", 0], "filename_prefix": "bad/x",
                                                      "native": True, "ply_sequence": False, "ply_frames": 2,
                                                      "splatv": False, "video": False, "fps": 8.0}},
    }
    with pytest.raises(PromptRejected) as e:
        server.queue(prompt)
    errs = json.dumps(e.value.body)
    assert "2" in e.value.node_errors and "return_type_mismatch" in errs, errs


def _view_matrix_input(server) -> str:
    """A tiny saved view matrix (2 times x 4 views, 16 px) in the server's input folder; returns its name."""
    import torch

    from e4d.cameras import camera_preset
    from e4d.viewmatrix import ViewMatrix, save_view_matrix

    folder = server.base / "input" / "tiny_vm"
    if not folder.exists():
        save_view_matrix(ViewMatrix(torch.rand(2, 4, 16, 16, 3), camera_preset("custom", 16, azimuths=[0, 90, 180, 270],
                                                                               elevations=[30]),
                                    torch.tensor([0.0, 1.0])), folder)
    return folder.name


def _fit_prompt(vm: str, iterations: int, prefix: str) -> dict:
    return {
        "1": {"class_type": "E4D_LoadViewMatrix", "inputs": {"folder": vm, "views": "", "with_input_video": False}},
        "2": {"class_type": "E4D_Fit4DGS", "inputs": {"view_matrix": ["1", 0], "preset": "paper",
                                                     "iterations": iterations, "num_points": 32, "times_per_batch": 1,
                                                     "views_per_batch": 1, "sh_degree": 0, "densify": "off",
                                                     "use_input_view": False, "lambda_sds": 1.0, "seed": 1,
                                                     "backend": "reference", "overrides": ""}},
        "3": {"class_type": "E4D_Export4D", "inputs": {"gaussians": ["2", 0], "filename_prefix": prefix,
                                                      "native": True, "ply_sequence": False, "ply_frames": 2,
                                                      "splatv": False, "video": False, "fps": 8.0}},
    }


async def _progress_of(server, prompt: dict, timeout: float) -> tuple[list, dict]:
    """Queue ``prompt`` while listening on /ws: the (node, value, max) of every progress message it sent."""
    import asyncio

    import aiohttp

    client = f"e4d-progress-{time.monotonic_ns()}"
    seen = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws?clientId={client}") as ws:
            pid = server.queue(prompt, client_id=client)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    msg = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                d = data.get("data", {})
                if data.get("type") == "progress" and d.get("prompt_id") == pid:
                    seen.append((str(d.get("node")), d["value"], d["max"]))
                if d.get("prompt_id") == pid and data.get("type") in ("execution_success", "execution_error"):
                    break
    return seen, server.wait(pid, timeout=30)


def test_fit_progress_reaches_the_ui(server):
    """The fit reports progress over the websocket. ComfyUI 0.30+ throttles the bar (at most every 0.1 s and
    0.5 %; the first and last update always go out), so only those two and the order of the rest are certain."""
    import asyncio

    iterations = 40
    seen, entry = asyncio.run(_progress_of(server, _fit_prompt(_view_matrix_input(server), iterations,
                                                                   "progress/x"), timeout=120))
    assert entry["status"]["status_str"] == "success", error_text(entry)
    fit = [(v, m) for node, v, m in seen if node == "2"]
    assert len(fit) >= 2, f"fit progress messages: {seen}"
    values = [v for v, _ in fit]
    assert values == sorted(values) and values[-1] == fit[-1][1], f"not monotonic or not finished: {fit}"
    assert values[0] < values[-1] and len(fit) <= fit[-1][1] + 1, fit


def test_cancel_mid_fit_stops_the_run(server):
    pid = server.queue(_fit_prompt(_view_matrix_input(server), 100_000, "cancelled/x"))
    t0 = time.monotonic()
    while not server.running() and time.monotonic() - t0 < 30:
        time.sleep(0.1)
    time.sleep(2.0)  # well inside the 100k-step fit
    server.interrupt()
    t1 = time.monotonic()
    entry = server.wait(pid, timeout=60)
    assert time.monotonic() - t1 < 20, "the fit did not stop promptly after /interrupt"
    assert entry["status"]["status_str"] == "error"
    assert "execution_interrupted" in json.dumps(entry["status"]["messages"])
    assert not (server.base / "output" / "cancelled").exists() or not any((server.base / "output" / "cancelled").iterdir())
