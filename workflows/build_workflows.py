"""Build the example workflows (ComfyUI UI / litegraph format) and their .jpg thumbnails from compact descriptions.

Widget values are written in the order of each node's schema as the running ComfyUI reports it (``/object_info``),
so the files always match the nodes. Values not given below take the schema's default; the defaults of these
workflows are the full-quality (paper) settings; the CI test shrinks them when it runs the workflows.

Usage (starts a headless ComfyUI from the test harness to read ``/object_info``)::

    python workflows/build_workflows.py            # writes workflows/*.json + *.jpg
    python workflows/build_workflows.py --object-info info.json   # offline, from a saved /object_info
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
COL, ROW = 400, 330  # grid spacing of the layout in canvas pixels
NODE_W = 340


@dataclass
class N:
    """A node: ``key`` names it inside the description, ``col``/``row`` place it on the grid."""

    key: str
    type: str
    col: float
    row: float
    values: dict = field(default_factory=dict)
    title: Optional[str] = None
    mode: int = 0
    """0 = runs; 2 = muted ("Never"): shipped switched off, the user enables it (select it, Ctrl+M)."""


@dataclass
class Note:
    key: str
    col: float
    row: float
    text: str
    width: float = 1.0


@dataclass
class L:
    """A link ``src -> dst``; ``out``/``inp`` are output/input names or types (None: the one type they share)."""

    src: str
    dst: str
    out: Optional[str] = None
    inp: Optional[str] = None


SD_CKPT = {"checkpoint": "syncdreamer-pretrain.ckpt"}
WEIGHTS_NOTE = (
    "Weights (put them here, then press R in ComfyUI to refresh the lists):\n"
    "- SyncDreamer: models/syncdreamer/syncdreamer-pretrain.ckpt (about 5 GB, CLIP included) from "
    "huggingface.co/liuyuan-pal/SyncDreamer\n"
    "- RIFE: models/rife/rife47.pth (21 MB, as in ComfyUI-Frame-Interpolation) or flownet.pkl (Practical-RIFE 4.x / "
    "RIFE HD v3.6); without weights the loader's 'flow (no weights)' fallback still runs\n"
    "- Zero123 guidance (optional SDS): models/diffusers/zero123-xl-diffusers/ (diffusers folder of "
    "huggingface.co/ashawkey/zero123-xl-diffusers, a few GB) or stable_zero123.ckpt (stabilityai/stable-zero123) in "
    "models/checkpoints\n"
    "- SVD (image to 4D only): models/diffusers/stable-video-diffusion-img2vid-xt/ (diffusers folder of "
    "huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt) or svd_xt.safetensors (about 10 GB) in "
    "models/checkpoints\n"
    "See docs/comfyui.md for details.")


def _tail(model_nodes: str, start_col: float) -> tuple[list, list]:
    """The shared back half: interpolate in time → confidence → fit → render/save → export → preview."""
    c = start_col
    nodes = [
        N("rife", "E4D_RIFELoader", c, 1, {"checkpoint": "rife47.pth"}),
        N("interp", "E4D_InterpolateViews", c + 1, 0, {"multiplier": 4}),
        N("conf", "E4D_ConfidenceMaps", c + 1, 1),
        N("fit", "E4D_Fit4DGS", c + 2, 0, {"preset": "recommended", "iterations": 500, "num_points": 50_000}),
        N("orbit", "E4D_OrbitRender", c + 3, 0, {"mode": "orbit", "frames": 120, "resolution": 512}),
        N("create", "CreateVideo", c + 4, 0, {"fps": 24.0}),
        N("save", "SaveVideo", c + 4, 0.8, {"filename_prefix": "efficient4d/orbit"}),
        N("export", "E4D_Export4D", c + 3, 1.5, {"filename_prefix": "efficient4d/object"}),
        N("preview", "E4D_Preview4D", c + 2, 1.6),
        # Off by default: meshing at full size takes minutes on a CPU, and a template's tiny CI fit has no surface.
        N("mesh", "E4D_ExtractMesh4D", c + 2, 2.6, {"filename_prefix": "efficient4d/mesh"}, mode=2),
    ]
    links = [
        L(model_nodes, "interp", inp="view_matrix"), L("rife", "interp"),
        L("interp", "conf", inp="view_matrix"), L("rife", "conf"),
        L("interp", "fit", inp="view_matrix"), L("conf", "fit"),
        L("fit", "orbit"), L("orbit", "create", out="IMAGE", inp="images"), L("create", "save"),
        L("fit", "export"), L("orbit", "export", out="IMAGE", inp="frames"), L("fit", "preview"),
        L("fit", "mesh"),
    ]
    return nodes, links


def _mesh_note(start_col: float) -> Note:
    """How to use the (muted) mesh branch of :func:`_tail`, placed beside it."""
    return Note("mesh_note", start_col + 3, 2.6,
                "Animated mesh (optional, switched off): select 'Extract Mesh 4D' and press Ctrl+M to enable it. It "
                "writes one animated GLB (fixed topology, morph targets) to output/efficient4d/ plus one mesh per "
                "time, and plays the GLB in the node once it has run. To view it elsewhere, add core 'Preview 3D & "
                "Animation' and connect glb_path to its model_file; on a "
                "ComfyUI with the core MESH type, the node's MESH output also goes to core 'Save GLB' or the mesh "
                "post-processing nodes.", 0.8)


def descriptions() -> dict[str, dict]:
    """The four example workflows."""
    out = {}

    tail, tail_links = _tail("sdt", 3)
    out["video_to_4d"] = dict(
        title="Efficient4D: video to 4D",
        nodes=[
            N("load", "E4D_LoadVideo", 0, 0, {"video": "object_rgba.webm", "max_frames": 32}),
            N("prep", "E4D_PrepareObjectFrames", 1, 0),
            N("sdl", "E4D_SyncDreamerLoader", 1, 1, SD_CKPT),
            N("sdt", "E4D_SyncDreamerT", 2, 0, {"frames": 16, "steps": 50}),
            N("guid", "E4D_Zero123GuidanceLoader", 4, 2, {"model": "diffusers/zero123-xl-diffusers"}),
            *tail,
        ],
        links=[L("load", "prep", out="IMAGE", inp="images"), L("load", "prep", out="MASK", inp="mask"),
               L("prep", "sdt", out="IMAGE"), L("prep", "sdt", out="MASK", inp="mask"), L("sdl", "sdt"),
               L("guid", "fit"), *tail_links],
        notes=[Note("n1", 0, 1.2, "Video to 4D (Efficient4D): an RGBA video of one object (webm VP9 with alpha, mov "
                                  "ProRes 4444, or a folder of RGBA PNGs in ComfyUI/input) -> 16 key frames -> "
                                  "SyncDreamer-T (16 views per frame, time-synchronised) -> RIFE x4 in time + "
                                  "confidence maps -> 4D Gaussian fit (+ optional Zero123 SDS guidance: delete the "
                                  "guidance node to fit without it) -> orbit video, PLY/native/splatv export and an "
                                  "interactive preview. No alpha? Put core 'Remove Background' (one mask per frame) or "
                                  "'SAM3 Video Track' (a tracked mask through the video) between Load Video and "
                                  "Prepare Object Frames and connect its MASK to the mask input.", 1.0),
               Note("n2", 0, 2.2, WEIGHTS_NOTE, 1.0), _mesh_note(3)],
    )

    tail, tail_links = _tail("sdt", 5)
    out["image_to_4d"] = dict(
        title="Efficient4D: image to 4D (SVD first animates the image)",
        nodes=[
            N("img", "LoadImage", 0, 0, {"image": "object_rgba.png"}),
            N("prep0", "E4D_PrepareObjectFrames", 1, 0, {"invert_mask": True}),
            N("svdl", "E4D_SVDLoader", 1, 1, {"model": "diffusers/stable-video-diffusion-img2vid-xt"}),
            N("svd", "E4D_SVDImageToVideo", 2, 0),
            N("prep", "E4D_PrepareObjectFrames", 3, 0),
            N("sdl", "E4D_SyncDreamerLoader", 3, 1, SD_CKPT),
            N("sdt", "E4D_SyncDreamerT", 4, 0, {"frames": 16, "steps": 50}),
            N("guid", "E4D_Zero123GuidanceLoader", 6, 2, {"model": "diffusers/zero123-xl-diffusers"}),
            *tail,
        ],
        links=[L("guid", "fit"), L("img", "prep0", out="IMAGE", inp="images"), L("img", "prep0", out="MASK", inp="mask"),
               L("prep0", "svd", out="IMAGE", inp="image"), L("prep0", "svd", out="MASK", inp="mask"),
               L("svdl", "svd"), L("svd", "prep", out="frames", inp="images"),
               L("svd", "prep", out="masks", inp="mask"),
               L("prep", "sdt", out="IMAGE"), L("prep", "sdt", out="MASK", inp="mask"), L("sdl", "sdt"), *tail_links],
        notes=[Note("n1", 0, 1.2, "Image to 4D: one RGBA image of an object (Load Image keeps its alpha as an "
                                  "inverted mask, hence invert_mask) -> Stable Video Diffusion makes a short clip on "
                                  "white (and its object masks) -> the video-to-4D chain, with Zero123 SDS guidance "
                                  "in the fit (delete the guidance node to fit without it).", 1.0),
               Note("n2", 0, 2.2, WEIGHTS_NOTE, 1.0), _mesh_note(5)],
    )

    tail, tail_links = _tail("sdt", 4)
    out["sparse_two_frames_to_4d"] = dict(
        title="Efficient4D: two frames to 4D (sparse input, K = 2)",
        nodes=[
            N("img0", "LoadImage", 0, 0, {"image": "object_t0.png"}),
            N("img1", "LoadImage", 0, 1, {"image": "object_t1.png"}),
            N("prep0", "E4D_PrepareObjectFrames", 1, 0, {"invert_mask": True, "box": "frame"}),
            N("prep1", "E4D_PrepareObjectFrames", 1, 1, {"invert_mask": True, "box": "frame"}),
            N("batch", "ImageBatch", 2, 0),
            N("sdl", "E4D_SyncDreamerLoader", 2, 1, SD_CKPT),
            N("sdt", "E4D_SyncDreamerT", 3, 0, {"frames": 2, "temporal_weights": "auto", "steps": 50}),
            *tail,
        ],
        links=[L("img0", "prep0", out="IMAGE", inp="images"), L("img0", "prep0", out="MASK", inp="mask"),
               L("img1", "prep1", out="IMAGE", inp="images"), L("img1", "prep1", out="MASK", inp="mask"),
               L("prep0", "batch", out="IMAGE", inp="image1"), L("prep1", "batch", out="IMAGE", inp="image2"),
               L("batch", "sdt", out="IMAGE"), L("sdl", "sdt"), *tail_links],
        notes=[Note("n1", 0, 2.1, "Two frames to 4D: the first and last state of the object (RGBA images). "
                                  "SyncDreamer-T runs with K = 2 frames (its time-attention weight w = 0.25 as in the "
                                  "paper's sparse setting); RIFE fills in the motion between them.", 1.0),
               Note("n2", 0, 2.9, WEIGHTS_NOTE, 1.0), _mesh_note(4)],
    )

    tail, tail_links = _tail("asm", 2)
    out["multiview_swap_to_4d"] = dict(
        title="Efficient4D: any multi-view model's output to 4D",
        nodes=[
            N("load", "E4D_LoadVideo", 0, 0, {"video": "multiview_views/"}),
            N("asm", "E4D_AssembleViewMatrix", 1, 0, {"camera_preset": "zero123plus6", "ordering": "time-major"}),
            *tail,
        ],
        links=[L("load", "asm", out="IMAGE", inp="images"), L("load", "asm", out="MASK", inp="mask"), *tail_links],
        notes=[Note("n1", 0, 1.2, "Swap in another multi-view generator: feed T x V views (here a folder of RGBA "
                                  "PNGs in time-major order: time 0 view 0..5, time 1 view 0..5, ...; or the IMAGE "
                                  "output of a Zero123++ node, or core 'SV3D Conditioning' + a video model (Wan, LTXV, "
                                  "HunyuanVideo) sampling 21 orbit frames per time), pick its camera preset "
                                  "(zero123plus6, sv3d21, syncdreamer16 or custom azimuths/elevations) and fit. "
                                  "Only RIFE weights are needed (or none, with the flow fallback).", 1.0),
               Note("n2", 0, 2.0, "Weights: models/rife/rife47.pth (21 MB, as in ComfyUI-Frame-Interpolation) or "
                                  "an official flownet.pkl; or pick 'flow (no weights)' in the loader. Press R after "
                                  "adding files. See docs/comfyui.md.", 1.0), _mesh_note(2)],
    )
    return out


# ---------------------------------------------------------------------------------------------------------------
def _tests_module(name: str):
    """A module of tests/ shared with the CI tests: ``comfy_ui_api`` (the frontend's widget order rules) or
    ``comfy_harness`` (the server starter)."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module(name)


def _sockets(info: dict) -> list[tuple[str, str, bool]]:
    """(name, type, optional) of the socket (non-widget) inputs, in order."""
    widgets = {w[0] for w in _tests_module("comfy_ui_api").widget_inputs(info)}
    out = []
    order = info.get("input_order") or {k: list(v) for k, v in info.get("input", {}).items()}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section].get(name)
            if spec is not None and name not in widgets:
                out.append((name, spec[0], section == "optional"))
    return out


