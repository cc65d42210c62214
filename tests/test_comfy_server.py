"""The pack inside a real ComfyUI 0.3.75 server (subprocess, CPU): import, /object_info, templates, every example
workflow end to end with tiny models in the official formats, a rejected wrong link, and cancel mid-fit.

One server per test session (``server`` fixture). Tiny models are written into its models folders before it
starts, tiny inputs into its input folder; the workflows are converted from UI to API format here, using the
server's own /object_info, with their sizes shrunk (TINY below).
"""
from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from comfy_env import require_comfy
from comfy_harness import PACK_NAME, REPO, PromptRejected, start_server, ui_to_api

pytestmark = pytest.mark.comfy

WORKFLOWS = ("video_to_4d", "image_to_4d", "sparse_two_frames_to_4d", "multiview_swap_to_4d")
PACK_NODES = ("E4D_LoadVideo", "E4D_PrepareObjectFrames", "E4D_LoadViewMatrix", "E4D_SaveViewMatrix",
              "E4D_AssembleViewMatrix", "E4D_Fit4DGS", "E4D_OrbitRender", "E4D_Export4D", "E4D_Load4DGaussians")
S = 64  # side of the tiny input frames

# CI sizes: applied by node type to every workflow (input names a node lacks are ignored).
TINY = {
    "E4D_LoadVideo": {"max_frames": 2, "stride": 1, "max_side": S},
    "E4D_PrepareObjectFrames": {"size": S, "crop_size": 50},
    "E4D_InterpolateViews": {"multiplier": 2},
    "E4D_InterpolateFrames": {"multiplier": 2},
    "E4D_SyncDreamerT": {"frames": 2, "steps": 1, "guidance": "cfg", "view_batch": 16},
    "E4D_SVDImageToVideo": {"frames": 2, "keep_frames": 2, "width": 64, "height": 64, "steps": 2, "decode_chunk": 2},
    "E4D_Zero123GuidanceLoader": {"refine_steps": 2},
    "E4D_Fit4DGS": {"iterations": 2, "num_points": 64, "times_per_batch": 1, "views_per_batch": 2,
                    "backend": "reference"},
    "E4D_OrbitRender": {"frames": 2, "resolution": 32, "backend": "reference"},
    "E4D_Export4D": {"ply_frames": 2, "splatv": True, "fps": 8.0},
    "E4D_Preview4D": {"max_gaussians": 64},
    "CreateVideo": {"fps": 8.0},
}
PER_WORKFLOW = {
    "multiview_swap_to_4d": {"E4D_LoadVideo": {"max_frames": 0}},  # all 2 x 6 views
    # a random tiny SVD paints no white background; key out more so its masks are not all "object"
    "image_to_4d": {"E4D_SVDImageToVideo": {"mask_threshold": 0.5}},
}
# model writers of the other stages: (module, function, folder under models/, needed by)
WRITERS = (
    ("tiny_syncdreamer", "write_tiny_syncdreamer", "syncdreamer", ("E4D_SyncDreamerLoader",)),
    ("tiny_rife", "write_tiny_rife", "rife", ("E4D_RIFELoader",)),
    ("tiny_svd", "write_tiny_svd", "diffusers/stable-video-diffusion-img2vid-xt", ("E4D_SVDLoader",)),
    ("tiny_zero123", "write_tiny_zero123", "diffusers/zero123-xl-diffusers", ("E4D_Zero123GuidanceLoader",)),
)


# ----------------------------------------------------------------------------------------------------------------
# tiny inputs
# ----------------------------------------------------------------------------------------------------------------
def _object_frames(shared: Path, n: int) -> list[np.ndarray]:
    """n RGBA uint8 frames S x S: CesiumMan's input frames when the shared data is there, else a moving disc."""
    from PIL import Image

    src = shared / "data" / "cesium_man_walk" / "input"
    if src.is_dir():
        files = sorted(src.glob("f*.png"))[:n]
        return [np.asarray(Image.open(f).convert("RGBA").resize((S, S), Image.BICUBIC)) for f in files]
    yy, xx = np.mgrid[:S, :S]
    out = []
    for i in range(n):
        a = np.zeros((S, S, 4), np.uint8)
        a[..., :3] = (200, 60 + 40 * i, 40)
        a[..., 3] = (((xx - S / 2 - 3 * i) ** 2 + (yy - S / 2) ** 2) < (S / 4) ** 2) * 255
        out.append(a)
    return out


def write_inputs(input_dir: Path, shared: Path) -> None:
    import av
    from PIL import Image

    frames = _object_frames(shared, 4)
    with av.open(str(input_dir / "object_rgba.webm"), "w") as c:  # VP9 with alpha, like a real RGBA clip
        s = c.add_stream("libvpx-vp9", rate=8)
        s.width, s.height, s.pix_fmt = S, S, "yuva420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgba")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    Image.fromarray(frames[0]).save(input_dir / "object_rgba.png")
    Image.fromarray(frames[0]).save(input_dir / "object_t0.png")
    Image.fromarray(frames[3]).save(input_dir / "object_t1.png")
    mv = input_dir / "multiview_views"
    mv.mkdir()
    for t in range(2):
        for v in range(6):  # a view matrix of 2 times x 6 views (zero123plus6), time-major
            Image.fromarray(np.roll(frames[t], 4 * v, axis=1)).save(mv / f"t{t}_v{v}.png")


