"""Checks every node runs before its own code: each FLOAT input finite and inside its widget's range.

ComfyUI checks a FLOAT widget with ``val < min`` / ``val > max``, which NaN passes (every comparison with NaN is
false), and a prompt sent over the API can carry ``NaN`` or ``Infinity`` (Python's json accepts them). A NaN
radius or background then renders black frames, a NaN duration becomes invalid JSON for the browser, a NaN fit
weight fails far downstream. :func:`guard_float_inputs` wraps a node class's ``execute`` once, at registration
(``nodes/__init__.py``), so no node can forget the check and the message names the node, the input and the rule.
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Any

from comfy_api.latest import io

_GUARDED = "_e4d_float_guard"


def float_inputs(cls: type[io.ComfyNode]) -> dict[str, tuple[Any, Any]]:
    """``{input id: (min, max)}`` of the FLOAT inputs in ``cls``'s schema (None where unbounded)."""
    out = {}
    # define_schema(), not GET_SCHEMA(): ComfyUI runs execute on a locked copy of the class, on which GET_SCHEMA's
    # caching assignment raises.
    for inp in cls.define_schema().inputs:
        if isinstance(inp, io.Float.Input):
            out[inp.id] = (getattr(inp, "min", None), getattr(inp, "max", None))
    return out


def _node_name(cls: type[io.ComfyNode]) -> str:
    schema = cls.define_schema()
    return schema.display_name or schema.node_id


def check_float_inputs(cls: type[io.ComfyNode], values: dict[str, Any],
                       ranges: "dict[str, tuple[Any, Any]] | None" = None, node: "str | None" = None) -> None:
    """ValueError naming the node, the input, its rule and the value when a FLOAT input is NaN, inf or outside its
    widget range (inputs left out, e.g. optional ones, are skipped). ``ranges`` and ``node`` default to the
    schema's (the guard passes them, read once at registration)."""
    node = _node_name(cls) if node is None else node
    for name, (lo, hi) in (float_inputs(cls) if ranges is None else ranges).items():
        if name not in values or values[name] is None:
            continue
        v = values[name]
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{node}: input '{name}' must be a number, got {v!r}") from None
        if not math.isfinite(x):
            raise ValueError(f"{node}: input '{name}' must be a finite number, got {v!r}; give a real value "
                             f"(range {lo}..{hi})")
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            raise ValueError(f"{node}: input '{name}' must be in [{lo}, {hi}], got {x}")


def guard_float_inputs(cls: type[io.ComfyNode]) -> type[io.ComfyNode]:
    """Wrap ``cls.execute`` (sync or async) so :func:`check_float_inputs` runs first; idempotent; returns ``cls``."""
    original = cls.__dict__.get("execute")
    if original is None or getattr(original, _GUARDED, False):
        return cls
    func = original.__func__ if isinstance(original, classmethod) else original
    positional = list(inspect.signature(func).parameters)[1:]  # after cls
    ranges, node = float_inputs(cls), _node_name(cls)  # once, at registration

    def named(klass, args, kwargs) -> dict[str, Any]:
        return {**dict(zip(positional, args)), **kwargs}

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def execute(klass, *args, **kwargs):
            check_float_inputs(klass, named(klass, args, kwargs), ranges, node)
            return await func(klass, *args, **kwargs)
    else:
        @functools.wraps(func)
        def execute(klass, *args, **kwargs):
            check_float_inputs(klass, named(klass, args, kwargs), ranges, node)
            return func(klass, *args, **kwargs)

    setattr(execute, _GUARDED, True)
    cls.execute = classmethod(execute)
    return cls