def _widget_values(node: N, info: dict) -> list:
    """``widgets_values`` in the frontend's layout (``comfy_ui_api.iter_widget_slots``: control values right after
    their widget, a dynamic combo's chosen inputs right after it, the upload placeholder after all widgets)."""
    h = _tests_module("comfy_ui_api")
    values, unknown, chosen = [], set(node.values), {}

    def value_of(slot):
        if slot.name in node.values:
            return node.values[slot.name]
        if "default" in slot.opts:
            return slot.opts["default"]
        if slot.type == "DYNAMIC":
            return h._default_option(slot.opts)
        if slot.type == "COMBO":
            options = slot.opts.get("options") or [""]
            return options[0]
        return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[slot.type]

    for slot in h.iter_widget_slots(info, choose=lambda sl: chosen.get(sl.name)):
        if slot.kind == "control":
            values.append("fixed")
        elif slot.kind == "upload":
            values.append("image")  # what the frontend's upload button stores, for images and videos alike
        else:
            unknown.discard(slot.name)
            chosen[slot.name] = value_of(slot)
            values.append(chosen[slot.name])
    if unknown:
        raise ValueError(f"{node.key} ({node.type}) has no widgets {sorted(unknown)}")
    return values


def build(desc: dict, object_info: dict) -> dict:
    """One UI-format workflow from a description."""
    nodes = [n for n in desc["nodes"]]
    missing = sorted({n.type for n in nodes if n.type not in object_info})
    if missing:
        raise KeyError(f"node types not known to this ComfyUI: {missing}")
    ids = {n.key: i + 1 for i, n in enumerate(nodes)}
    ui_nodes: dict[str, dict] = {}
    for order, n in enumerate(nodes):
        info = object_info[n.type]
        socks = _sockets(info)
        widgets = _widget_values(n, info)
        ui_nodes[n.key] = {
            "id": ids[n.key], "type": n.type, "pos": [50 + n.col * COL, 50 + n.row * ROW],
            "size": [NODE_W, 46 + 24 * (len(socks) + len(widgets)) + 22 * len(info["output"])],
            "flags": {}, "order": order, "mode": n.mode,
            "inputs": [{"name": s, "type": t, "link": None, **({"shape": 7} if opt else {})} for s, t, opt in socks],
            "outputs": [{"name": nm, "type": t, "links": [], "slot_index": k}
                        for k, (nm, t) in enumerate(zip(info["output_name"], info["output"]))],
            "properties": {"Node name for S&R": n.type,
                           **({"cnr_id": "comfyui-efficient4d"} if n.type.startswith("E4D_") else {})},
            "widgets_values": widgets,
        }
        if n.title:
            ui_nodes[n.key]["title"] = n.title
    links = []
    for k, ln in enumerate(desc["links"], 1):
        src, dst = ui_nodes[ln.src], ui_nodes[ln.dst]
        outs = src["outputs"]
        if ln.out is None:
            dst_types = {i["type"] for i in dst["inputs"]}
            cand = [j for j, o in enumerate(outs) if o["type"] in dst_types]
        else:
            cand = [j for j, o in enumerate(outs) if o["name"] == ln.out] or \
                   [j for j, o in enumerate(outs) if o["type"] == ln.out]
        if not cand:
            raise ValueError(f"link {ln}: no matching output on {src['type']}")
        oslot = cand[0]
        otype = outs[oslot]["type"]
        ins = dst["inputs"]
        if ln.inp is None:
            icand = [j for j, i in enumerate(ins) if i["type"] == otype and i["link"] is None]
        else:
            icand = [j for j, i in enumerate(ins) if i["name"] == ln.inp] or \
                    [j for j, i in enumerate(ins) if i["type"] == ln.inp and i["link"] is None]
        if not icand:
            raise ValueError(f"link {ln}: no free input of type {otype} on {dst['type']}")
        islot = icand[0]
        if ins[islot]["type"] != otype:
            raise ValueError(f"link {ln}: {src['type']}.{outs[oslot]['name']} is {otype} but "
                             f"{dst['type']}.{ins[islot]['name']} takes {ins[islot]['type']}")
        ins[islot]["link"] = k
        outs[oslot]["links"].append(k)
        links.append([k, src["id"], oslot, dst["id"], islot, otype])
    next_id = len(nodes) + 1
    notes = []
    for j, note in enumerate(desc.get("notes", [])):
        notes.append({"id": next_id + j, "type": "Note", "pos": [50 + note.col * COL, 50 + note.row * ROW],
                      "size": [note.width * COL * 1.7, 0.8 * ROW], "flags": {}, "order": len(nodes) + j, "mode": 0,
                      "inputs": [], "outputs": [], "properties": {}, "widgets_values": [note.text],
                      "color": "#432", "bgcolor": "#653"})
    all_nodes = list(ui_nodes.values()) + notes
    return {"last_node_id": max(n["id"] for n in all_nodes), "last_link_id": len(links), "nodes": all_nodes,
            "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}, "efficient4d": {"title": desc["title"]}},
            "version": 0.4}


