"""Cancel reaches the long loops of the Export node: a cancelled PLY / .splat sequence stops at the next file and
leaves nothing under the final names."""
from __future__ import annotations

import pytest

from comfy_env import comfy, comfy_dirs, require_comfy  # noqa: F401  (fixtures)

require_comfy()

from e4d.gaussians4d import init_random  # noqa: E402
from nodes.export import Export4D  # noqa: E402


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("kind", ["ply", "splat"])
def test_cancel_mid_sequence_stops_and_leaves_nothing(comfy_dirs, monkeypatch, kind):
    import comfy.model_management as mm

    checks = []

    def interrupt_after_a_few():
        checks.append(1)
        if len(checks) > 4:  # the node's first step passes, then a few sequence files
            raise Interrupted

    monkeypatch.setattr(mm, "throw_exception_if_processing_interrupted", interrupt_after_a_few)
    g = init_random(num=50, radius=0.3, sigma_t=0.6, scale=0.08, opacity=0.9, seed=0)
    with pytest.raises(Interrupted):
        Export4D.execute(g, filename_prefix="e4d/obj", native=False, ply_sequence=kind == "ply", ply_frames=40,
                         splatv=False, video=False, fps=8.0, splat_sequence=kind == "splat")
    assert len(checks) < 10  # stopped within a few files of the 40
    out = comfy_dirs["output"] / "e4d"
    assert not out.exists() or list(out.iterdir()) == []  # no sequence folder, no hidden temporary
