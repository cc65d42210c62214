"""e4d.pipeline end to end on the CPU with the test suite's tiny random models (64 px, K = 3, 2 DDIM steps, x2 in
time, 3 fit steps): the phases run in order through the hooks, the callback sees every stage and can cancel
(nothing written), outputs have the documented shapes, and the model folder loader finds official-format files or
names what is missing."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import pytest
import torch

from e4d.fit import reduced_for_cpu
from e4d.pipeline import (InterpolationConfig, PipelineConfig, PipelineModels, image_to_4d, save_outputs,
                          video_to_4d, views_to_4d)
from e4d.pipeline_hooks import STAGE_MODELS, Offload, StageTimer
from e4d.progress import Cancelled

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "e4d" / "data" / "cesium_man_demo"
sys.path.insert(0, str(REPO / "tests"))
VIDEO_STAGES = ["preprocess", "syncdreamer", "interpolate", "confidence", "fit"]


class Recorder:
    """A StageHook that records (event, stage, error type) in call order."""

    def __init__(self) -> None:
        self.calls: List[tuple] = []

    def before_stage(self, stage: str, models: Any) -> None:
        self.calls.append(("before", stage, None))

    def after_stage(self, stage: str, models: Any, error: Optional[BaseException]) -> None:
        self.calls.append(("after", stage, None if error is None else type(error).__name__))


def tiny_config() -> PipelineConfig:
    c = PipelineConfig(keyframes=3, interpolation=InterpolationConfig(multiplier=2, batch=16),
                       fit=reduced_for_cpu(iterations=3, num_points=200))
    c.prepare = dataclasses.replace(c.prepare, size=64, crop_size=50)
    c.sampler = dataclasses.replace(c.sampler, steps=2)
    c.sds = dataclasses.replace(c.sds, render_size=64)
    c.svd = dataclasses.replace(c.svd, width=64, height=64, num_frames=4, steps=2, keep_frames=4)
    c.orbit = dataclasses.replace(c.orbit, frames=2, resolution=32)
    c.export = dataclasses.replace(c.export, ply_times=2)
    return c


@pytest.fixture(scope="module")
def models() -> PipelineModels:
    from tiny_syncdreamer import tiny_dims, tiny_state_dict
    from tiny_zero123 import tiny_zero123_modules

    from e4d.guidance.components import SD_SCHEDULER, Zero123Components
    from e4d.interp import RifeInterpolator
    from e4d.ldm.convert import default_image_processor
    from e4d.rife.loader import random_model
    from e4d.syncdreamer.model import SyncDreamer

    sd = SyncDreamer(tiny_dims())
    sd.load_state_dict(tiny_state_dict())
    unet, vae, enc, proj = tiny_zero123_modules()
    z = Zero123Components(unet, vae, enc, proj, dict(SD_SCHEDULER), default_image_processor(), "tiny")
    return PipelineModels(syncdreamer=sd.eval().requires_grad_(False),
                          interpolator=RifeInterpolator(random_model("4.7", seed=0), "random 4.7"), guidance=z)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(f).convert("RGBA")) for f in sorted((DEMO / "input").glob("*.png"))])


@pytest.fixture(scope="module")
def video_run(models, frames):
    rec, timer, events = Recorder(), StageTimer(torch.device("cpu")), []
    res = video_to_4d(frames, models, tiny_config(), callback=lambda s, t, i: events.append((s, t, dict(i))),
                      hooks=[rec, timer])
    return res, rec, timer, events


def test_video_to_4d_runs_the_phases_in_order(video_run):
    res, rec, timer, events = video_run
    assert rec.calls == [(e, s, None) for s in VIDEO_STAGES for e in ("before", "after")]
    assert [r["stage"] for r in timer.records] == VIDEO_STAGES and all("error" not in r for r in timer.records)
    starts = [(s, t, i["stage"]) for s, t, i in events if i.get("event") == "start"]
    assert starts == [(k + 1, 5, name) for k, name in enumerate(VIDEO_STAGES)]
    inner = {i["stage"] for s, t, i in events if "event" not in i}  # the stages' own loops report, tagged
    assert {"syncdreamer", "interpolate", "confidence", "fit"} <= inner


def test_video_to_4d_outputs(video_run):
    res, *_ = video_run
    vm = res.view_matrix
    assert vm.images.shape == (3, 16, 64, 64, 3) and vm.input_images.shape == (3, 64, 64, 3)
    assert torch.allclose(vm.times, torch.tensor([0.0, 4 / 7, 1.0]))  # 3 of 8 frames, evenly spread
    g = res.gaussians
    assert g.means.shape == (g.num, 4) and g.num > 0 and torch.isfinite(g.means).all()
    assert len(res.fit.history) >= 1 and res.time_range == (0.0, 1.0)


def test_save_outputs_writes_model_video_and_plys(video_run, tmp_path):
    from e4d.export import load_native, read_native_meta

    res, *_ = video_run
    files = save_outputs(res, tmp_path / "out", tiny_config())
    g = load_native(files["native"])
    assert g.num == res.gaussians.num and read_native_meta(files["native"])["time_range"] == [0.0, 1.0]
    assert files["num_ply"] == 2 and len(list((tmp_path / "out" / "ply").glob("frame_*.ply"))) == 2
    assert Path(files["video"]).stat().st_size > 0


@pytest.mark.parametrize("where", ["start", "inside"])
def test_callback_cancels_the_run(models, frames, where):
    def cancel(step, total, info):
        if info["stage"] == "syncdreamer" and (info.get("event") == "start") == (where == "start"):
            raise Cancelled("user pressed cancel")

    rec = Recorder()
    with pytest.raises(Cancelled):
        video_to_4d(frames, models, tiny_config(), callback=cancel, hooks=[rec])
    if where == "start":  # cancelled before the stage began: its hooks never ran
        assert rec.calls == [("before", "preprocess", None), ("after", "preprocess", None)]
    else:  # cancelled in the DDIM loop: the hooks still close the stage (offloading happens), with the error
        assert rec.calls[-1] == ("after", "syncdreamer", "Cancelled")


def test_cancelled_export_writes_nothing(video_run, tmp_path):
    res, *_ = video_run

    def cancel(step, total, info):
        if info["stage"] == "orbit":
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        save_outputs(res, tmp_path / "out", tiny_config(), callback=cancel)
    assert not (tmp_path / "out").exists()


def test_image_to_4d_runs_svd_first(models, frames):
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
    from tiny_svd import WhiteBorder, tiny_svd_modules

    from e4d.ldm.convert import default_image_processor
    from e4d.svd.convert import SVD_SCHEDULER

    unet, vae, enc = tiny_svd_modules()
    svd = StableVideoDiffusionPipeline(vae=vae, image_encoder=enc, unet=unet,
                                       feature_extractor=default_image_processor(),
                                       scheduler=EulerDiscreteScheduler.from_config(SVD_SCHEDULER))
    svd.set_progress_bar_config(disable=True)
    rec = Recorder()
    m = dataclasses.replace(models, svd=WhiteBorder(svd), guidance=None)  # no SDS: the unguided fit is covered too
    res = image_to_4d(torch.from_numpy(frames[0]).float() / 255, m, tiny_config(), hooks=[rec])
    assert [s for e, s, _ in rec.calls if e == "before"] == ["svd"] + VIDEO_STAGES
    assert res.view_matrix.images.shape == (3, 16, 64, 64, 3) and torch.isfinite(res.gaussians.means).all()


def test_views_to_4d_without_confidence_fits_only(video_run):
    res, *_ = video_run
    rec = Recorder()
    cfg = dataclasses.replace(tiny_config(), confidence=None)
    out = views_to_4d(res.view_matrix, PipelineModels(), cfg, hooks=[rec])
    assert rec.calls == [("before", "fit", None), ("after", "fit", None)] and out.gaussians.num > 0


def test_missing_model_is_named(frames):
    with pytest.raises(ValueError, match=r"PipelineModels\.syncdreamer is None.*load_models"):
        video_to_4d(frames, PipelineModels(), tiny_config())
    with pytest.raises(ValueError, match=r"PipelineModels\.svd is None"):
        image_to_4d(torch.ones(8, 8, 3), PipelineModels(syncdreamer=object()), tiny_config())


def test_input_without_alpha_needs_a_mask_or_the_white_background_option(models, frames):
    rgb = frames[..., :3]
    with pytest.raises(ValueError, match="no alpha.*white_background_masks.*--white-background"):
        video_to_4d(rgb, models, tiny_config())
    with pytest.raises(ValueError, match="no alpha"):  # an all-ones mask (ComfyUI's Load Video) is no alpha
        video_to_4d(rgb, models, tiny_config(), alpha=torch.ones(rgb.shape[:3]))
    cfg = dataclasses.replace(tiny_config(), white_background_masks=True)

    def stop_after_prepare(step, total, info):
        if info["stage"] == "syncdreamer":
            raise Cancelled("prepared: enough")

    rec = Recorder()  # the demo frames are RGBA composited on white: their masks come from the white background
    white = (frames[..., :3] * (frames[..., 3:] / 255.0) + 255 * (1 - frames[..., 3:] / 255.0)).astype(np.uint8)
    with pytest.raises(Cancelled):
        video_to_4d(white, models, cfg, callback=stop_after_prepare, hooks=[rec])
    assert rec.calls == [("before", "preprocess", None), ("after", "preprocess", None)]


def test_offload_moves_only_the_stage_models():
    class Box:
        def __init__(self) -> None:
            self.moves: List[str] = []

        def to(self, device):
            self.moves.append(torch.device(device).type)
            return self

    m = PipelineModels(syncdreamer=Box(), interpolator=Box(), guidance=None, svd=Box())
    hook = Offload(torch.device("meta"), offload_device=torch.device("cpu"))
    hook.before_stage("syncdreamer", m)
    hook.after_stage("syncdreamer", m, RuntimeError("x"))
    assert m.syncdreamer.moves == ["meta", "cpu"] and m.interpolator.moves == [] and m.svd.moves == []
    assert STAGE_MODELS["confidence"] == ("interpolator",) and STAGE_MODELS["fit"] == ("guidance",)


# -- model folder -------------------------------------------------------------------------------------------------
def test_load_models_from_official_files(tmp_path):
    from tiny_rife import write_tiny_rife
    from tiny_syncdreamer import write_tiny_syncdreamer
    from tiny_zero123 import write_tiny_zero123

    from e4d.guidance.components import Zero123Components
    from e4d.interp import RifeInterpolator
    from e4d.model_folder import load_models, sds_variant
    from e4d.syncdreamer.model import SyncDreamer

    write_tiny_syncdreamer(tmp_path / "syncdreamer")
    write_tiny_rife(tmp_path / "rife", "4.7")
    write_tiny_zero123(tmp_path / "diffusers" / "zero123-xl-diffusers")
    m = load_models(tmp_path, device="cpu")
    assert isinstance(m.syncdreamer, SyncDreamer) and isinstance(m.interpolator, RifeInterpolator)
    assert isinstance(m.guidance, Zero123Components) and m.svd is None
    assert m.sources["syncdreamer"].endswith("syncdreamer-tiny.ckpt") and sds_variant(m) == "zero123-xl"
    assert next(m.syncdreamer.parameters()).dtype == torch.float32  # CPU: fp32


def test_load_svd_from_a_diffusers_folder(tmp_path):
    from diffusers import StableVideoDiffusionPipeline
    from tiny_svd import write_tiny_svd

    from e4d.model_folder import load_models

    write_tiny_svd(tmp_path / "diffusers" / "stable-video-diffusion-img2vid-xt")
    m = load_models(tmp_path, need=["svd"], device="cpu")
    assert isinstance(m.svd, StableVideoDiffusionPipeline) and m.syncdreamer is None
    assert m.sources["svd"].endswith("stable-video-diffusion-img2vid-xt")


def test_missing_weights_names_file_folders_and_source(tmp_path):
    from tiny_syncdreamer import write_tiny_syncdreamer

    from e4d.model_folder import MissingWeights, load_models

    write_tiny_syncdreamer(tmp_path / "syncdreamer")
    with pytest.raises(MissingWeights) as e:
        load_models(tmp_path, need=["syncdreamer", "interpolator", "guidance", "svd"], device="cpu")
    msg = str(e.value)
    assert "syncdreamer" not in msg.split("not found")[0].lower()  # the one present is not reported
    assert "RIFE weights not found" in msg and str(tmp_path / "rife") in msg and "rife47.pth" in msg
    assert "Zero123 (SDS guidance) not found" in msg and str(tmp_path / "diffusers") in msg
    assert "zero123-xl-diffusers" in msg and "--no-sds" in msg
    assert "Stable Video Diffusion not found" in msg and "svd_xt.safetensors" in msg
    with pytest.raises(MissingWeights, match="models folder .* not found"):
        load_models(tmp_path / "nope", device="cpu")
