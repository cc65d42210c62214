"""The embedded default job (``python -m e4d demo``) and the script that builds its bundled data.

The bundled view matrix ``e4d/data/cesium_man_demo`` is a downscaled subset of the team's CesiumMan data
(``shared/data/cesium_man_walk``): 64 x 64 px, 8 times (every other GT time), the 16 ring views + the 4
held-out views and the input-video frames at those times, in the standard folder layout. "Cesium Man" by Cesium,
CC-BY 4.0 (see ``ATTRIBUTION.md`` beside the data). Rebuild it with
``python -m e4d.demo --build-data ../shared/data/cesium_man_walk``.

The demo fits views 0-15 (+ the input view), reports PSNR/SSIM on the held-out views 16-19, and writes an orbit
video, the per-time PLY sequence and the native 4D file. On CUDA it runs the paper's full config; on CPU a
reduced config (stated in its output) so it finishes in a few minutes on two busy cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch

DEMO_DATA = Path(__file__).resolve().parent / "data" / "cesium_man_demo"
TRAIN_VIEWS = list(range(16))
TEST_VIEWS = [16, 17, 18, 19]
ATTRIBUTION = """# Attribution

This folder is a downscaled subset (64x64 px, 8 of 16 timestamps, 20 views + input frames) of the team's
CesiumMan walk-cycle dataset, rendered from the Khronos glTF sample model "CesiumMan".

