"""Media inputs: bounded memory (default frame cap, pixel limit, frame-stack budget), truncated and damaged videos,
16-bit PNGs and non-images get a clear error or a correct result (core only, no ComfyUI)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from e4d import limits
from e4d.image_read import read_image
from e4d.video_decode import DecodeConfig, decode_video

W, H = 32, 24


def _write_mp4(path: Path, n: int = 30) -> Path:
    av = pytest.importorskip("av")
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:  # index first: truncation keeps it
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for i in range(n):
            a = np.random.RandomState(i).randint(0, 255, (H, W, 3), np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _write_frames(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.full((H, W, 3), 10 * i, np.uint8)).save(folder / f"f{i:03d}.png")
    return folder


def test_default_cap_keeps_a_bounded_number_of_frames_and_says_so(tmp_path, monkeypatch, caplog):
    folder = _write_frames(tmp_path / "frames", 12)
    monkeypatch.setenv(limits.MAX_VIDEO_FRAMES_ENV, "5")
    with caplog.at_level(logging.WARNING):
        d = decode_video(folder)
    assert d.frames.shape[0] == 5 and d.indices == [0, 1, 2, 3, 4]
    assert d.notes and "kept 5 frames" in d.notes[0] and limits.MAX_VIDEO_FRAMES_ENV in d.notes[0]
    assert any("kept 5 frames" in r.message for r in caplog.records)
    d = decode_video(folder, DecodeConfig(max_frames=8))  # an explicit cap is the user's choice: no note
    assert d.frames.shape[0] == 8 and d.notes == []
    monkeypatch.setenv(limits.MAX_VIDEO_FRAMES_ENV, "100")
    d = decode_video(folder)  # the whole clip fits under the cap: nothing to say
    assert d.frames.shape[0] == 12 and d.notes == []


def test_frame_stack_budget_refuses_before_filling_memory(tmp_path, monkeypatch):
    folder = _write_frames(tmp_path / "frames", 6)
    per_frame = H * W * 4 * 4  # RGB + alpha float32
    monkeypatch.setenv(limits.MAX_TENSOR_BYTES_ENV, str(3.5 * per_frame / 2**30))
    with pytest.raises(ValueError, match=r"4 frames of 32x24 need .*lower max_frames.*E4D_MAX_TENSOR_GB"):
        decode_video(folder)
    assert decode_video(folder, DecodeConfig(max_frames=3)).frames.shape[0] == 3


def test_budget_checks_sizes_up_front():
    with pytest.raises(ValueError, match="TiB|GiB"):
        limits.check_frames_budget("orbit", 10_000, 4096, 4096)
    with pytest.raises(ValueError, match="width must be a whole number"):
        limits.check_frames_budget("cameras.json", 1, 4, "4")  # type: ignore[arg-type]


def test_images_above_the_pixel_limit_are_refused_or_decoded_reduced(tmp_path, monkeypatch):
    monkeypatch.setenv(limits.MAX_IMAGE_PIXELS_ENV, "20000")
    big = tmp_path / "big.png"
    Image.new("RGB", (400, 400), (10, 20, 30)).save(big)
    with pytest.raises(ValueError, match=r"400x400 .*more than the .*E4D_MAX_IMAGE_PIXELS"):
        decode_video(big)
    with pytest.raises(ValueError, match="E4D_MAX_IMAGE_PIXELS"):
        read_image(big)
    jpg = tmp_path / "big.jpg"
    Image.new("RGB", (400, 400), (200, 100, 50)).save(jpg, quality=95)
    d = decode_video(jpg, DecodeConfig(max_side=100))  # JPEG draft: decoded at 1/4 scale, never at full size
    assert d.frames.shape[1:3] == (100, 100)
    assert abs(float(d.frames[..., 0].mean()) - 200 / 255) < 0.02


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    grey = np.full((H, W), 32768, np.uint16)
    grey[0, 0] = 65535
    Image.fromarray(grey).save(tmp_path / "f000.png")
    assert Image.open(tmp_path / "f000.png").mode.startswith("I")
    rgb, alpha = read_image(tmp_path / "f000.png")
    assert alpha is None and rgb.shape == (H, W, 3)
    assert abs(float(rgb[1:, 1:].mean()) - 0.5) < 1e-3 and rgb[0, 0, 0] == 1.0
    d = decode_video(tmp_path)  # a frame folder
    assert abs(float(d.frames.mean()) - 0.5) < 0.01
    d = decode_video(tmp_path / "f000.png")  # a still image
    assert abs(float(d.frames.mean()) - 0.5) < 0.01


@pytest.mark.parametrize("name", ["frame.png", "clip.gif", "frame.jpg"])
def test_a_text_file_named_like_an_image_is_a_clear_error(tmp_path, name):
    p = tmp_path / name
    p.write_text("hello, I am not an image\n")
    with pytest.raises(ValueError, match="not an image Pillow can read"):
        decode_video(p)
    with pytest.raises(ValueError, match="not an image Pillow can read"):
        read_image(p)


def test_truncated_mp4_warns_with_decoded_and_expected_counts(tmp_path):
    data = _write_mp4(tmp_path / "full.mp4").read_bytes()
    assert decode_video(tmp_path / "full.mp4").notes == []
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    d = decode_video(cut)
    assert 0 < d.frames.shape[0] < 30
    assert len(d.notes) == 1 and f"decoded {d.frames.shape[0]} of the 30 frames" in d.notes[0]
    assert "truncated" in d.notes[0]


def test_damaged_or_fake_mp4_is_a_clear_error(tmp_path):
    data = bytearray(_write_mp4(tmp_path / "full.mp4").read_bytes())
    for k in range(len(data) // 2, len(data) - 100, 5):
        data[k] ^= 0xFF
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"damaged.*re-encode"):
        decode_video(bad)
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00" * 3000)
    with pytest.raises(ValueError, match="re-encode"):
        decode_video(fake)


def test_cancel_is_checked_while_skipped_frames_are_decoded(tmp_path, monkeypatch):
    import e4d.video_decode as vd

    folder = _write_frames(tmp_path / "frames", 8)
    monkeypatch.setattr(vd, "HEARTBEAT_SECONDS", 0.0)  # every decoded frame is "a second later"
    calls = []
    d = decode_video(folder, DecodeConfig(stride=100), callback=lambda s, t, i: calls.append(s))
    assert d.frames.shape[0] == 1 and len(calls) >= 8  # one kept frame, a heartbeat for every skipped one

    class Cancelled(Exception):
        pass

    def cancel(step, total, info):
        raise Cancelled

    with pytest.raises(Cancelled):
        decode_video(folder, DecodeConfig(start=5), callback=cancel)  # cancelled before the first kept frame
