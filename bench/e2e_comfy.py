"""The example workflows on a real ComfyUI (0.30.0 by default, 0.3.75 with --lane) with this pack, on the GPU, with
full-size random models.

What it does (one command, on the GPU machine after ``source .device/bootstrap.sh``; see docs/e2e.md):
1. installs the carried ComfyUI start-up wheels (``.devcomfy/whl``, made by ``tools/device_comfy_prepare.sh``) into
   ``<work>/site`` when this Python lacks them, extracts the lane's ComfyUI tree from its pinned archive
   (tests/comfy_env.py LANES; carried in ``.devcomfy/comfy``), gives it import-only stubs of PyAV and comfy-kitchen
   when they are missing (too big to carry; without PyAV the core CreateVideo/SaveVideo nodes are dropped from the
   prompt, E4D_Export4D still writes the orbit mp4; without comfy-kitchen ComfyUI takes its no-fp8 path), and
   installs the measuring probe ``bench/e2e_comfy_probe.py`` as a custom node package;
2. writes FULL-SIZE RANDOM models in the official formats under the names the workflows expect (in a subprocess, so
   its CUDA memory is gone before the server starts): ``syncdreamer/syncdreamer-pretrain.ckpt`` (Lightning
   ``{'state_dict'}``, fp16: 2.8 GB), ``rife/rife47.pth``, ``diffusers/zero123-xl-diffusers/`` and (image-to-4D)
   ``diffusers/stable-video-diffusion-img2vid-xt/``, then evicts them from the OS page cache (unless
   ``--keep-page-cache``), so the first run after the server start reads them from disk;
3. puts the 32-frame RGBA input into ``input/cesium_man_walk/`` (and frame 0 as ``input/object_rgba.png``), starts
   ``main.py --listen 127.0.0.1 --disable-api-nodes --front-end-root <empty> --base-directory <work>/base`` (GPU mode;
   ``--cpu`` only with ``--tiny``), converts ``workflows/video_to_4d.json`` / ``image_to_4d.json`` from UI to API
   format with the test harness's converter, queues them, and reports as JSON lines, per run and per node: wall time
   (websocket ``executing`` events), the device's memory (``nvidia-smi`` sampled every 100 ms: whole device, CUDA
   context and PyTorch's cache included), PyTorch's own peaks inside the server and the models ComfyUI's memory
   manager holds (the probe), and ``queue_to_first_step_s``: from POST /prompt to the end of SyncDreamer-T's first
   DDIM step (its first progress message).

    python bench/e2e_comfy.py                     # both workflows, full settings
    python bench/e2e_comfy.py --workflows video --repeat 2   # run 1 = first after the start (cold), run 2 warm
    python bench/e2e_comfy.py --workflows video --quick
    python bench/e2e_comfy.py --fast --repeat 2   # compiled SyncDreamer, SDS every 2nd step; run 2 = warm session
    python bench/e2e_comfy.py --workflows video --repeat 2 --vram-gb 12   # ComfyUI managing memory as on a 12 GiB card
    python bench/e2e_comfy.py --tiny              # CPU check of the whole path with tiny models (--cpu server)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "tests")]
from common import cesium_data  # noqa: E402
from e2e_comfy_measure import GpuSampler, WsRecorder, first_step_at, node_timings, table  # noqa: E402
from e2e_comfy_setup import (REPO, comfy_root, default_lane, evict_page_cache, import_stubs,  # noqa: E402
                             install_probe, site_dir, tv_stub, write_models)

AV_NODES = ("CreateVideo", "SaveVideo")


def emit(rec: Dict[str, Any], path: Optional[Path]) -> None:
    line = json.dumps(rec, default=str)
    print(line, flush=True)
    if path is not None:
        with open(path, "a") as f:
            f.write(line + "\n")


# ------------------------------------------------------------------------------------------------------------------
# workflows -> prompts
# ------------------------------------------------------------------------------------------------------------------
def drop_nodes(prompt: dict, types: tuple) -> list:
    """Remove nodes of ``types`` and, transitively, every node that consumes one of them; returns removed ids."""
    gone = {k for k, v in prompt.items() if v["class_type"] in types}
    while True:
        more = {k for k, v in prompt.items() if k not in gone and any(
            isinstance(x, list) and len(x) == 2 and str(x[0]) in gone for x in v["inputs"].values())}
        if not more:
            break
        gone |= more
    for k in gone:
        prompt.pop(k)
    return sorted(gone)


def set_inputs(prompt: dict, class_type: str, **values) -> None:
    hits = [v for v in prompt.values() if v["class_type"] == class_type]
    if not hits:
        raise ValueError(f"the workflow has no {class_type} node; it changed: update bench/e2e_comfy.py's overrides")
    for v in hits:
        v["inputs"].update(values)


def make_prompt(name: str, object_info: dict, args: argparse.Namespace, av_missing: bool) -> tuple[dict, list]:
    """The API prompt of ``workflows/<name>.json`` with our inputs; returns (prompt, notes on what was changed)."""
    sys.path.insert(0, str(REPO / "tests"))
    from comfy_ui_api import ui_to_api

    path = REPO / "workflows" / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: the example workflows are built by workflows/build_workflows.py")
    prompt = ui_to_api(json.loads(path.read_text()), object_info)
    notes = []
    if name == "video_to_4d":
        set_inputs(prompt, "E4D_LoadVideo", video="cesium_man_walk/", start_frame=0, stride=1, max_frames=0)
        notes.append("E4D_LoadVideo reads the 32 RGBA PNGs of input/cesium_man_walk/ (all frames; K = 16 picked by "
                     "SyncDreamer-T)")
    else:
        # Random SVD weights make noise frames whose white-background masks are meaningless, so the second Prepare
        # (which needs a silhouette) cannot run: SyncDreamer-T takes SVD's square frames as prepared frames instead.
        svd_id = next(k for k, v in prompt.items() if v["class_type"] == "E4D_SVDImageToVideo")
        set_inputs(prompt, "E4D_SVDImageToVideo", width=args.svd_size, height=args.svd_size)
        sdt = next(v for v in prompt.values() if v["class_type"] == "E4D_SyncDreamerT")
        sdt["inputs"]["images"] = [svd_id, 0]
        sdt["inputs"].pop("mask", None)
        sdt["inputs"]["prepare"] = "none"
        prep = [k for k, v in prompt.items() if v["class_type"] == "E4D_PrepareObjectFrames"
                and v["inputs"].get("images", [None])[0] == svd_id]
        for k in prep:
            prompt.pop(k)
        notes.append(f"SVD at {args.svd_size}x{args.svd_size} (the size the chain needs; the workflow default is "
                     f"1024x576); the Prepare node after SVD ({prep}) is bypassed: random SVD weights give "
                     "noise frames without a usable silhouette, so SyncDreamer-T takes SVD's frames as prepared")
    if args.fast:  # the settings measured fastest in bench/e2e.py that the nodes expose
        set_inputs(prompt, "E4D_SyncDreamerLoader", compile="default")
        set_inputs(prompt, "E4D_SyncDreamerT", view_batch=32)
        set_inputs(prompt, "E4D_Zero123GuidanceLoader", every=2)
        notes.append("--fast: SyncDreamer compile=default (one-off compile in the first run), view_batch 32, "
                     "SDS every 2nd fit step")
    if av_missing:
        gone = drop_nodes(prompt, AV_NODES)
        if gone:
            notes.append(f"no PyAV on this machine: dropped {gone} (CreateVideo/SaveVideo); E4D_Export4D writes the mp4")
    if args.quick or args.tiny:
        set_inputs(prompt, "E4D_SyncDreamerT", steps=2 if args.tiny else 5)
        set_inputs(prompt, "E4D_Fit4DGS", iterations=3 if args.tiny else 50)
        set_inputs(prompt, "E4D_OrbitRender", frames=4 if args.tiny else 12)
        if name == "image_to_4d":
            set_inputs(prompt, "E4D_SVDImageToVideo", steps=2 if args.tiny else 3)
    if args.tiny:  # CPU: small everything (the tiny SyncDreamer works at 64 px, the tiny SVD has 4 frames)
        set_inputs(prompt, "E4D_SyncDreamerT", frames=3, prepare="none")  # keep the 64 px frames (auto: 256)
        set_inputs(prompt, "E4D_PrepareObjectFrames", size=64, crop_size=50)
        set_inputs(prompt, "E4D_Fit4DGS", num_points=300, views_per_batch=2, times_per_batch=2)
        set_inputs(prompt, "E4D_OrbitRender", resolution=32)
        set_inputs(prompt, "E4D_Export4D", ply_frames=2)
        if name == "image_to_4d":
            set_inputs(prompt, "E4D_SVDImageToVideo", width=64, height=64, frames=4, keep_frames=3)
        notes.append("--tiny: tiny models, 3 key frames, 64 px, 2 DDIM steps, 3 fit iterations (CPU check)")
    return prompt, notes


def put_inputs(base: Path, data: Path) -> None:
    frames = sorted((data / "input").glob("*.png"))
    if not frames:
        raise SystemExit(f"no input frames in {data / 'input'}: pass --data or run tools/device_comfy_prepare.sh")
    dst = base / "input" / "cesium_man_walk"
    dst.mkdir(parents=True, exist_ok=True)
    for f in frames:
        shutil.copy(f, dst / f.name)
    shutil.copy(frames[0], base / "input" / "object_rgba.png")


# ------------------------------------------------------------------------------------------------------------------
# server
# ------------------------------------------------------------------------------------------------------------------
def start(root: Path, base: Path, pythonpath: List[Path], tv: Optional[Path], cpu: bool, port: int,
          extra: Sequence[str] = ()):
    sys.path.insert(0, str(REPO / "tests"))
    from comfy_harness import PACK_NAME, ComfyServer

    for sub in ("custom_nodes", "models", "input", "output", "temp", "user", "fe_empty"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_NAME
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(p) for p in pythonpath] + [env.get("PYTHONPATH", "")]).strip(os.pathsep)
    flags = ["--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch", "--disable-api-nodes",
             "--front-end-root", str(base / "fe_empty"), "--base-directory", str(base)] + (["--cpu"] if cpu else [])
    flags += list(extra)
    if tv is not None:  # the CI's launcher: torchvision stub for ComfyUI's own start-up only
        cmd = [sys.executable, str(REPO / "tests" / "comfy_launch.py"), str(root), str(tv), *flags]
    else:
        cmd = [sys.executable, str(root / "main.py"), *flags]
    log_path = base / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=str(root), env=env, stdout=log, stderr=subprocess.STDOUT)
    server = ComfyServer(base, port, proc, log_path)
    t0 = time.monotonic()
    while True:
        text = server.log_text()
        if f"Cannot import {link}" in text or "Error while calling comfy_entrypoint" in text:
            server.stop()
            raise SystemExit(f"ComfyUI could not import the pack; log:\n{server.log_tail(80)}")
        server.check_alive()
        try:
            if server.request("/system_stats", timeout=2.0)[0] == 200:
                return server, time.monotonic() - t0
        except OSError:
            pass
        if time.monotonic() - t0 > 240:
            server.stop()
            raise SystemExit(f"ComfyUI did not answer in 240 s; log:\n{server.log_tail(80)}")
        time.sleep(0.25)


def run_workflow(server, name: str, prompt: dict, gpu: GpuSampler, timeout: float) -> Dict[str, Any]:
    import re

    client = f"e4d-e2e-{uuid.uuid4().hex[:8]}"
    ws = WsRecorder(server.url, client)
    ws.start()
    ws.ready.wait(10)
    log_before = len(server.log_text())
    t0 = time.perf_counter()
    base_gb = gpu.peak(t0 - 1.0, t0)
    pid = server.queue(prompt, client_id=client)
    try:
        entry = server.wait(pid, timeout)
    except TimeoutError:  # report how far it got, then stop the run so the next workflow starts clean
        server.interrupt()
        entry = {"status": {"status_str": f"timeout after {timeout:.0f} s"}}
    t1 = time.perf_counter()
    time.sleep(0.3)
    ws.done.set()
    ws.join(5)
    log = server.log_text()[log_before:]
    m = re.findall(r"Prompt executed in ([0-9.:]+)", log)
    status = entry.get("status", {})
    try:
        probe = server.request("/e4d_bench/peaks", timeout=5.0)[1]
    except OSError:
        probe = None
    probe = probe if isinstance(probe, list) else []  # no probe: figures from the websocket and nvidia-smi only
    sdt = next((k for k, v in prompt.items() if v["class_type"] == "E4D_SyncDreamerT"), None)
    t_step = first_step_at(ws.events, pid, sdt)
    rec = {"bench": "e2e_comfy", "workflow": name, "status": status.get("status_str"), "wall_s": round(t1 - t0, 2),
           "comfy_prompt_executed": m[-1] if m else None, "gpu_peak_gb": gpu.peak(t0, t1),
           "gpu_before_gb": base_gb,
           "queue_to_first_step_s": round(t_step - t0, 2) if t_step is not None else None,
           "torch_peak_alloc_gb": max((r["torch_peak_alloc_gb"] for r in probe
                                       if r.get("prompt_id") == pid and "torch_peak_alloc_gb" in r), default=None),
           "nodes": node_timings(ws.events, pid, prompt, gpu, t1, probe),
           "outputs": sum(len(v) for o in entry.get("outputs", {}).values() for v in o.values() if isinstance(v, list))}
    if ws.error:
        rec["ws_error"] = ws.error
    if rec["status"] != "success":
        rec["messages"] = json.dumps(status.get("messages", []))[-3000:]
        rec["log_tail"] = server.log_tail(40)
    return rec


def reserve_vram_flags(vram_gb: float) -> List[str]:
    """ComfyUI flags that leave its memory manager ``vram_gb`` GiB of this card: ``--reserve-vram`` (GiB it must
    leave to other software) = total − ``vram_gb``. Only ComfyUI's decisions (which models stay loaded, what is
    offloaded before a node runs) see the smaller card; the nvidia-smi peak then shows whether our nodes' requests
    (``memory_required``, ``reserve_memory``) keep the whole workflow inside it."""
    import torch

    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    if not 0 < vram_gb < total:
        raise SystemExit(f"--vram-gb must be between 0 and this card's {total:.1f} GiB, got {vram_gb}")
    return ["--reserve-vram", f"{total - vram_gb:.2f}"]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workflows", default="video,image", help="comma list of video, image")
    ap.add_argument("--quick", action="store_true", help="5 DDIM steps, 50 fit iterations, 12 orbit frames")
    ap.add_argument("--tiny", action="store_true", help="tiny models, ComfyUI in --cpu mode (CPU check)")
    ap.add_argument("--fast", action="store_true",
                    help="SyncDreamer compile=default + view_batch 32, SDS every 2nd step (use with --repeat 2)")
    ap.add_argument("--repeat", type=int, default=1, help="queue each workflow this many times (new seed each)")
    ap.add_argument("--svd-size", type=int, default=256, help="SVD width = height in image_to_4d")
    ap.add_argument("--work", type=Path, default=Path("/tmp/e4d_comfy"), help="scratch folder (models go here)")
    ap.add_argument("--data", type=Path, default=None, help="folder with input/*.png (default cesium_man_walk)")
    ap.add_argument("--lane", default=None,
                    help="ComfyUI version (tests/comfy_env.py LANES: 0.30.0, 0.3.75); default: the lane "
                         "tools/device_comfy_prepare.sh carried in .devcomfy, else 0.30.0")
    ap.add_argument("--keep-page-cache", action="store_true",
                    help="do not evict the model files from the OS page cache before the server starts (by default "
                         "the first run reads them from disk, as after a reboot)")
    ap.add_argument("--port", type=int, default=8199)
    ap.add_argument("--vram-gb", type=float, default=None,
                    help="make ComfyUI manage memory as on a card of this many GiB (its --reserve-vram set to the "
                         "rest of this card): shows that the peak follows the settings, not the size of the GPU")
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per workflow")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--av-stub", action="store_true",
                    help="use the import-only stubs (PyAV, comfy-kitchen) even where the packages exist (check)")
    ap.add_argument("--write-models", type=Path, default=None, help=argparse.SUPPRESS)  # subprocess entry
    ap.add_argument("--with-svd", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.write_models is not None:
        print(json.dumps(write_models(args.write_models, args.tiny, args.with_svd)), flush=True)
        return 0
    names = {"video": "video_to_4d", "image": "image_to_4d"}
    flows = [names[w.strip()] for w in args.workflows.split(",") if w.strip()]
    data = args.data or cesium_data("input")
    t_all = time.perf_counter()
    work = args.work.resolve()
    base = work / ("base_tiny" if args.tiny else "base")
    work.mkdir(parents=True, exist_ok=True)
    lane = args.lane or default_lane()
    site, (stubs, stubbed), tv = site_dir(work, lane), import_stubs(work, args.av_stub), tv_stub()
    root = comfy_root(work, lane)
    put_inputs(base, data)
    install_probe(base)
    # models: written by a child process so its CUDA memory is released before ComfyUI starts
    t0 = time.perf_counter()
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--write-models", str(base / "models")]
    cmd += (["--tiny"] if args.tiny else []) + (["--with-svd"] if "image_to_4d" in flows else [])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"writing the random models failed:\n{r.stderr[-3000:]}")
    emit({"bench": "e2e_comfy", "event": "models", "s": round(time.perf_counter() - t0, 2),
          "models": json.loads(r.stdout.strip().splitlines()[-1]),
          "page_cache": "kept" if args.keep_page_cache else evict_page_cache(base / "models")}, args.json_out)
    import torch

    cpu = args.tiny or not torch.cuda.is_available()
    gpu = GpuSampler()
    gpu.start()
    pypath = [p for p in (stubs, site) if p is not None]  # the stubs must shadow
    extra = reserve_vram_flags(args.vram_gb) if args.vram_gb and not cpu else []
    server, up_s = start(root, base, pypath, tv, cpu, args.port, extra)
    rc, tables = 0, []
    try:
        info = server.object_info()
        missing = [n for n in ("E4D_SyncDreamerT", "E4D_Fit4DGS", "E4D_RIFELoader") if n not in info]
        emit({"bench": "e2e_comfy", "event": "server", "lane": lane, "start_s": round(up_s, 2), "cpu": cpu,
              "stubs": stubbed, "server_flags": extra, "probe": server.request("/e4d_bench/peaks", timeout=5.0)[0] == 200,
              "e4d_nodes": sorted(k for k in info if k.startswith("E4D_")), "missing": missing}, args.json_out)
        for name, run_i in [(f, i) for f in flows for i in range(args.repeat)]:
            try:
                prompt, notes = make_prompt(name, info, args, "av" in stubbed)
                if run_i:  # a new seed, or ComfyUI's cache would answer the whole prompt without running it;
                    # the loaders' outputs (models, compiled graphs) stay cached, as in an interactive session
                    set_inputs(prompt, "E4D_SyncDreamerT", seed=run_i)
                    if name == "image_to_4d":
                        set_inputs(prompt, "E4D_SVDImageToVideo", seed=run_i)
                    notes.append(f"run {run_i + 1} of {args.repeat}: new generator seeds ({run_i}), loaders cached")
                rec = run_workflow(server, name, prompt, gpu, args.timeout)
                rec["run"] = run_i + 1
            except Exception as e:  # noqa: BLE001 -- a rejected prompt must not hide the other workflow's figures
                rec, notes = {"bench": "e2e_comfy", "workflow": name, "status": "error",
                              "error": f"{type(e).__name__}: {str(e)[:3000]}", "log_tail": server.log_tail(40)}, []
            rec["notes"] = notes
            rec["quick"], rec["tiny"] = args.quick, args.tiny
            emit(rec, args.json_out)
            rc |= int(rec["status"] != "success")
            tables.append(table(rec))
    finally:
        server.stop()
        gpu.stop()
    emit({"bench": "e2e_comfy", "event": "done", "wall_s": round(time.perf_counter() - t_all, 2), "rc": rc},
         args.json_out)
    print("\n".join(tables), flush=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
