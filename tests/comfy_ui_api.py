"""UI-format (litegraph) workflow -> API-format prompt, the way the frontend's ``graphToPrompt`` does it
(tests/browser/test_comfy_templates.py compares the two on every template), from ``/object_info``.

``widgets_values`` are laid out by :func:`iter_widget_slots` (control_after_generate values after their widget, a
dynamic combo's chosen inputs after it as ``combo.child`` keys, the upload button's placeholder after all widgets);
converted widgets fed by a link, Reroute and PrimitiveNode are resolved; frontend-only nodes (Note, MarkdownNote)
and muted nodes are dropped.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, NamedTuple, Optional

CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
UPLOAD_KEYS = ("image_upload", "video_upload", "audio_upload", "file_upload", "animated_image_upload")
UPLOAD_PLACEHOLDERS = ("image", "video", "audio", "file")
FRONTEND_ONLY = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"


class Slot(NamedTuple):
    """One entry of a node's ``widgets_values`` as the frontend lays them out."""

    name: str
    """Input name; ``parent.child`` for an input of a dynamic combo's chosen option (the prompt's key, too)."""
    kind: str
    """``value`` (a widget input), ``control`` (control_after_generate, right after its widget) or ``upload`` (the
    upload button's placeholder)."""
    type: str
    """INT, FLOAT, STRING, BOOLEAN, COMBO or DYNAMIC (a dynamic combo); IMAGEUPLOAD for the upload button."""
    opts: dict
    """The input's options from /object_info."""
    required: bool
    """Whether the schema requires the input."""


def _spec_type(spec: list) -> tuple[Optional[str], dict]:
    """(widget type or None for a socket, options) of one /object_info input spec."""
    typ = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if opts.get("forceInput"):
        return None, opts
    if typ == DYNAMIC_COMBO:
        return "DYNAMIC", opts
    if isinstance(typ, list):  # the old combo form: the options are the type
        return "COMBO", {**opts, "options": list(typ)}
    if typ == "COMBO":
        return "COMBO", opts
    return (typ if typ in WIDGET_TYPES else None), opts


def _default_option(opts: dict) -> Optional[str]:
    keys = [o["key"] for o in opts.get("options", [])]
    return opts.get("default", keys[0] if keys else None)


def _slots(inputs: dict, order: dict, prefix: str, choose: Callable[[Slot], Any]) -> Iterator[Slot]:
    for section in ("required", "optional"):
        specs = inputs.get(section, {})
        for name in order.get(section) or list(specs):
            spec = specs.get(name)
            if spec is None:
                continue
            wtype, opts = _spec_type(spec)
            if wtype is None:
                continue
            slot = Slot(prefix + name, "value", wtype, opts, section == "required")
            yield slot
            if wtype == "DYNAMIC":  # the chosen option's inputs follow their combo, depth first
                key = choose(slot)
                option = next((o for o in opts.get("options", []) if o["key"] == key), None)
                if option is not None:
                    yield from _slots(option.get("inputs", {}), {}, slot.name + ".", choose)
            elif _has_control(name, wtype, opts):
                yield Slot(slot.name, "control", wtype, opts, False)


def iter_widget_slots(info: dict, choose: Optional[Callable[[Slot], Any]] = None) -> Iterator[Slot]:
    """The entries of a node's ``widgets_values`` in the frontend's order.

    ``choose(slot)`` gives the option key a dynamic combo holds (asked right after its slot is yielded, so a
    caller reading stored values can answer with the value it just read); default: the schema's default option.
    Control values follow their widget; the children of a dynamic combo's chosen option follow the combo; the
    upload button (added by the frontend for the first required media combo) follows all other widgets.
    """
    choose = choose or (lambda slot: _default_option(slot.opts))
    order = info.get("input_order") or {k: list(v) for k, v in info.get("input", {}).items()}
    yield from _slots(info.get("input", {}), order, "", choose)
    required = info.get("input", {}).get("required", {})
    for name in order.get("required") or list(required):
        wtype, opts = _spec_type(required.get(name, [None]))
        if wtype == "COMBO" and any(opts.get(u) for u in UPLOAD_KEYS):
            yield Slot("upload", "upload", "IMAGEUPLOAD", {"input": name}, False)
            break


def widget_slots(info: dict) -> list[Slot]:
    """:func:`iter_widget_slots` with every dynamic combo at its default option."""
    return list(iter_widget_slots(info))


def widget_inputs(info: dict) -> list[tuple[str, Any, dict]]:
    """``(name, type, options)`` of the top-level widget inputs of a node, in the frontend's widget order."""
    return [(s.name, s.type, s.opts) for s in widget_slots(info) if s.kind == "value" and "." not in s.name]


def _has_control(name: str, typ: str, opts: dict) -> bool:
    return bool(opts.get("control_after_generate")) or (typ == "INT" and name in ("seed", "noise_seed"))


def _has_default(slot: Slot) -> bool:
    return "default" in slot.opts or slot.type in ("COMBO", "DYNAMIC")


