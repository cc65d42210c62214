"""The pack's pipeline nodes called through ``execute``: prepare → assemble/save/load view matrix → fit → render →
export → load, on tiny CPU inputs (32 px, 2 times x 4 views, 64 Gaussians, 3 steps)."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from comfy_env import comfy, comfy_dirs, require_comfy  # noqa: F401  (fixtures)

require_comfy()

from e4d.gaussians4d import init_random  # noqa: E402
from e4d.metrics import ssim  # noqa: E402
from nodes import _common as C  # noqa: E402
from nodes.export import Export4D, Load4DGaussians  # noqa: E402
from nodes.fit import Fit4DGS, parse_overrides  # noqa: E402
from nodes.prepare import PrepareObjectFrames  # noqa: E402
from nodes.render import OrbitRender  # noqa: E402
from nodes.viewmatrix import AssembleViewMatrix, LoadViewMatrix, SaveViewMatrix, parse_index_list  # noqa: E402
from test_nodes_memory import import_model_patcher, loaded_patchers, user_model  # noqa: E402,F401

import_model_patcher()

S = 32
TINY_FIT = dict(preset="paper", iterations=3, num_points=64, times_per_batch=1, views_per_batch=2, sh_degree=0,
                densify="off", use_input_view=True, lambda_sds=1.0, seed=0, backend="reference", overrides="")


def _disc_views(T: int, V: int) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [T*V, S, S, 3] time-major + MASK: a disc whose colour encodes (t, v)."""
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    disc = (((xx - S / 2) ** 2 + (yy - S / 2) ** 2) < (S / 4) ** 2).float()
    imgs, masks = [], []
    for t in range(T):
        for v in range(V):
            c = torch.tensor([0.2 + 0.5 * t, 0.1 * v, 0.5])
            imgs.append(disc[..., None] * c + (1 - disc[..., None]))
            masks.append(disc)
    return torch.stack(imgs), torch.stack(masks)


@pytest.fixture
def vm():
    images, masks = _disc_views(2, 4)
    (out,) = AssembleViewMatrix.execute(images, "custom", "time-major", "0, 90, 180, 270", "30", 0.0,
                                        masks, images[[0, 4]]).result
    return out


def test_prepare_centres_object_and_explains_missing_mask(comfy_dirs):
    frames = torch.ones(3, 48, 64, 3)
    mask = torch.zeros(3, 48, 64)
    mask[:, 10:20, 5 + 0:25] = 1.0
    frames[:, 10:20, 5:25] = torch.tensor([0.8, 0.2, 0.1])
    img, m = PrepareObjectFrames.execute(frames, mask, "clip", 64, 50).result
    assert img.shape == (3, 64, 64, 3) and m.shape == (3, 64, 64)
    assert float(m[0, 32, 32]) == 1.0 and float(m[0, 0, 0]) == 0.0
    assert torch.allclose(img[0, 0, 0], torch.ones(3))  # background is white
    img2, _ = PrepareObjectFrames.execute(frames, 1.0 - mask, "clip", 64, 50, invert_mask=True).result
    assert torch.equal(img, img2)
    with pytest.raises(ValueError, match="background-removal") as e:
        PrepareObjectFrames.execute(frames, None, "clip", 64, 50)
    assert "white_background" in str(e.value)
    img3, m3 = PrepareObjectFrames.execute(frames, None, "clip", 64, 50, mask_fallback="white_background").result
    assert (m3 - m).abs().mean() < 0.01  # the white-background mask (its opening may round the box's corners)
    # Load Video's all-ones MASK of an alpha-less video means "no alpha": the same clear error, and the
    # white-background fallback then applies instead of an opaque crop.
    with pytest.raises(ValueError, match="background-removal"):
        PrepareObjectFrames.execute(frames, torch.ones(3, 48, 64), "clip", 64, 50)
    _, m4 = PrepareObjectFrames.execute(frames, torch.ones(3, 48, 64), "clip", 64, 50,
                                        mask_fallback="white_background").result
    assert torch.equal(m4, m3)