"Cesium Man" by Cesium (https://cesium.com), from the Khronos glTF Sample Models, CC-BY 4.0.
Rendered, rescaled and re-posed for this dataset.

License: CC-BY 4.0 International with trademark limitations (SPDX LicenseRef-CC-BY-TM) plus the Cesium
trademark/logo (LicenseRef-LegalMark-Cesium), per KhronosGroup/glTF-Sample-Assets `Models/CesiumMan/LICENSE.md`.
"Cesium Man" was donated by Cesium for glTF testing.

Layout: `cameras.json` (intrinsics scaled to 64 px: fx = fy = 70, cx = cy = 32; OpenCV world-to-camera, +Z up),
`views/vVV/tTT.png` (RGBA, RGB composited on white), `input/fKK.png` (the input view, azimuth 0, elevation 0).
Views 00-15: ring at elevation 30 deg, azimuth 22.5 deg * i. Views 16-19: held out, (az, el) = (56.25, 0),
(146.25, 15), (236.25, 0), (326.25, 15). Rebuild: `python -m e4d.demo --build-data ../shared/data/cesium_man_walk`.
"""


def downscale_view_matrix(vm, size: int):
    """``vm`` at ``size`` x ``size`` px: area filter on RGB (on white) and alpha separately, which commutes with
    the compositing; intrinsics scaled with :meth:`Cameras.resized`."""
    import torch.nn.functional as F

    from .viewmatrix import ViewMatrix

    if (vm.W, vm.H) == (size, size):
        return vm

    def shrink(x: torch.Tensor) -> torch.Tensor:  # [..., H, W, c]
        lead, c = x.shape[:-3], x.shape[-1]
        y = F.interpolate(x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2), size=(size, size), mode="area")
        return y.permute(0, 2, 3, 1).reshape(*lead, size, size, c)

    a = lambda x: None if x is None else shrink(x[..., None])[..., 0]  # noqa: E731
    return ViewMatrix(shrink(vm.images), vm.cameras.resized(size, size), vm.times, a(vm.alpha),
                      shrink(vm.input_images) if vm.input_images is not None else None, a(vm.input_alpha),
                      vm.input_camera.resized(size, size) if vm.input_camera is not None else None)


def build_demo_data(src, dst=DEMO_DATA, size: int = 64, time_stride: int = 2, overwrite: bool = True) -> Path:
    """Write the bundled demo view matrix from the full CesiumMan folder ``src`` (reproducible, deterministic).

    Images are area-downscaled (:func:`downscale_view_matrix`), every ``time_stride``-th GT time kept, PNGs saved
    with ``optimize``.
    """
    from PIL import Image

    from .viewmatrix import load_view_matrix, save_view_matrix

    src, dst = Path(src), Path(dst)
    vm = load_view_matrix(src)
    vm = vm.select_times(list(range(0, vm.T, time_stride)))
    save_view_matrix(downscale_view_matrix(vm, size), dst, overwrite=overwrite)
    for png in sorted(dst.rglob("*.png")):  # lossless re-compression keeps the repo small
        with Image.open(png) as im:
            im.load()
            im.save(png, optimize=True)
    (dst / "ATTRIBUTION.md").write_text(ATTRIBUTION)
    return dst


def _split(vm):
    train = vm.select_views(TRAIN_VIEWS)
    test = dataclasses.replace(vm.select_views(TEST_VIEWS), input_images=None, input_alpha=None, input_camera=None)
    return train, test


CPU_FIT_SIZE = 32
"""On CPU the demo fits (and scores) the bundled 64 px images downscaled to this size: the pure-torch reference
rasterizer costs O(pixels x Gaussians) per image."""


def demo_config(device: torch.device, iterations: Optional[int] = None, points: Optional[int] = None):
    """The paper config on CUDA; on CPU a reduced one (1,000 Gaussians, 150 steps, 2 times x 2 views, 32 px;
    about 35 s with one thread on a busy 2-core machine, held-out PSNR about 29 dB at 32 px)."""
    from .fit import preset, reduced_for_cpu

    if device.type == "cuda":
        cfg = preset("recommended")
    else:
        cfg = reduced_for_cpu(preset("recommended"), num_points=1000, iterations=iterations or 150, times_per_batch=2,
                              views_per_batch=2)
    over = {k: v for k, v in {"iterations": iterations, "num_points": points}.items() if v}
    return cfg.replace(**over) if over else cfg


def run_demo(out_dir="e4d_demo_out", device: str = "auto", data=DEMO_DATA, iterations: Optional[int] = None,
             orbit_frames: Optional[int] = None, orbit_size: Optional[int] = None, points: Optional[int] = None,
             cpu_threads: Optional[int] = 1, print_fn: Callable[[str], None] = print) -> Dict[str, object]:
    """Fit the bundled example with :func:`e4d.pipeline.views_to_4d` (ground-truth views: no confidence maps) and
    write ``model.safetensors``, ``orbit.mp4`` and ``ply/frame_*.ply`` into ``out_dir`` with
    :func:`e4d.pipeline.save_outputs`; returns a summary dict (held-out PSNR/SSIM, timings, paths, config)."""
    from .fit import evaluate
    from .pipeline import ExportConfig, PipelineConfig, PipelineModels, save_outputs, views_to_4d
    from .viewmatrix import load_view_matrix

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but no CUDA device is visible; use --device cpu")
    data = Path(data)
    if not (data / "cameras.json").is_file():
        raise FileNotFoundError(f"demo data not found at {data}; reinstall the package or rebuild it with "
                                "`python -m e4d.demo --build-data ../shared/data/cesium_man_walk`")
    cfg = demo_config(dev, iterations, points)
    pcfg = PipelineConfig(confidence=None, fit=cfg, export=ExportConfig(video_fps=16))
    pcfg.orbit = dataclasses.replace(pcfg.orbit, frames=orbit_frames or (96 if dev.type == "cuda" else 24),
                                     resolution=orbit_size or (256 if dev.type == "cuda" else 64))
    mode = "full paper config" if dev.type == "cuda" else f"REDUCED CPU config ({CPU_FIT_SIZE} px)"
    print_fn(f"[e4d demo] device {dev}: {mode}: {cfg.num_points} Gaussians, {cfg.iterations} iterations, "
             f"{cfg.times_per_batch} times x {cfg.views_per_batch} views per step")
    vm = load_view_matrix(data)
    if dev.type == "cpu":
        vm = downscale_view_matrix(vm, CPU_FIT_SIZE)
    train, test = _split(vm.to(dev))
    print_fn(f"[e4d demo] data {data.name}: {train.T} times x {train.V} train views (+input view) at "
             f"{train.W}x{train.H}, held-out views {TEST_VIEWS}")

    def progress(step: int, total: int, info: dict) -> None:
        if "loss" in info:
            print_fn(f"[e4d demo] step {step}/{total} loss {info['loss']:.2f}")

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    if dev.type == "cpu" and cpu_threads:
        # The reference rasterizer works on many small tensors: on a shared 2-core machine one intra-op thread
        # is ~10x faster than two contending ones (measured: 25 s vs > 4 min for this fit).
        torch.set_num_threads(cpu_threads)
    try:
        res = views_to_4d(train, PipelineModels(), pcfg, callback=progress)
        held = evaluate(res.gaussians, test, view_ids=TEST_VIEWS)
        files = save_outputs(res, out_dir, pcfg, meta={"source": "e4d demo", "heldout_psnr": held["psnr"]})
    finally:
        torch.set_num_threads(threads)
    summary = {"heldout_psnr": round(held["psnr"], 3), "heldout_ssim": round(held["ssim"], 4),
               "per_view_psnr": {str(p["view"]): round(p["psnr"], 2) for p in held["per_view"]},
               "fit_seconds": round(res.fit.seconds, 2), "total_seconds": round(time.perf_counter() - t0, 2),
               "device": str(dev), "config": mode, **files}
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=1))
    print_fn(f"[e4d demo] held-out PSNR {held['psnr']:.2f} dB, SSIM {held['ssim']:.4f} (views {TEST_VIEWS}, on white); "
             f"fit {res.fit.seconds:.1f} s")
    print_fn(f"[e4d demo] wrote {files['native']}, {files['video']}, {files['num_ply']} PLY files in {files['ply']}")
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m e4d.demo", description="Build the bundled demo data.")
    ap.add_argument("--build-data", type=Path, required=True, help="the full cesium_man_walk folder")
    ap.add_argument("--out", type=Path, default=DEMO_DATA)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    print(build_demo_data(args.build_data, args.out, size=args.size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