def thumbnail(workflow: dict, path: Path, title: str) -> None:
    """A schematic .jpg of the graph (node boxes coloured by stage, links as lines) for the template browser."""
    from PIL import Image, ImageDraw

    nodes = [n for n in workflow["nodes"] if n["type"] != "Note"]
    xs = [n["pos"][0] for n in nodes] + [n["pos"][0] + n["size"][0] for n in nodes]
    ys = [n["pos"][1] for n in nodes] + [n["pos"][1] + min(n["size"][1], ROW * 0.8) for n in nodes]
    W, H = 768, 432
    x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    s = min((W - 40) / (x1 - x0), (H - 90) / (y1 - y0))
    tx = lambda x: 20 + (x - x0) * s  # noqa: E731
    ty = lambda y: 70 + (y - y0) * s  # noqa: E731
    img = Image.new("RGB", (W, H), (32, 34, 40))
    d = ImageDraw.Draw(img)
    d.text((20, 20), title, fill=(240, 240, 240))
    d.text((20, 40), "Efficient4D for ComfyUI", fill=(150, 160, 180))
    by_id = {n["id"]: n for n in nodes}

    def colour(t: str):
        if not t.startswith("E4D_"):
            return (90, 90, 100)
        if "SyncDreamer" in t or "SVD" in t or "Zero123" in t:
            return (120, 70, 150)
        if "RIFE" in t or "Interpolate" in t or "Confidence" in t:
            return (60, 110, 150)
        if "Fit" in t:
            return (170, 90, 40)
        return (60, 130, 80)

    for _, a, _, b, _, _ in workflow["links"]:
        na, nb = by_id[a], by_id[b]
        d.line([(tx(na["pos"][0] + na["size"][0]), ty(na["pos"][1] + 20)), (tx(nb["pos"][0]), ty(nb["pos"][1] + 20))],
               fill=(200, 200, 120), width=2)
    for n in nodes:
        box = [tx(n["pos"][0]), ty(n["pos"][1]), tx(n["pos"][0] + n["size"][0]),
               ty(n["pos"][1] + min(n["size"][1], ROW * 0.8))]
        d.rounded_rectangle(box, radius=6, fill=colour(n["type"]), outline=(220, 220, 220))
        d.text((box[0] + 5, box[1] + 4), n["type"].replace("E4D_", "")[:22], fill=(255, 255, 255))
    img.save(path, quality=88)


def fetch_object_info() -> dict:
    start_server = _tests_module("comfy_harness").start_server
    with tempfile.TemporaryDirectory(prefix="e4d-wf-") as tmp:
        server = start_server(Path(tmp))
        try:
            return server.object_info()
        finally:
            server.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--object-info", help="a saved /object_info JSON (default: start a headless ComfyUI)")
    ap.add_argument("--out", default=str(HERE), help="output folder (default: workflows/)")
    ap.add_argument("--only", nargs="*", help="workflow names to build (default: all)")
    args = ap.parse_args(argv)
    info = json.loads(Path(args.object_info).read_text()) if args.object_info else fetch_object_info()
    out = Path(args.out)
    failed = []
    for name, desc in descriptions().items():
        if args.only and name not in args.only:
            continue
        try:
            wf = build(desc, info)
        except (KeyError, ValueError) as e:
            print(f"{name}: NOT rebuilt ({e})", file=sys.stderr)
            failed.append(name)
            continue
        (out / f"{name}.json").write_text(json.dumps(wf, indent=1) + "\n")
        thumbnail(wf, out / f"{name}.jpg", desc["title"])
        print(f"{name}: {len(wf['nodes'])} nodes, {len(wf['links'])} links")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