def write_models(models: Path) -> dict[str, str]:
    """Tiny models of every stage whose writer exists; returns {loader node type: reason it is unavailable}."""
    missing = {}
    for module, func, sub, loaders in WRITERS:
        try:
            writer = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as e:
            for node in loaders:
                missing[node] = f"tests/{module}.py:{func} not available ({e})"
            continue
        target = models / sub
        target.parent.mkdir(parents=True, exist_ok=True)
        writer(target)
    return missing


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    require_comfy()
    base = tmp_path_factory.mktemp("comfy")
    (base / "input").mkdir()
    write_inputs(base / "input", Path(os.environ.get("E4D_SHARED", REPO.parent / "shared")))
    missing = write_models(base / "models")
    t0 = time.monotonic()
    srv = start_server(base)
    srv.start_seconds = time.monotonic() - t0
    srv.missing_writers = missing
    yield srv
    srv.stop()


def _load_workflow(name: str) -> dict:
    return json.loads((REPO / "workflows" / f"{name}.json").read_text())


def _pick_models(prompt: dict, info: dict) -> None:
    """Point every model dropdown that names a file this server lacks at the tiny model that is there."""
    for entry in prompt.values():
        spec = info[entry["class_type"]]["input"]
        for name, val in list(entry["inputs"].items()):
            s = spec.get("required", {}).get(name) or spec.get("optional", {}).get(name)
            if not s or isinstance(val, list):
                continue
            options = s[0] if isinstance(s[0], list) else (s[1].get("options") if len(s) > 1 else None)
            if options and val not in options:
                real = [o for o in options if not str(o).startswith("<")]
                if real:
                    entry["inputs"][name] = real[0]


def _error_text(entry: dict) -> str:
    for kind, data in entry["status"].get("messages", []):
        if kind == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}): {data.get('exception_message')}\n"
                    + "".join(data.get("traceback", []))[-2500:])
    return json.dumps(entry["status"])[-2000:]


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
        notes = [n for n in _load_workflow(name)["nodes"] if n["type"] == "Note"]
        assert any("models/" in n["widgets_values"][0] for n in notes), f"{name} lacks the weights note"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_example_workflow_runs(server, name):
    info = server.object_info(refresh=True)
    wf = _load_workflow(name)
    types = {n["type"] for n in wf["nodes"]}
    lacking = [server.missing_writers[t] for t in types if t in server.missing_writers]
    if lacking:
        pytest.skip(f"{name}: " + "; ".join(lacking))
    unknown = sorted(t for t in types if t not in info and t != "Note")
    assert not unknown, f"{name} uses node types the server lacks: {unknown}"
    tiny = {k: {**v, **PER_WORKFLOW.get(name, {}).get(k, {})} for k, v in TINY.items()}
    prompt = ui_to_api(wf, info, tiny, strict=True)
    _pick_models(prompt, info)
    out_dir = server.base / "output"
    before = set(out_dir.rglob("*"))
    t0 = time.monotonic()
    entry = server.run(prompt, timeout=240)
    assert entry["status"]["status_str"] == "success", _error_text(entry)
    new = {p.relative_to(out_dir).as_posix() for p in set(out_dir.rglob("*")) - before}
    assert any(p.endswith(".e4d.safetensors") for p in new), new
    assert any(p.endswith(".splatv") for p in new) and any(p.endswith("_ply") for p in new), new
    assert any(p.endswith(".mp4") and p.startswith("efficient4d/orbit") for p in new), new  # core SaveVideo
    print(f"{name}: {time.monotonic() - t0:.1f} s")


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


def test_cancel_mid_fit_stops_the_run(server):
    import torch

    from e4d.cameras import camera_preset
    from e4d.viewmatrix import ViewMatrix, save_view_matrix

    folder = server.base / "input" / "cancel_vm"
    if not folder.exists():
        save_view_matrix(ViewMatrix(torch.rand(2, 4, 16, 16, 3), camera_preset("custom", 16, azimuths=[0, 90, 180, 270],
                                                                               elevations=[30]),
                                    torch.tensor([0.0, 1.0])), folder)
    prompt = {
        "1": {"class_type": "E4D_LoadViewMatrix", "inputs": {"folder": "cancel_vm", "views": "",
                                                            "with_input_video": False}},
        "2": {"class_type": "E4D_Fit4DGS", "inputs": {"view_matrix": ["1", 0], "preset": "paper",
                                                     "iterations": 100_000, "num_points": 32, "times_per_batch": 1,
                                                     "views_per_batch": 1, "sh_degree": 0, "densify": "off",
                                                     "use_input_view": False, "lambda_sds": 1.0, "seed": 1,
                                                     "backend": "reference", "overrides": ""}},
        "3": {"class_type": "E4D_Export4D", "inputs": {"gaussians": ["2", 0], "filename_prefix": "cancelled/x",
                                                      "native": True, "ply_sequence": False, "ply_frames": 2,
                                                      "splatv": False, "video": False, "fps": 8.0}},
    }
    pid = server.queue(prompt)
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
