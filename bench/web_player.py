"""Frame time of the 4D player (web/js/e4d_player.js) in headless Chromium, against a static 3DGS of the same count.

Usage: ``python bench/web_player.py [--n 50000] [--size 512] [--frames 20]``; prints one JSON line.

Headless Chromium with ``--disable-gpu`` rasterises WebGL on the CPU (SwiftShader), so absolute figures are far
slower than any laptop GPU; the point is the ratio in the same run:

* ``static3dgs``:   the player with time slicing switched off (u_static=1): a plain 3DGS of N Gaussians.
* ``4d_all_alive``: the same N Gaussians with every temporal marginal > 0.05 (huge temporal scale), drawn through
  the full 4D slicing path: the cost of slicing itself at equal instance count.
* ``4d_moving``:    a moving object (sigma_t = 0.1): what a fit looks like; temporal culling draws fewer.
Sort times are the Web Worker's (off the main thread).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "browser"))

from e4d.export.compact4d import write_compact4d  # noqa: E402
from e4d_cdp import Chromium, StaticServer  # noqa: E402
from e4d_scene import moving_blob  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="number of Gaussians")
    ap.add_argument("--size", type=int, default=512, help="canvas size in CSS px (the page is size x (size+32))")
    ap.add_argument("--frames", type=int, default=20, help="frames timed per case")
    ap.add_argument("--scale", type=float, default=0.008, help="spatial std of each Gaussian")
    args = ap.parse_args()

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "web").symlink_to(REPO / "web", target_is_directory=True)
        write_compact4d(moving_blob(args.n, scale=args.scale), root / "moving.e4dc")
        write_compact4d(moving_blob(args.n, scale=args.scale, static_time=True), root / "alive.e4dc")
        results = {}
        with StaticServer(root) as server, Chromium(width=args.size, height=args.size + 32, timeout=300) as b:
            for file, cases in (("alive.e4dc", (("static3dgs", True), ("4d_all_alive", False))),
                                ("moving.e4dc", (("4d_moving", False),))):
                b.goto(f"{server.url}/web/player.html?file=/{file}&autoplay=0")
                ready = b.evaluate("window.e4dReady", timeout=300)
                if not ready.get("ok"):
                    raise RuntimeError(f"player failed: {ready}; console: {b.console[-10:]}")
                for name, is_static in cases:
                    r = b.evaluate(f"e4dPlayer.benchmark({{frames: {args.frames}, isStatic: {str(is_static).lower()},"
                                   f" time: 0.5}})", timeout=600)
                    results[name] = r
            ua = b.evaluate("navigator.userAgent")
            renderer = b.evaluate("(() => { const gl = document.createElement('canvas').getContext('webgl2');"
                                  " const e = gl.getExtension('WEBGL_debug_renderer_info');"
                                  " return e ? gl.getParameter(e.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER); })()")
    s, a, m = results["static3dgs"], results["4d_all_alive"], results["4d_moving"]
    print(json.dumps({
        "bench": "web_player", "n": args.n, "canvas": [s["width"], s["height"]], "renderer": renderer,
        "chromium": ua.split("Chrome/")[-1].split(" ")[0],
        "static3dgs_frame_ms": round(s["frameMsMedian"], 2), "static3dgs_drawn": s["visible"],
        "4d_all_alive_frame_ms": round(a["frameMsMedian"], 2), "4d_all_alive_drawn": a["visible"],
        "4d_moving_frame_ms": round(m["frameMsMedian"], 2), "4d_moving_drawn": m["visible"],
        "slicing_overhead_ratio": round(a["frameMsMedian"] / s["frameMsMedian"], 3),
        "sort_ms_static": round(s["sortMsMedian"], 2), "sort_ms_4d_all_alive": round(a["sortMsMedian"], 2),
        "sort_ms_4d_moving": round(m["sortMsMedian"], 2),
        "wall_s": round(time.perf_counter() - t_start, 1),
    }))


if __name__ == "__main__":
    main()
