"""UI (litegraph) → API prompt conversion of the harness, on a hand-written /object_info (no server needed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfy_harness import ui_to_api, widget_inputs

INFO = {
    "Loader": {"input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}},
               "input_order": {"required": ["image"]}, "output": ["IMAGE", "MASK"], "output_name": ["IMAGE", "MASK"]},
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
        ui_to_api(wf, INFO)
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
