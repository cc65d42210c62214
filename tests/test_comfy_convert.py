"""UI (litegraph) → API prompt conversion of the harness, on a hand-written /object_info (no server needed)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from comfy_ui_api import iter_widget_slots, ui_to_api, widget_inputs

INFO = {
    "Loader": {"input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}},
               "input_order": {"required": ["image"]}, "output": ["IMAGE", "MASK"], "output_name": ["IMAGE", "MASK"]},
    "VideoLoader": {"input": {"required": {"video": [["a.mp4"], {"video_upload": True}], "start": ["INT", {"default": 0}],
                                           "stride": ["INT", {"default": 1}]},
                              "optional": {"video_in": ["VIDEO", {}]}},
                    "input_order": {"required": ["video", "start", "stride"], "optional": ["video_in"]},
                    "output": ["IMAGE"], "output_name": ["IMAGE"]},
    # a dynamic combo as ComfyUI 0.30 reports SaveVideo's codec: each option brings inputs, nested
    "Saver": {"input": {"required": {"prefix": ["STRING", {"default": "v"}], "codec": ["COMFY_DYNAMICCOMBO_V3", {
        "options": [{"key": "auto", "inputs": {"required": {}}},
                    {"key": "h264", "inputs": {"required": {}, "optional": {"encoding": ["COMFY_DYNAMICCOMBO_V3", {
                        "options": [{"key": "auto", "inputs": {"required": {}}},
                                    {"key": "re-encode", "inputs": {"required": {"crf": ["FLOAT", {"default": 23.0}]}}}]
                    }]}}}]}], "quality": ["INT", {"default": 5}]}},
              "input_order": {"required": ["prefix", "codec", "quality"], "hidden": ["prompt"]},
              "output": [], "output_name": []},
    "Sampler": {"input": {"required": {"images": ["IMAGE", {}], "seed": ["INT", {"default": 0,
                                                                                   "control_after_generate": True}],
                                       "steps": ["INT", {"default": 20}],
                                       "mode": ["COMBO", {"options": ["x", "y"], "default": "x"}]},
                          "optional": {"mask": ["MASK", {}], "strength": ["FLOAT", {"default": 1.0}]}},
                "input_order": {"required": ["images", "seed", "steps", "mode"], "optional": ["mask", "strength"]},
                "output": ["IMAGE"], "output_name": ["IMAGE"]},
}


def _node(nid, typ, widgets, inputs=(), outputs=(), mode=0):
    return {"id": nid, "type": typ, "mode": mode, "widgets_values": widgets,
            "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs]}


def _workflow():
    return {
        "nodes": [
            _node(1, "Loader", ["b.png", "image"], outputs=[{"name": "IMAGE", "links": [1]}, {"name": "MASK", "links": [2]}]),
            _node(2, "Reroute", [], inputs=[{"name": "", "link": 1}], outputs=[{"name": "", "links": [3]}]),
            _node(3, "PrimitiveNode", [7], outputs=[{"name": "INT", "links": [4]}]),
            _node(4, "Sampler", [123, "randomize", 999, "y", 0.5],
                  inputs=[{"name": "images", "link": 3}, {"name": "mask", "link": 2},
                          {"name": "steps", "link": 4, "widget": {"name": "steps"}}]),
            _node(5, "Note", ["hello"]),
            _node(6, "Sampler", [1, "fixed", 2, "x", 1.0], inputs=[{"name": "images", "link": None}], mode=4),
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 1, 1, 4, 1, "MASK"], [3, 2, 0, 4, 0, "IMAGE"], [4, 3, 0, 4, 2, "INT"]],
    }


def test_widget_order_is_required_then_optional():
    assert [w[0] for w in widget_inputs(INFO["Sampler"])] == ["seed", "steps", "mode", "strength"]


def test_ui_to_api_resolves_widgets_links_reroutes_and_primitives():
    prompt = ui_to_api(_workflow(), INFO, overrides={"Sampler": {"mode": "x", "not_an_input": 1}}, strict=True)
    assert set(prompt) == {"1", "4"}  # Note, Reroute, Primitive (frontend-only) and the bypassed node are dropped
    assert prompt["1"] == {"class_type": "Loader", "inputs": {"image": "b.png"}}
    s = prompt["4"]["inputs"]
    assert s["images"] == ["1", 0] and s["mask"] == ["1", 1]  # through the Reroute
    assert s["seed"] == 123 and s["steps"] == 7 and s["strength"] == 0.5  # control value skipped, primitive used
    assert s["mode"] == "x" and "not_an_input" not in s


def test_ui_to_api_rejects_stale_or_unknown_nodes():
    wf = _workflow()
    wf["nodes"][3]["widgets_values"].append("extra")
    with pytest.raises(ValueError, match="widget values but"):
        ui_to_api(wf, INFO, strict=True)
    wf["nodes"][3]["widgets_values"] = [1]
    with pytest.raises(ValueError, match="too few"):
        ui_to_api(wf, INFO, strict=True)
    # not strict: widgets newer than the workflow take their defaults, as the frontend gives them
    assert ui_to_api(wf, INFO)["4"]["inputs"] == {"images": ["1", 0], "mask": ["1", 1], "seed": 1, "steps": 7,
                                                  "mode": "x", "strength": 1.0}
    wf["nodes"][0]["type"] = "FromAnotherPack"
    with pytest.raises(ValueError, match="FromAnotherPack"):
        ui_to_api(wf, INFO)


@pytest.mark.parametrize("name", ["video_to_4d", "image_to_4d", "sparse_two_frames_to_4d", "multiview_swap_to_4d"])
def test_example_workflows_are_well_formed(name):
    """Every link is listed on both ends with matching types; thumbnails and notes exist (checked without a
    server; the comfy-marked tests run them)."""
    root = Path(__file__).resolve().parents[1] / "workflows"
    wf = json.loads((root / f"{name}.json").read_text())
    assert (root / f"{name}.jpg").stat().st_size > 1000
    nodes = {n["id"]: n for n in wf["nodes"]}
    for lid, a, aslot, b, bslot, typ in wf["links"]:
        assert lid in nodes[a]["outputs"][aslot]["links"] and nodes[a]["outputs"][aslot]["type"] == typ
        assert nodes[b]["inputs"][bslot]["link"] == lid and nodes[b]["inputs"][bslot]["type"] == typ
    assert wf["last_link_id"] == max(l[0] for l in wf["links"]) and wf["last_node_id"] == max(nodes)
    assert any(n["type"] == "Note" for n in wf["nodes"])
    fit = [n for n in wf["nodes"] if n["type"] == "E4D_Fit4DGS"]
    assert len(fit) == 1 and fit[0]["widgets_values"][:3] == ["recommended", 500, 50000]  # full quality by default


def test_upload_placeholder_comes_after_every_widget():
    """The frontend appends the upload button after the node's inputs: ['a.mp4', 0, 1, 'image'], not after 'video'."""
    assert [(sl.name, sl.kind) for sl in iter_widget_slots(INFO["VideoLoader"])] == \
        [("video", "value"), ("start", "value"), ("stride", "value"), ("upload", "upload")]
    wf = {"nodes": [_node(1, "VideoLoader", ["a.mp4", 3, 2, "image"])], "links": []}
    assert ui_to_api(wf, INFO, strict=True)["1"]["inputs"] == {"video": "a.mp4", "start": 3, "stride": 2}
    wf["nodes"][0]["widgets_values"] = ["a.mp4", "image", 3, 2]  # the old, shifted layout is caught
    with pytest.raises(ValueError, match="widget values but"):
        ui_to_api(wf, INFO, strict=True)