def test_assemble_orderings_and_errors(vm):
    assert (vm.T, vm.V, vm.H) == (2, 4, S) and vm.has_input and vm.alpha is not None
    images, masks = _disc_views(2, 4)
    view_major = images.reshape(2, 4, S, S, 3).transpose(0, 1).reshape(-1, S, S, 3)
    (vm2,) = AssembleViewMatrix.execute(view_major, "custom", "view-major", "0, 90, 180, 270", "30").result
    assert torch.allclose(vm2.images, vm.images)
    with pytest.raises(ValueError, match="multiple of the 16 views"):
        AssembleViewMatrix.execute(images, "syncdreamer16")
    with pytest.raises(ValueError, match="square"):
        AssembleViewMatrix.execute(torch.rand(4, S, S + 2, 3), "custom", azimuths="0,90,180,270")
    (vm3,) = AssembleViewMatrix.execute(torch.rand(6, S, S, 3), "zero123plus6").result
    assert (vm3.T, vm3.V) == (1, 6)
    assert parse_index_list("0-3, 8", "views") == [0, 1, 2, 3, 8] and parse_index_list("", "views") is None


def test_save_and_load_view_matrix_round_trip(comfy_dirs, vm):
    (folder,) = SaveViewMatrix.execute(vm, "e4d/vm").result
    assert folder.startswith(str(comfy_dirs["output"])) and os.path.isfile(os.path.join(folder, "cameras.json"))
    (folder2,) = SaveViewMatrix.execute(vm, "e4d/vm").result
    assert folder2 != folder
    name = os.path.relpath(folder, comfy_dirs["output"]) + " [output]"  # node inputs stay inside ComfyUI's folders
    loaded, grid = LoadViewMatrix.execute(name, "", True).result
    assert torch.allclose(loaded.images, vm.images, atol=1 / 255) and loaded.has_input
    assert grid.shape == (8, S, S, 3)
    shutil.copytree(folder, comfy_dirs["input"] / "my_vm")
    sub, _ = LoadViewMatrix.execute("my_vm", "1,3", False).result
    assert sub.V == 2 and not sub.has_input
    with pytest.raises(FileNotFoundError, match="cameras.json"):
        LoadViewMatrix.execute("nothing_here", "", True)


def test_fit_render_export_load(comfy_dirs, vm, monkeypatch, user_model):
    import comfy.utils

    steps = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda v, t, p, node_id=None: steps.append((v, t)))
    from e4d import metrics, rotation4d

    metrics._gauss_1d.cache_clear()  # so the inference-mode calls below are the ones that fill the core's caches
    rotation4d._tables.cache_clear()
    with torch.inference_mode():  # ComfyUI executes every node in inference mode; the fit must still train
        # earlier nodes fill the core's tensor caches (SSIM window, rotation tables) with inference tensors
        ssim(vm.images[0, :2].permute(0, 3, 1, 2), vm.images[0, 2:4].permute(0, 3, 1, 2))
        OrbitRender.execute(init_random(16), "orbit", 1, 16, backend="reference")
        vm = C.normal_tensors(vm).to("cpu")
        vm = vm.select_times([0, 1])  # made under inference mode: inference tensors
        assert vm.images.is_inference()
        (g,) = Fit4DGS.execute(vm, **TINY_FIT).result
        img, mask = OrbitRender.execute(g, "orbit", 3, 16, 30.0, 1.5, 0.0, 1.0, 1, False, 0.0, 1.0,
                                        "reference").result
    assert g.num == 64 and steps[-1] == (3, 3)
    assert not torch.equal(g.means, Fit4DGS.execute(vm, **{**TINY_FIT, "iterations": 1}).result[0].means)
    assert img.shape == (3, 16, 16, 3) and mask.shape == (3, 16, 16)
    assert user_model in loaded_patchers()  # the fit asked ComfyUI for room; it did not unload everything
    native, ply, splatv, video, splat, preview = Export4D.execute(g, "e4d/obj", True, True, 2, True, True, 8.0, True,
                                                                  frames=img, preview_time=0.9).result
    assert all(p.startswith(str(comfy_dirs["output"])) for p in (native, ply, splatv, video, splat))
    assert preview == os.path.relpath(ply, comfy_dirs["output"])[:-3] + "preview.ply"  # Y-up, for core Preview 3D
    assert (comfy_dirs["output"] / preview).is_file()
    assert sorted(os.listdir(splat)) == ["frame_0000.splat", "frame_0001.splat"]
    assert splatv.endswith("_.splatv") and os.path.getsize(splatv) > 0
    assert sorted(os.listdir(ply)) == ["frame_0000.ply", "frame_0001.ply"] and os.path.getsize(video) > 0
    native2 = Export4D.execute(g, "e4d/obj", True, False, 2, False, False, 8.0).result[0]
    assert native2 != native  # ComfyUI's counter advances
    rel = os.path.relpath(native, comfy_dirs["output"]) + " [output]"
    assert rel in Load4DGaussians.define_schema().inputs[0].options
    assert Load4DGaussians.validate_inputs(file=rel) is True
    (g2,) = Load4DGaussians.execute(rel, "").result
    assert torch.equal(g2.means, g.means) and torch.equal(g2.sh, g.sh)
    assert "not found" in Load4DGaussians.validate_inputs(file="gone.e4d.safetensors")


