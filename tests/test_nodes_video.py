"""Video loading: every container kind, alpha, frame selection, lazy decoding and the E4D_LoadVideo node."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from comfy_env import comfy, comfy_dirs  # noqa: F401  (fixtures)
from e4d.video_decode import DecodeConfig, decode_video

W, H, N = 40, 32, 7


def _frame(i: int) -> np.ndarray:
    """RGBA frame i: red encodes the index, a 12x12 opaque square moves right by 3 px per frame."""
    a = np.zeros((H, W, 4), np.uint8)
    a[..., 0] = 30 * i
    a[..., 1] = 100
    a[..., 2] = 200
    a[10:22, 4 + 3 * i: 16 + 3 * i, 3] = 255
    return a


def _index_of(rgb: torch.Tensor) -> int:
    return int(round(float(rgb[16, 10 + 0, 0] if rgb.ndim == 3 else rgb[..., 0].mean()) * 255 / 30))


def write_video(path: Path, codec: str, pix_fmt: str, n: int = N, rate: int = 12) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = W, H, pix_fmt
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgba")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_folder(folder: Path, n: int = N) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(_frame(i)).save(folder / f"frame{i}.png")  # natural order: frame10 after frame9
    return folder


def write_animation(path: Path, n: int = N) -> Path:
    from PIL import Image

    ims = [Image.fromarray(_frame(i)) for i in range(n)]
    kw = dict(save_all=True, append_images=ims[1:], duration=100, loop=0)
    if path.suffix == ".webp":
        kw["lossless"] = True
    if path.suffix == ".gif":
        ims = [im.convert("RGBA") for im in ims]
        kw["disposal"] = 2
    ims[0].save(path, **kw)
    return path


@pytest.mark.parametrize("kind", ["folder", "png", "webp", "gif", "webm_vp9_alpha", "mov_qtrle", "mov_png"])
def test_decode_keeps_alpha_and_selects_frames(tmp_path, kind):
    src = {
        "folder": lambda: write_folder(tmp_path / "frames"),
        "png": lambda: write_animation(tmp_path / "a.png"),
        "webp": lambda: write_animation(tmp_path / "a.webp"),
        "gif": lambda: write_animation(tmp_path / "a.gif"),
        "webm_vp9_alpha": lambda: write_video(tmp_path / "a.webm", "libvpx-vp9", "yuva420p"),
        "mov_qtrle": lambda: write_video(tmp_path / "a.mov", "qtrle", "argb"),
        "mov_png": lambda: write_video(tmp_path / "b.mov", "png", "rgba"),
    }[kind]()
    d = decode_video(src, DecodeConfig(start=1, stride=2, max_frames=2), default_fps=5.0)
    assert d.indices == [1, 3]
    assert d.frames.shape == (2, H, W, 3) and d.alpha is not None and d.alpha.shape == (2, H, W)
    for k, i in enumerate(d.indices):  # the moving square is where frame i put it
        assert d.alpha[k, 16, 4 + 3 * i + 6] > 0.9, (kind, i)
        assert d.alpha[k, 16, 4 + 3 * i - 2 if i else W - 1] < 0.1, (kind, i)
        assert abs(float(d.frames[k, 16, 4 + 3 * i + 6, 1]) - 100 / 255) < 0.06  # green inside the square
    if kind == "folder":
        assert d.source_fps == 5.0 and d.fps == 2.5
    elif kind in ("png", "webp", "gif"):
        assert abs(d.source_fps - 10.0) < 0.5 and abs(d.fps - 5.0) < 0.3
    else:
        assert d.source_fps == 12.0 and d.fps == 6.0


def test_opaque_video_has_no_alpha_and_downscales(tmp_path):
    src = write_video(tmp_path / "a.mp4", "mpeg4", "yuv420p")
    d = decode_video(src, DecodeConfig(max_frames=3, max_side=20))
    assert d.alpha is None and d.frames.shape == (3, 16, 20, 3) and d.indices == [0, 1, 2]
    red = [float(d.frames[k, ..., 0].mean()) * 255 for k in range(3)]
    assert red[0] < red[1] < red[2]  # frame order kept (red grows with the index)


def test_decoding_stops_at_the_cap(tmp_path):
    folder = write_folder(tmp_path / "frames")
    (folder / "frame5.png").write_bytes(b"not a png")  # would fail if it were read
    assert decode_video(folder, DecodeConfig(max_frames=4)).indices == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="frame5.png"):
        decode_video(folder)


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        decode_video(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image frames"):
        decode_video(tmp_path / "empty")
    src = write_folder(tmp_path / "frames", n=3)
    with pytest.raises(ValueError, match="lower 'start'"):
        decode_video(src, DecodeConfig(start=5))
    with pytest.raises(ValueError, match="stride >= 1"):
        decode_video(src, DecodeConfig(stride=0))


# ----------------------------------------------------------------------------------------------------------------
# the node
# ----------------------------------------------------------------------------------------------------------------
def _node():
    from comfy_env import require_comfy

    require_comfy()
    from nodes.video import LoadVideo

    return LoadVideo


@pytest.fixture
def dirs(comfy_dirs):
    return comfy_dirs


def test_node_loads_folder_with_mask_and_fps(dirs):
    LoadVideo = _node()
    write_folder(dirs["input"] / "walk")
    names = LoadVideo.GET_SCHEMA().inputs[0].options
    assert "walk/" in names
    assert LoadVideo.validate_inputs(video="walk/") is True
    assert "not found" in LoadVideo.validate_inputs(video="nope.mp4")
    out = LoadVideo.execute(video="walk/", start_frame=0, stride=3, max_frames=0, max_side=0, fps_if_unknown=9.0)
    image, mask, fps = out.result
    assert image.shape == (3, H, W, 3) and mask.shape == (3, H, W) and fps == 3.0
    assert mask[1, 16, 4 + 9 + 6] == 1.0 and mask[1, 16, 0] == 0.0  # 1 = object, not core LoadImage's inversion
    assert LoadVideo.fingerprint_inputs(video="walk/") != LoadVideo.fingerprint_inputs(video="")


def test_node_video_input_file_and_components(dirs):
    LoadVideo = _node()
    from comfy_api.latest import InputImpl, Types

    src = write_video(dirs["input"] / "clip.webm", "libvpx-vp9", "yuva420p")
    image, mask, fps = LoadVideo.execute(video="", max_frames=2, video_in=InputImpl.VideoFromFile(str(src))).result
    assert image.shape == (2, H, W, 3) and fps == 12.0 and mask[0, 16, 10] > 0.9 and mask[0, 0, 0] < 0.1
    comp = Types.VideoComponents(images=torch.rand(9, H, W, 3), frame_rate=Fraction(24))
    image, mask, fps = LoadVideo.execute(video="", start_frame=1, stride=4,
                                         video_in=InputImpl.VideoFromComponents(comp)).result
    assert image.shape == (2, H, W, 3) and torch.equal(image, comp.images[[1, 5]]) and fps == 6.0
    assert bool((mask == 1).all())
    with pytest.raises(ValueError, match="video_in"):
        LoadVideo.execute(video="")
