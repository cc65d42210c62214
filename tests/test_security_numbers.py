"""NaN and inf never pass silently: every FLOAT input of every node is checked before the node runs (generic, over
all registered nodes), number lists typed into text widgets too, and every float field of the core's config
dataclasses is checked by their validate(), naming the field."""
from __future__ import annotations

import dataclasses
import math

import pytest

from comfy_env import require_comfy

require_comfy()

from nodes import load_node_classes  # noqa: E402
from nodes._guards import check_float_inputs, float_inputs  # noqa: E402

NODES = load_node_classes()
CASES = [(cls, name) for cls in NODES for name in float_inputs(cls)]


def test_the_pack_has_float_inputs_to_check():
    assert len(NODES) >= 15 and len(CASES) >= 15  # a registration change must not silently drop the guard


@pytest.mark.parametrize("cls,name", CASES, ids=[f"{c.GET_SCHEMA().node_id}.{n}" for c, n in CASES])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_every_float_input_refuses_non_finite_values(cls, name, bad):
    with pytest.raises(ValueError, match=rf"input '{name}' must be a finite number"):
        cls.execute(**{name: bad})  # the guard runs before the node's own code: no other input is needed


@pytest.mark.parametrize("cls,name", CASES, ids=[f"{c.GET_SCHEMA().node_id}.{n}" for c, n in CASES])
def test_float_defaults_pass_and_out_of_range_values_do_not(cls, name):
    inp = next(i for i in cls.GET_SCHEMA().inputs if i.id == name)
    check_float_inputs(cls, {name: inp.default})
    lo, hi = float_inputs(cls)[name]
    if hi is not None:
        with pytest.raises(ValueError, match=rf"input '{name}' must be in"):
            check_float_inputs(cls, {name: hi + 1.0})
    if lo is not None:
        with pytest.raises(ValueError, match=rf"input '{name}' must be in"):
            check_float_inputs(cls, {name: lo - 1.0})


def test_number_lists_in_text_widgets_refuse_nan():
    from nodes._tensors import parse_floats

    assert parse_floats("0, 90, 180", "azimuths") == [0.0, 90.0, 180.0]
    for text in ("1,nan,1", "inf", "0, -inf"):
        with pytest.raises(ValueError, match="azimuths must be finite numbers"):
            parse_floats(text, "azimuths")


def _configs():
    from e4d.confidence_maps import ConfidenceConfig
    from e4d.fit import FitConfig
    from e4d.interp.flow import FlowConfig
    from e4d.interp.rife import RifeConfig
    from e4d.orbit import OrbitConfig
    from e4d.preprocess import PrepareConfig
    from e4d.svd.pipeline import SVDConfig
    from e4d.syncdreamer.sampler import SamplerConfig

    return [FitConfig, OrbitConfig, RifeConfig, FlowConfig, PrepareConfig, SamplerConfig, ConfidenceConfig, SVDConfig]


def test_every_float_field_of_the_core_configs_refuses_nan():
    checked = 0
    for cls in _configs():
        method = "validate" if hasattr(cls, "validate") else "check"
        base = cls()
        for f in dataclasses.fields(cls):
            if not isinstance(getattr(base, f.name), float):
                continue
            with pytest.raises(ValueError, match=rf"{cls.__name__}\.{f.name} must be a finite number"):
                bad = dataclasses.replace(base, **{f.name: math.nan})  # FitConfig validates on construction
                getattr(bad, method)()
            checked += 1
    assert checked >= 20


def test_guard_runs_on_a_locked_class(monkeypatch):
    """ComfyUI executes a locked copy of the class whose GET_SCHEMA cannot cache: the guard must not call it."""
    cls, name = CASES[0]

    def locked(*_a, **_k):
        raise AttributeError("Cannot modify class attribute 'SCHEMA' on locked class")

    monkeypatch.setattr(cls, "GET_SCHEMA", classmethod(locked))
    with pytest.raises(ValueError, match=rf"input '{name}' must be a finite number"):
        cls.execute(**{name: math.nan})
