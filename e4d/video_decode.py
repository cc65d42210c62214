"""Video loading for the pipeline: video files, animated images and folders of frames → RGB + alpha tensors.

Only the kept frames are decoded into memory (``start``, ``stride``, ``max_frames``, optional ``max_side``
downscale), frame by frame, so a long or large video never has to fit in RAM. Alpha is kept when the source has
it (RGBA PNG frames, GIF transparency, animated WebP/APNG, VP8/VP9 WebM with ``alpha_mode=1``, MOV with
qtrle/png/ProRes 4444 and other alpha pixel formats).

Backends: PyAV for video containers (WebM alpha is decoded with ``libvpx``, FFmpeg's native VP9 decoder drops
it), Pillow for GIF/WebP/APNG and image folders, OpenCV as the fallback for containers PyAV cannot open.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Union

import numpy as np
import torch
from torch import Tensor

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
ANIMATED_EXTENSIONS = (".gif", ".webp", ".png", ".apng")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
Source = Union[str, Path, BinaryIO]


@dataclass
class FrameSelection:
    """Which source frames to keep: ``start, start + stride, ...`` up to ``max_frames`` of them."""

    start: int = 0
    """Index of the first kept frame (0-based)."""
    stride: int = 1
    """Keep every ``stride``-th frame from ``start`` (2 halves the frame rate)."""
    max_frames: int = 0
    """Most frames to keep; 0 keeps all."""
    max_side: int = 0
    """Downscale frames whose longest side exceeds this many pixels (aspect kept); 0 keeps the size."""

    def check(self) -> None:
        if self.start < 0 or self.stride < 1 or self.max_frames < 0 or self.max_side < 0:
            raise ValueError(f"frame selection needs start >= 0, stride >= 1, max_frames >= 0, max_side >= 0; got "
                             f"start={self.start}, stride={self.stride}, max_frames={self.max_frames}, "
                             f"max_side={self.max_side}")

    def keeps(self, index: int) -> bool:
        return index >= self.start and (index - self.start) % self.stride == 0

    def done(self, index: int, kept: int) -> bool:
        """True once no later frame can be kept (cap reached)."""
        return self.max_frames > 0 and kept >= self.max_frames

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        if self.max_side <= 0 or max(width, height) <= self.max_side:
            return width, height
        s = self.max_side / max(width, height)
        return max(1, round(width * s)), max(1, round(height * s))


@dataclass
class DecodedVideo:
    """Decoded frames of a clip."""

    frames: Tensor
    """``[N, H, W, 3]`` float32 RGB in [0, 1] (straight colour, not composited)."""
    alpha: Optional[Tensor]
    """``[N, H, W]`` float32 coverage in [0, 1] when the source has alpha, else None."""
    fps: float
    """Frame rate of the *kept* frames (source rate / stride)."""
    source_fps: float
    """Frame rate of the source."""
    indices: list[int]
    """Source frame index of every kept frame."""


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def frame_files(folder: Path) -> list[Path]:
    """Image files of a frame folder in natural order (``f2.png`` before ``f10.png``)."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS
             and not p.name.startswith(".")]
    return sorted(files, key=_natural_key)


def _pil_has_alpha(im) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa") or (im.mode == "P" and "transparency" in im.info)


def _pil_rgba(im, sel: FrameSelection) -> np.ndarray:
    from PIL import Image

    rgba = im.convert("RGBA")
    size = sel.target_size(*rgba.size)
    if size != rgba.size:
        rgba = rgba.resize(size, Image.BICUBIC)
    return np.asarray(rgba, dtype=np.uint8)


def _iter_folder(folder: Path, sel: FrameSelection) -> Iterator[tuple[int, np.ndarray, bool]]:
    from PIL import Image

    files = frame_files(folder)
    if not files:
        raise FileNotFoundError(f"no image frames ({', '.join(FRAME_EXTENSIONS)}) in folder {folder}")
    kept = 0
    for i, f in enumerate(files):
        if sel.done(i, kept):
            return
        if not sel.keeps(i):
            continue
        try:
            with Image.open(f) as im:
                yield i, _pil_rgba(im, sel), _pil_has_alpha(im)
        except OSError as e:
            raise ValueError(f"cannot read frame {f}: {e}") from e
        kept += 1