def test_fit_overrides_and_presets(vm):
    assert parse_overrides("lr_xyz = 0.005  # slower\n\nw_alpha=1\ndensify = true\ninit_scale = none") == \
        dict(lr_xyz=0.005, w_alpha=1.0, densify=True, init_scale=None)
    with pytest.raises(ValueError, match="not a FitConfig field"):
        parse_overrides("learning_rate = 1")
    with pytest.raises(ValueError, match="line 1"):
        parse_overrides("iterations = many")
    with pytest.raises(ValueError, match="preset"):
        Fit4DGS.execute(vm, **{**TINY_FIT, "preset": "fastest"})


def test_fit_cancel_stops_the_loop(vm):
    import comfy.model_management as mm

    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            Fit4DGS.execute(vm, **{**TINY_FIT, "iterations": 1000})
    finally:
        mm.interrupt_current_processing(False)


def test_viewmatrix_types_are_our_custom_types():
    s = Fit4DGS.GET_SCHEMA()
    types = {i.id: i.get_io_type() for i in s.inputs}
    assert types["view_matrix"] == "E4D_VIEW_MATRIX" and types["confidence"] == "E4D_CONFIDENCE"
    assert json.dumps(Fit4DGS.GET_NODE_INFO_V1())  # serializable for /object_info


def test_orbit_render_starts_from_a_core_camera():
    from nodes.render import camera_info_to_orbit

    # three.js camera on +Z (Y-up) looking at the origin = our -Y side; a camera straight above = elevation 90
    front = {"position": {"x": 0.0, "y": 0.0, "z": 2.0}, "target": {"x": 0, "y": 0, "z": 0}, "zoom": 1,
             "cameraType": "perspective", "fov": 90.0}
    got = camera_info_to_orbit(front, 64)
    assert got["azimuth_start"] == pytest.approx(-90.0) and got["elevation"] == pytest.approx(0.0)
    assert got["radius"] == pytest.approx(2.0) and got["focal"] == pytest.approx(32.0)
    above = {"position": {"x": 1.0, "y": 3.0, "z": 0.0}, "target": {"x": 1.0, "y": 1.0, "z": 0.0}}
    assert camera_info_to_orbit(above, 64)["elevation"] == pytest.approx(90.0)
    with pytest.raises(ValueError, match="position"):
        camera_info_to_orbit({"target": {}}, 64)
    if "camera_info" in [i.id for i in OrbitRender.GET_SCHEMA().inputs]:
        g = init_random(16)
        side = {"position": {"x": 1.5, "y": 0.0, "z": 0.0}, "target": {"x": 0, "y": 0, "z": 0}, "fov": None}
        a, _ = OrbitRender.execute(g, "fixed_view", 1, 16, 30.0, 9.0, 123.0, backend="reference",
                                   camera_info=side).result
        b, _ = OrbitRender.execute(g, "fixed_view", 1, 16, 0.0, 1.5, 0.0, backend="reference").result
        torch.testing.assert_close(a, b)  # +X of ComfyUI's world is our +X: azimuth 0, elevation 0