def _default_value(slot: Slot) -> Any:
    """The value the frontend gives a new widget: the schema's default, else a combo's first option."""
    if "default" in slot.opts:
        return slot.opts["default"]
    if slot.type == "DYNAMIC":
        return _default_option(slot.opts)
    options = slot.opts.get("options") or []
    return options[0] if options else None


def _is_placeholder(kind: str, value: Any) -> bool:
    if kind == "control":
        return value in CONTROL_VALUES
    return isinstance(value, str) and value in UPLOAD_PLACEHOLDERS


def ui_to_api(workflow: dict, object_info: dict, overrides: Optional[dict] = None, strict: bool = False) -> dict:
    """Convert a UI-format workflow to an API prompt ``{id: {class_type, inputs}}``, as the frontend's
    ``graphToPrompt`` does: widget values by :func:`iter_widget_slots` (control and upload placeholders skipped,
    a dynamic combo's chosen inputs as ``combo.child`` keys), links (through Reroutes; PrimitiveNode values),
    hidden inputs left to the server; frontend-only nodes (Note, MarkdownNote, Reroute, PrimitiveNode) and muted
    or bypassed nodes dropped.

    ``overrides``: ``{node_type: {input_name: value}}`` applied after conversion (the CI's tiny sizes); names the
    node does not have are ignored. ``strict``: fail when a node stores more or fewer widget values than its
    schema has widgets (the workflow is out of date with the nodes); otherwise widgets the workflow has no value
    for take their default, as the frontend gives them when it loads an older workflow.
    Raises ValueError naming the node when a node type is unknown to the server or widget values do not fit.
    """
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {l[0]: l for l in workflow.get("links", [])}

    def source(link_id: int) -> Optional[list]:
        """[origin_id, slot] after following Reroutes; None for a PrimitiveNode (handled by the caller)."""
        seen = 0
        while True:
            _, origin, slot = links[link_id][:3]
            node = nodes[origin]
            if node["type"] == "Reroute":
                link_id = node["inputs"][0]["link"]
                seen += 1
                if link_id is None or seen > 100:
                    return None
                continue
            if node["type"] == "PrimitiveNode" or node.get("mode") in (2, 4):
                return None
            return [str(origin), slot]

    prompt: dict = {}
    for nid, node in nodes.items():
        typ = node["type"]
        if typ in FRONTEND_ONLY or node.get("mode") in (2, 4):
            continue
        info = object_info.get(typ)
        if info is None:
            raise ValueError(f"node {nid} is a {typ!r}, which this ComfyUI does not know (missing pack or module?)")
        inputs: dict[str, Any] = {}
        linked_widgets = {}
        for inp in node.get("inputs", []):
            if inp.get("link") is None:
                continue
            link = links[inp["link"]]
            src = source(inp["link"])
            if src is None:  # PrimitiveNode: its first widget value is the value
                origin = nodes[link[1]]
                if origin["type"] == "PrimitiveNode":
                    linked_widgets[inp["name"]] = ("value", origin["widgets_values"][0])
                continue
            if inp.get("widget"):
                linked_widgets[inp["widget"]["name"]] = ("link", src)
            else:
                inputs[inp["name"]] = src
        stored = node.get("widgets_values") or []
        by_name = stored if isinstance(stored, dict) else None  # some nodes store a name->value dict
        values = [] if by_name is not None else list(stored)
        k = 0
        read: dict[str, Any] = {}
        names = []
        for slot in iter_widget_slots(info, choose=lambda sl: read.get(sl.name)):
            if slot.kind != "value":  # control and upload placeholders are frontend state, not inputs
                if by_name is None and k < len(values) and _is_placeholder(slot.kind, values[k]):
                    k += 1
                continue
            names.append(slot.name)
            if by_name is not None:
                val = by_name.get(slot.name)
            elif k < len(values):
                val = values[k]
                k += 1
            elif slot.name in linked_widgets:
                val = None
            elif not strict and _has_default(slot):  # a widget newer than the workflow: the frontend's default
                val = _default_value(slot)
            elif not slot.required:
                continue
            else:
                raise ValueError(f"node {nid} ({typ}): widgets_values has {len(values)} values, too few for "
                                 f"widget {slot.name!r}; widgets are {names}...")
            read[slot.name] = val
            if slot.name in linked_widgets:
                inputs[slot.name] = linked_widgets[slot.name][1]
            elif val is not None:
                inputs[slot.name] = val
        if strict and by_name is None and k != len(values):
            raise ValueError(f"node {nid} ({typ}): {len(values)} widget values but {k} were used; widget slots are "
                             f"{[(sl.name, sl.kind) for sl in iter_widget_slots(info, lambda sl: read.get(sl.name))]}"
                             f", values {values}")
        prompt[str(nid)] = {"class_type": typ, "inputs": inputs}
    for typ, changes in (overrides or {}).items():
        for entry in prompt.values():
            if entry["class_type"] == typ:
                known = {n for sec in object_info[typ]["input"].values() for n in sec}
                entry["inputs"].update({k2: v for k2, v in changes.items() if k2 in known})
    return prompt