def _iter_pil_animation(path: Path, sel: FrameSelection, info: dict) -> Iterator[tuple[int, np.ndarray, bool]]:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        durations = []
        kept = 0
        for i, frame in enumerate(ImageSequence.Iterator(im)):
            if sel.done(i, kept):
                break
            if not sel.keeps(i):
                continue
            rgba = _pil_rgba(frame, sel)  # loads the frame; WebP sets its duration only then
            durations.append(frame.info.get("duration", im.info.get("duration", 0)) or 0)
            ms = [d for d in durations if d > 0]
            info["fps"] = 1000.0 / float(np.mean(ms)) if ms else 0.0
            # GIF frames after the first often come as "RGB" with disposal applied; the first frame's
            # transparency tells whether the animation has alpha at all.
            yield i, rgba, _pil_has_alpha(frame) or _pil_has_alpha(im)
            kept += 1


def _pyav_alpha_decoder(stream):
    """A libvpx decoder for VP8/VP9 streams that carry alpha (FFmpeg's native decoders ignore it), else None."""
    import av

    meta = {k.lower(): v for k, v in (stream.metadata or {}).items()}
    name = stream.codec_context.name
    if str(meta.get("alpha_mode", "0")) != "1" or name not in ("vp8", "vp9"):
        return None
    try:
        return av.CodecContext.create("libvpx-vp9" if name == "vp9" else "libvpx", "r")
    except Exception:  # this FFmpeg build has no libvpx: decode without alpha
        return None


def _pix_fmt_has_alpha(name: Optional[str]) -> bool:
    """yuva*/rgba/argb/gbrap/ya8 carry alpha; palettes may (an opaque result is dropped later anyway)."""
    import av

    try:
        fmt = av.VideoFormat(name)
    except (ValueError, TypeError):
        return False
    return fmt.has_palette or len(fmt.components) in (2, 4)


def _iter_pyav(source, sel: FrameSelection, info: dict) -> Iterator[tuple[int, np.ndarray, bool]]:
    import av

    with av.open(source) as container:
        if not container.streams.video:
            raise ValueError(f"{_name(source)} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        info["fps"] = float(rate) if rate else 0.0
        info["frames"] = int(stream.frames or 0)
        alpha_dec = _pyav_alpha_decoder(stream)
        has_alpha = alpha_dec is not None or _pix_fmt_has_alpha(stream.codec_context.pix_fmt)

        def frames():
            if alpha_dec is None:
                yield from container.decode(stream)
                return
            for packet in container.demux(stream):
                try:
                    yield from alpha_dec.decode(packet)
                except av.error.EOFError:
                    return

        kept = 0
        for i, frame in enumerate(frames()):
            if sel.done(i, kept):
                return
            if not sel.keeps(i):
                continue
            w, h = sel.target_size(frame.width, frame.height)
            if (w, h) != (frame.width, frame.height):
                frame = frame.reformat(width=w, height=h)
            yield i, frame.to_ndarray(format="rgba" if has_alpha else "rgb24"), has_alpha
            kept += 1


def _iter_opencv(path: Path, sel: FrameSelection, info: dict) -> Iterator[tuple[int, np.ndarray, bool]]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path} with PyAV or OpenCV; re-encode it as H.264 mp4 or VP9 webm")
    try:
        info["fps"] = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        kept, i = 0, 0
        while not sel.done(i, kept):
            ok = cap.grab()  # grab without decoding the colour conversion of skipped frames
            if not ok:
                return
            if sel.keeps(i):
                ok, bgr = cap.retrieve()
                if not ok:
                    return
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                w, h = sel.target_size(rgb.shape[1], rgb.shape[0])
                if (w, h) != (rgb.shape[1], rgb.shape[0]):
                    rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
                yield i, rgb, False
                kept += 1
            i += 1
    finally:
        cap.release()


def _name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "the video stream"


