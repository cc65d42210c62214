"""Tiny inputs, tiny models and CI sizes for running the example workflows on a real ComfyUI (server tests, browser
template test, ``tools/comfy_run_workflow.py``)."""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np

from comfy_harness import REPO

WORKFLOWS = ("video_to_4d", "image_to_4d", "sparse_two_frames_to_4d", "multiview_swap_to_4d")
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


def prepare_base(base: Path) -> dict[str, str]:
    """Tiny inputs and models in a server's base folder; returns {loader node type: why its model is missing}."""
    (base / "input").mkdir(parents=True)
    write_inputs(base / "input", Path(os.environ.get("E4D_SHARED", REPO.parent / "shared")))
    return write_models(base / "models")


def load_workflow(name: str) -> dict:
    return json.loads((REPO / "workflows" / f"{name}.json").read_text())


def tiny_overrides(name: str) -> dict:
    """TINY with the per-workflow changes of ``name``."""
    return {k: {**v, **PER_WORKFLOW.get(name, {}).get(k, {})} for k, v in TINY.items()}


def pick_models(prompt: dict, info: dict) -> None:
    """Point every model dropdown that names a file this server lacks at the tiny model that is there."""
    for entry in prompt.values():
        spec = info[entry["class_type"]]["input"]
        for name, val in list(entry["inputs"].items()):
            s = spec.get("required", {}).get(name) or spec.get("optional", {}).get(name)
            if not s or isinstance(val, list):
                continue
            if isinstance(s[0], list):
                options = s[0]
            elif s[0] == "COMBO" and len(s) > 1:  # not a dynamic combo: its options are dicts, not files
                options = s[1].get("options")
            else:
                continue
            if options and val not in options:
                real = [o for o in options if not str(o).startswith("<")]
                if real:
                    entry["inputs"][name] = real[0]


def error_text(entry: dict) -> str:
    for kind, data in entry["status"].get("messages", []):
        if kind == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}): {data.get('exception_message')}\n"
                    + "".join(data.get("traceback", []))[-2500:])
    return json.dumps(entry["status"])[-2000:]
