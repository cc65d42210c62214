"""Node widgets built from the core's config dataclasses, so a default is written once (in ``e4d``) and a node
restates nothing: :func:`field_input` reads the field's type, default and docstring (the string literal under
the field, our config convention) and returns the matching ``io.Int`` / ``io.Float`` / ``io.Boolean`` /
``io.Combo`` / ``io.String`` input.

What the dataclass cannot know stays at the call site: widget bounds (``min``/``max``/``step``, the UI's range)
and the options of a combo (a core constant such as ``e4d.fit.PRESETS``).
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
import typing
from typing import Any, Optional, Sequence

from comfy_api.latest import io


@functools.lru_cache(maxsize=None)
def field_docs(config_cls: type) -> dict[str, str]:
    """``{field name: docstring}`` of a dataclass whose fields carry a string literal right below them.

    Read from the class source with ``ast`` (Python keeps no attribute docstrings at run time); {} when the source
    is unavailable (e.g. a frozen executable), so tooltips then come from the call site only.
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(config_cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def field_default(config_cls: type, name: str) -> Any:
    """The default of dataclass field ``name`` (``default`` or ``default_factory()``); KeyError naming the class."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    if name not in fields:
        raise KeyError(f"{config_cls.__name__} has no field {name!r}; fields: {', '.join(fields)}")
    f = fields[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"{config_cls.__name__}.{name} has no default, so a widget cannot take one from it")


def _base_type(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


def field_input(config_cls: type, name: str, *, widget: Optional[str] = None, default: Any = dataclasses.MISSING,
                options: Optional[Sequence[str]] = None, tooltip: Optional[str] = None, note: str = "",
                **bounds: Any) -> io.Input:
    """The node input of field ``name`` of ``config_cls``.

    Args:
        widget: the input's id when it differs from the field name (old workflows keep working).
        default: only for a field the widget shows one element of (e.g. ``scales[0]``); else the field's.
        options: combo options (a core constant); a str field with options becomes an ``io.Combo``.
        tooltip: replaces the field docstring; ``note`` is appended to either (UI-only advice).
        bounds: ``min``, ``max``, ``step``, ``optional``, ``multiline``, ``control_after_generate`` ...
    """
    hint = _base_type(typing.get_type_hints(config_cls)[name])
    value = field_default(config_cls, name) if default is dataclasses.MISSING else default
    text = tooltip if tooltip is not None else field_docs(config_cls).get(name, "")
    text = " ".join(t for t in (text, note) if t)
    if not text:
        raise ValueError(f"{config_cls.__name__}.{name} has no docstring; pass tooltip= for its widget")
    key = widget or name
    if options is not None:
        opts = list(options)
        if value not in opts:
            raise ValueError(f"default {value!r} of {config_cls.__name__}.{name} is not among its options {opts}")
        return io.Combo.Input(key, options=opts, default=value, tooltip=text, **bounds)
    kind = type(value) if default is not dataclasses.MISSING else hint
    if kind is bool:
        return io.Boolean.Input(key, default=bool(value), tooltip=text, **bounds)
    if kind is int:
        return io.Int.Input(key, default=int(value), tooltip=text, **bounds)
    if kind is float:
        return io.Float.Input(key, default=float(value), tooltip=text, **bounds)
    if kind is str:
        return io.String.Input(key, default=str(value), tooltip=text, **bounds)
    raise TypeError(f"{config_cls.__name__}.{name} has type {hint!r}; widgets exist for bool, int, float and str")


def param_default(func: Any, name: str) -> Any:
    """The default of parameter ``name`` of core function ``func`` (for widgets that map onto an argument)."""
    p = inspect.signature(func).parameters.get(name)
    if p is None or p.default is inspect.Parameter.empty:
        raise KeyError(f"{func.__qualname__} has no parameter {name!r} with a default")
    return p.default