def _is_animated(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return bool(getattr(im, "is_animated", False)) or path.suffix.lower() == ".gif"
    except OSError:
        return False


def iter_frames(source: Source, selection: FrameSelection = FrameSelection(),
                info: Optional[dict] = None) -> Iterator[tuple[int, np.ndarray, bool]]:
    """Yield ``(source_index, uint8 [H, W, 3|4], has_alpha)`` for every kept frame, decoding lazily.

    ``info`` (a dict) receives ``fps`` (source rate; 0 when unknown) as soon as it is known.
    """
    selection.check()
    info = {} if info is None else info
    if not isinstance(source, (str, Path)):
        yield from _iter_pyav(source, selection, info)
        return
    path = Path(source)
    if path.is_dir():
        yield from _iter_folder(path, selection)
        return
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    ext = path.suffix.lower()
    if ext in ANIMATED_EXTENSIONS and _is_animated(path):
        yield from _iter_pil_animation(path, selection, info)
        return
    if ext in FRAME_EXTENSIONS:  # a single still image: a one-frame clip
        yield from _iter_folder_single(path, selection)
        return
    try:
        import av
    except ImportError:
        yield from _iter_opencv(path, selection, info)
        return
    started = False
    try:
        for item in _iter_pyav(str(path), selection, info):
            started = True
            yield item
    except av.error.FFmpegError:
        if started:  # a stream broken mid-way: falling back would repeat frames
            raise
        yield from _iter_opencv(path, selection, info)  # a container/codec this PyAV build cannot read


def _iter_folder_single(path: Path, sel: FrameSelection) -> Iterator[tuple[int, np.ndarray, bool]]:
    from PIL import Image

    if not sel.keeps(0):
        return
    with Image.open(path) as im:
        yield 0, _pil_rgba(im, sel), _pil_has_alpha(im)


def decode_video(source: Source, selection: FrameSelection = FrameSelection(), default_fps: float = 8.0,
                 callback=None) -> DecodedVideo:
    """Decode the kept frames of ``source`` (video file, animated image, frame folder or a binary stream).

    Args:
        source: path of a file or folder, or a binary file object (e.g. ComfyUI's VIDEO stream source).
        selection: start / stride / cap / downscale, see :class:`FrameSelection`.
        default_fps: rate reported for sources without timing (frame folders, still images).
        callback: optional ``ProgressCallback`` called after each kept frame (total = cap when set).

    Returns:
        :class:`DecodedVideo`; ``alpha`` is None when the source has no alpha channel.

    Raises:
        FileNotFoundError: missing file or empty folder. ValueError: undecodable data, mixed frame sizes, or
        nothing left after ``start``/``stride``.
    """
    from .progress import report

    info: dict = {}
    frames: list[np.ndarray] = []
    indices: list[int] = []
    any_alpha = False
    for idx, arr, has_alpha in iter_frames(source, selection, info):
        if frames and arr.shape[:2] != frames[0].shape[:2]:
            raise ValueError(f"frame {idx} of {_name(source)} is {arr.shape[1]}x{arr.shape[0]} but frame "
                             f"{indices[0]} is {frames[0].shape[1]}x{frames[0].shape[0]}; all frames need one size")
        frames.append(arr)
        indices.append(idx)
        any_alpha |= bool(has_alpha) and arr.shape[-1] == 4
        report(callback, len(frames), selection.max_frames or info.get("frames") or len(frames))
    if not frames:
        raise ValueError(f"no frames left in {_name(source)} after start={selection.start}, stride={selection.stride}"
                         f"; lower 'start' (the clip may be shorter)")
    N, (H, W) = len(frames), frames[0].shape[:2]
    rgb = torch.empty(N, H, W, 3, dtype=torch.float32)
    alpha = torch.ones(N, H, W, dtype=torch.float32) if any_alpha else None
    for i, arr in enumerate(frames):  # fill in place: no second full-size float copy
        t = torch.from_numpy(np.require(arr, requirements=("C", "W")))
        rgb[i] = t[..., :3].float().div_(255.0)
        if alpha is not None and arr.shape[-1] == 4:
            alpha[i] = t[..., 3].float().div_(255.0)
        frames[i] = None  # type: ignore[call-overload]  # release the uint8 frame early
    if alpha is not None and bool((alpha >= 1.0).all()):
        alpha = None  # an alpha channel that is opaque everywhere carries no information
    src_fps = float(info.get("fps") or 0.0) or float(default_fps)
    return DecodedVideo(rgb, alpha, src_fps / selection.stride, src_fps, indices)


def decode_video_bytes(data: bytes, selection: FrameSelection = FrameSelection(), default_fps: float = 8.0) -> DecodedVideo:
    """:func:`decode_video` of an in-memory container (e.g. an upload)."""
    return decode_video(io.BytesIO(data), selection, default_fps)
