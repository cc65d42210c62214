"""Zero123 guidance loader node: dropdown, lazy loading, the object it returns follows the fit's protocol."""
from __future__ import annotations

import pytest

from comfy_env import comfy, comfy_dirs, require_comfy  # noqa: F401

require_comfy()

from test_nodes_memory import import_model_patcher, loaded_patchers, user_model  # noqa: E402,F401

import_model_patcher()

from nodes import guidance as N  # noqa: E402
from tiny_zero123 import write_tiny_zero123, write_tiny_zero123_single_file  # noqa: E402
from tiny_zero123 import hide_torchvision_stub  # noqa: E402


@pytest.fixture(autouse=True)
def _no_torchvision_stub():
    hide_torchvision_stub()  # see tests/tiny_zero123.py: ComfyUI's CPU stub confuses transformers


def test_schema():
    s = N.Zero123GuidanceLoader.GET_SCHEMA()
    assert s.node_id == "E4D_Zero123GuidanceLoader" and s.category.startswith("Efficient4D")
    assert all(i.tooltip for i in s.inputs) and all(o.tooltip for o in s.outputs)


def test_loader_is_lazy_and_follows_protocol(comfy_dirs, user_model):
    import folder_paths

    from e4d.fit.guidance_api import check_guidance
    from e4d.guidance.refine import RefineGuidance
    from e4d.guidance.zero123 import Zero123Guidance

    assert N._zero123_choices() == [N.M.NO_MODELS]
    assert "ashawkey/zero123-xl-diffusers" in N.Zero123GuidanceLoader.validate_inputs("diffusers/none")
    write_tiny_zero123(comfy_dirs["models"] / "diffusers" / "zero123-xl-tiny")
    write_tiny_zero123_single_file(comfy_dirs["models"] / "checkpoints" / "stable_zero123.ckpt")
    folder_paths.filename_list_cache.clear()
    assert N._zero123_choices() == ["diffusers/zero123-xl-tiny", "checkpoints/stable_zero123.ckpt"]
    import torch

    with torch.inference_mode():  # as ComfyUI executes nodes
        guid, info = N.Zero123GuidanceLoader.execute("checkpoints/stable_zero123.ckpt", weight=0.5).result
    assert isinstance(guid, Zero123Guidance) and guid._model is None  # nothing on the compute device yet
    before = set(map(id, loaded_patchers()))
    comps = guid._loader()  # what the fit's prepare() calls: ComfyUI's memory manager loads the weights
    (ours,) = [p for p in loaded_patchers() if id(p) not in before]
    assert ours.model.core is comps and set(ours.model.parts) == {"unet", "vae", "image_encoder",
                                                                  "camera_projection"}
    assert user_model in loaded_patchers()
    assert not any(p.is_inference() for p in ours.model.parameters())  # SDS back-propagates through them
    assert guid.config.variant == "stable-zero123" and "stable-zero123" in info
    check_guidance(guid)
    assert guid.weight == 0.5
    ref, _ = N.Zero123GuidanceLoader.execute("diffusers/zero123-xl-tiny", mode="refine", refine_steps=5).result
    assert isinstance(ref, RefineGuidance) and ref.config.variant == "zero123-xl" and ref.config.steps == 5
    with pytest.raises(ValueError, match="t_min"):
        N.Zero123GuidanceLoader.execute("diffusers/zero123-xl-tiny", t_min=0.9, t_max=0.1)
    # 'every' = k: every k-th step, k views per sampled time, loss times k (the default k = 2)
    assert (guid.config.every, guid.views_per_time, guid.config.carry_skipped) == (2, 2, True)
    g3, _ = N.Zero123GuidanceLoader.execute("diffusers/zero123-xl-tiny", every=3).result
    assert (g3.config.every, g3.views_per_time, g3.step_factor()) == (3, 3, 3.0)


def test_fit_node_makes_room_for_the_guidance_step():
    """The fit node's request to ComfyUI's memory manager includes the SDS step's working memory for its
    times_per_batch x views_per_time renders (the encoder activations are GBs: without them a 12 GiB card overran)."""
    from types import SimpleNamespace

    import torch

    from e4d.fit import preset
    from e4d.guidance.zero123 import SDSConfig, Zero123Guidance
    from nodes.fit import _fit_bytes

    vm = SimpleNamespace(images=torch.zeros(1), H=256, W=256)
    cfg = preset("recommended")
    base = _fit_bytes(vm, cfg)
    guid = Zero123Guidance(lambda: None, SDSConfig())
    assert _fit_bytes(vm, cfg, guid) - base == guid.working_bytes(cfg.times_per_batch * 2) >= 2e9
    assert _fit_bytes(vm, cfg.replace(lambda_sds=0.0), guid) == _fit_bytes(vm, cfg.replace(lambda_sds=0.0))
