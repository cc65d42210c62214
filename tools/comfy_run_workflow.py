"""Run one example workflow on a fresh headless ComfyUI (CPU) with the CI's tiny models and inputs.

For debugging a workflow outside pytest, and for finding where its time goes::

    python tools/comfy_run_workflow.py video_to_4d                 # CI sizes, prints status and seconds
    python tools/comfy_run_workflow.py image_to_4d --profile       # + per-node seconds (needs `pip install py-spy`)
    python tools/comfy_run_workflow.py video_to_4d --keep /tmp/w   # keep the server folder (log, outputs)
    python tools/comfy_run_workflow.py video_to_4d --lane 0.30.0   # another CI lane (E4D_COMFY_ROOT: any tree)

Prints one JSON line: workflow, status, seconds, error (if any), per-node seconds (with --profile).
"""
from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]


def node_seconds(raw_profile: Path, rate: int) -> dict[str, float]:
    """Seconds per node ``execute`` from a py-spy raw (collapsed stacks) profile."""
    c: collections.Counter = collections.Counter()
    for line in raw_profile.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        node = next((f.split(" (")[0] for f in stack.split(";") if ".execute (" in f and "nodes/" in f), "other")
        c[node] += int(n)
    return {k: round(v / rate, 2) for k, v in c.most_common()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workflow", help="name in workflows/ without .json")
    ap.add_argument("--profile", action="store_true", help="sample the server with py-spy (20 Hz)")
    ap.add_argument("--keep", help="server base folder to create and keep (default: a temporary one)")
    ap.add_argument("--lane", default=None, help="ComfyUI lane of tests/comfy_env.py (default: the in-process one)")
    args = ap.parse_args(argv)

    import comfy_env
    import comfy_tiny as T
    from comfy_harness import start_server
    from comfy_ui_api import ui_to_api

    comfy_env.make_importable()
    base = Path(args.keep or tempfile.mkdtemp(prefix="e4d-wf-"))
    shutil.rmtree(base, ignore_errors=True)
    missing = T.prepare_base(base)
    server = start_server(base, lane=args.lane)
    out = {"workflow": args.workflow, "lane": server.lane, "missing_writers": missing}
    try:
        info = server.object_info()
        prompt = ui_to_api(T.load_workflow(args.workflow), info, T.tiny_overrides(args.workflow), strict=True)
        T.pick_models(prompt, info)
        rec = None
        prof = base / "profile.txt"
        if args.profile:
            rec = subprocess.Popen(["py-spy", "record", "--pid", str(server.proc.pid), "-o", str(prof), "--format",
                                    "raw", "-r", "20"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        entry = server.run(prompt, timeout=900)
        out.update(status=entry["status"]["status_str"], seconds=round(time.monotonic() - t0, 1))
        if out["status"] != "success":
            out["error"] = T.error_text(entry)
        if rec is not None:
            rec.send_signal(2)
            rec.wait(60)
            out["node_seconds"] = node_seconds(prof, 20)
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(out))
    return 0 if out.get("status") == "success" else 1


if __name__ == "__main__":
    raise SystemExit(main())
