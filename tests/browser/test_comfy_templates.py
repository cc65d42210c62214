"""Every example workflow opened and queued through the real ComfyUI frontend, on every lane (``comfy_frontend``).

What a user does: the template comes from ``/api/workflow_templates`` and is opened with the frontend's own
``app.loadGraphData``; the frontend builds the prompt (``app.graphToPrompt``) and queues it (``app.queuePrompt``).
Before queueing, the test types the CI's tiny sizes into the widgets (``comfy_tiny.TINY``) and picks the tiny
models in the model dropdowns, as a user edits a template. Checked per template:

* the frontend lays the widgets out as ``build_workflows.py`` wrote them (names of ``node.widgets`` against
  ``comfy_ui_api.iter_widget_slots``), so no value lands in the wrong widget;
* our ``ui_to_api`` gives exactly the frontend's prompt, for the template as shipped and as edited;
* the queued prompt runs to success (``/history``), or the test shows the server's node errors.
"""
from __future__ import annotations

import json
import time

import pytest

from comfy_harness import PACK_NAME
from comfy_ui_api import iter_widget_slots, ui_to_api
from comfy_tiny import WORKFLOWS, error_text, tiny_overrides
from e4d_comfyui import APP_LOADED, queue_from_frontend

pytestmark = [pytest.mark.browser, pytest.mark.comfy]

@pytest.fixture(scope="module")
def page(comfy_frontend, chromium_path):
    """One Chromium page on the lane's ComfyUI, the app loaded (shared by the templates of a lane)."""
    from e4d_cdp import Chromium

    with Chromium(chromium_path, width=1280, height=800, timeout=180) as b:
        b.goto(comfy_frontend.url + "/")
        b.wait_for(APP_LOADED, timeout=180)
        yield b


def _frontend_prompt(b) -> dict:
    """The frontend's own prompt for the open graph (graphToPrompt's ``output``, without display-only ``_meta``)."""
    out = b.evaluate("(async () => (await window.app.graphToPrompt()).output)()", timeout=60)
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in out.items()}


def _frontend_workflow(b) -> dict:
    return b.evaluate("window.app.graph.serialize()")


def _expected_widget_names(info: dict, values: list) -> list[str]:
    """Names the frontend gives the widgets of a node whose ``widgets_values`` are ``values``."""
    read, names, k = {}, [], 0
    for slot in iter_widget_slots(info, choose=lambda sl: read.get(sl.name)):
        if slot.kind == "value" and k < len(values):
            read[slot.name] = values[k]
        names.append({"value": slot.name, "control": "control_after_generate", "upload": "upload"}[slot.kind])
        k += 1
    return names


def _assert_same_prompt(ours: dict, frontend: dict, info: dict, what: str) -> None:
    """ui_to_api's prompt equals the frontend's; the message lists the inputs that differ, per node.

    Numbers compare by value (the frontend sends 24 for a FLOAT 24.0). Our conversion is not strict here: like
    the frontend, it gives widgets newer than the workflow their defaults and ignores values of display widgets
    (our player) that the frontend stores after the inputs. Keys that are no input of the node (frontend 1.47
    sometimes sends its ``video-preview`` widget) are ignored by the server, so here too."""
    diffs = []
    for nid in sorted(set(ours) | set(frontend), key=str):
        a, b = ours.get(nid), frontend.get(nid)
        if a is None or b is None or a["class_type"] != b["class_type"]:
            diffs.append(f"node {nid}: ours {a and a['class_type']}, frontend {b and b['class_type']}")
            continue
        known = {n for section in info[a["class_type"]]["input"].values() for n in section}
        for key in sorted(k for k in set(a["inputs"]) | set(b["inputs"]) if k.split(".")[0] in known):
            if a["inputs"].get(key, "<missing>") != b["inputs"].get(key, "<missing>"):
                diffs.append(f"node {nid} ({a['class_type']}).{key}: ours {a['inputs'].get(key, '<missing>')!r}, "
                             f"frontend {b['inputs'].get(key, '<missing>')!r}")
    assert not diffs, f"{what}: ui_to_api differs from the frontend's graphToPrompt:\n" + "\n".join(diffs)


def _edit_for_ci(b, name: str, info: dict) -> None:
    """Type the tiny sizes into the widgets and pick, in every model dropdown whose file this server lacks, the
    first file it has (the widgets' own options, as the frontend shows them)."""
    b.evaluate(f"""(() => {{
        const tiny = {json.dumps(tiny_overrides(name))};
        for (const node of window.app.graph.nodes) {{
            const changes = tiny[node.type] || {{}};
            for (const w of node.widgets || []) {{
                if (w.name in changes) w.value = changes[w.name];
                const opts = w.options && w.options.values;
                if (w.type === 'combo' && Array.isArray(opts) && opts.length && !opts.includes(w.value)) {{
                    const real = opts.filter(o => !String(o).startsWith('<'));
                    if (real.length) w.value = real[0];
                }}
            }}
        }}
        window.app.graph.setDirtyCanvas(true, true);
    }})()""")


@pytest.mark.parametrize("name", WORKFLOWS)
def test_template_queues_from_the_frontend(comfy_frontend, page, name, artifacts_dir):
    server, b = comfy_frontend, page
    info = server.object_info()
    template = server.get(f"/api/workflow_templates/{PACK_NAME}/{name}.json")
    types = {n["type"] for n in template["nodes"]}
    lacking = [server.missing_writers[t] for t in types if t in server.missing_writers]
    if lacking:
        pytest.skip(f"{name}: " + "; ".join(lacking))
    b.evaluate(f"window.app.loadGraphData({json.dumps(template)})", timeout=60)
    b.wait_for(f"window.app.graph.nodes.length === {len(template['nodes'])}", timeout=30)

    # widgets the node serializes (previews and our player are display-only, not in widgets_values)
    got = b.evaluate("Object.fromEntries(window.app.graph.nodes.map(n => [n.id, (n.widgets || [])"
                     ".filter(w => w.serialize !== false).map(w => w.name)]))")
    for node in template["nodes"]:
        if node["type"] in info:
            want = _expected_widget_names(info[node["type"]], node["widgets_values"])
            have = got[str(node["id"])]
            extra = have[len(want):]  # display widgets a pack's extension adds after the inputs (our player)
            assert have[:len(want)] == want and not set(extra) & set(want), \
                f"{name} node {node['id']} ({node['type']}): the frontend's widgets {have}, the template's {want}"

    shipped = _frontend_prompt(b)
    _assert_same_prompt(ui_to_api(template, info), shipped, info, f"{name} as shipped")

    _edit_for_ci(b, name, info)
    edited = _frontend_prompt(b)
    _assert_same_prompt(ui_to_api(_frontend_workflow(b), info), edited, info, f"{name} as edited")
    tiny = tiny_overrides(name)
    for entry in edited.values():  # the edit reached the prompt the frontend will queue
        for key, value in tiny.get(entry["class_type"], {}).items():
            if key in entry["inputs"]:
                assert entry["inputs"][key] == value, (entry["class_type"], key)

    t0 = time.monotonic()
    try:
        entry = queue_from_frontend(b, server, timeout=300)
    except Exception:
        b.screenshot(artifacts_dir / f"template_{server.lane}_{name}_failed.png")
        raise
    assert entry["status"]["status_str"] == "success", f"{name} on ComfyUI {server.lane}: {error_text(entry)}"
    ran = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in entry["prompt"][2].items()}
    _assert_same_prompt(ran, edited, info, f"{name}: the prompt the server ran vs the one the frontend built")
    print(f"{server.lane} {name} from the frontend: {time.monotonic() - t0:.1f} s")
