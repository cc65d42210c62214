"""``python -m e4d run`` on the CPU: tiny random models written in the official file formats into a ComfyUI-style
models folder, the bundled 64 px demo frames as the video (a folder of RGBA PNGs), everything sized down by flags."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from e4d.cli import main

REPO = Path(__file__).resolve().parents[1]
FRAMES = REPO / "e4d" / "data" / "cesium_man_demo" / "input"
sys.path.insert(0, str(REPO / "tests"))
TINY = ["--size", "64", "--keyframes", "3", "--steps", "2", "--iterations", "2", "--points", "200",
        "--orbit-frames", "2", "--orbit-size", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    from tiny_rife import write_tiny_rife
    from tiny_syncdreamer import write_tiny_syncdreamer
    from tiny_zero123 import write_tiny_zero123

    root = tmp_path_factory.mktemp("models")
    write_tiny_syncdreamer(root / "syncdreamer")
    write_tiny_rife(root / "rife", "4.7")
    write_tiny_zero123(root / "diffusers" / "zero123-xl-diffusers")
    return root


def test_run_video_writes_model_video_and_plys(models_dir, tmp_path, capsys):
    from e4d.export import load_native, read_native_meta

    out = tmp_path / "out"
    rc = main(["run", "--video", str(FRAMES), "--models", str(models_dir), "--out", str(out), *TINY])
    cap = capsys.readouterr()
    assert rc == 0, cap.err[-3000:]
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert [r["stage"] for r in summary["stages"]] == ["preprocess", "syncdreamer", "interpolate", "confidence",
                                                       "fit", "orbit", "export"]
    assert "stage 2/5: syncdreamer" in cap.err  # progress lines on stderr
    g = load_native(out / "model.safetensors")
    assert g.num == summary["num_gaussians"] > 0
    meta = read_native_meta(out / "model.safetensors")["meta"]
    assert len(meta["times"]) == 3 and meta["source"] == str(FRAMES)
    assert meta["models"]["syncdreamer"].endswith("syncdreamer-tiny.ckpt")
    assert meta["fit"]["iterations"] == 2 and meta["fit"]["num_points"] == 200
    assert len(list((out / "ply").glob("frame_*.ply"))) == 3  # one per key frame
    assert Path(summary["video"]).stat().st_size > 0


def test_missing_weights_are_named_with_folders_and_source(tmp_path, capsys):
    (tmp_path / "models").mkdir()
    rc = main(["run", "--video", str(FRAMES), "--models", str(tmp_path / "models"), "--out", str(tmp_path / "o"),
               *TINY])
    err = capsys.readouterr().err
    assert rc != 0 and not (tmp_path / "o").exists()
    assert "SyncDreamer checkpoint not found" in err and str(tmp_path / "models" / "syncdreamer") in err
    assert "https://huggingface.co/liuyuan-pal/SyncDreamer" in err
    assert "RIFE weights not found" in err and "--flow" in err
    assert "Zero123 (SDS guidance) not found" in err and "--no-sds" in err


def test_flow_and_no_sds_need_only_syncdreamer(tmp_path, capsys):
    rc = main(["run", "--video", str(FRAMES), "--models", str(tmp_path), "--out", str(tmp_path / "o"), "--flow",
               "--no-sds", *TINY])
    err = capsys.readouterr().err
    assert rc != 0 and "SyncDreamer checkpoint not found" in err
    assert "RIFE" not in err and "Zero123" not in err


def test_run_image_goes_through_the_loader_checks(tmp_path):
    import numpy as np
    from PIL import Image

    from e4d.cli import _read_image

    grey = tmp_path / "grey16.png"
    Image.fromarray(np.full((6, 5), 32768, np.uint16)).save(grey)  # 16-bit greyscale: about 0.5, not white
    rgba = _read_image(grey)
    assert rgba.shape == (6, 5, 4) and abs(float(rgba[..., :3].mean()) - 0.5) < 0.01 and float(rgba[..., 3].min()) == 1.0
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    with pytest.raises(ValueError):
        _read_image(fake)