@pytest.mark.parametrize("values, inputs", [
    (["v", "auto", 5], {"prefix": "v", "codec": "auto", "quality": 5}),
    (["v", "h264", "auto", 5], {"prefix": "v", "codec": "h264", "codec.encoding": "auto", "quality": 5}),
    (["v", "h264", "re-encode", 18.0, 5],
     {"prefix": "v", "codec": "h264", "codec.encoding": "re-encode", "codec.encoding.crf": 18.0, "quality": 5}),
])
def test_dynamic_combo_children_follow_their_combo_as_dotted_keys(values, inputs):
    wf = {"nodes": [_node(1, "Saver", values)], "links": []}
    assert ui_to_api(wf, INFO, strict=True)["1"]["inputs"] == inputs  # hidden 'prompt' is the server's business


def test_builder_writes_the_frontend_layout(monkeypatch):
    """build_workflows.py fills widgets_values through the same slots: defaults, 'fixed' controls, the upload last."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "workflows" / "build_workflows.py"
    spec = importlib.util.spec_from_file_location("build_workflows", path)
    bw = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "build_workflows", bw)  # its dataclasses look their module up
    spec.loader.exec_module(bw)
    assert bw._widget_values(bw.N("l", "VideoLoader", 0, 0, {"start": 4}), INFO["VideoLoader"]) == ["a.mp4", 4, 1, "image"]
    assert bw._widget_values(bw.N("s", "Sampler", 0, 0, {"steps": 3}), INFO["Sampler"]) == [0, "fixed", 3, "x", 1.0]
    assert bw._widget_values(bw.N("v", "Saver", 0, 0, {"codec": "h264"}), INFO["Saver"]) == ["v", "h264", "auto", 5]
