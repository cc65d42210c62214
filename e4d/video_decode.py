"""Video loading for the pipeline: video files, animated images and folders of frames → RGB + alpha tensors.

Only the kept frames are decoded into memory (``start``, ``stride``, ``max_frames``, optional ``max_side``
downscale), frame by frame, so a long or large video never has to fit in RAM. ``max_frames = 0`` keeps at most
:func:`e4d.limits.max_video_frames` frames (and says so), the kept frames must fit the frame-stack budget
(:func:`e4d.limits.check_frames_budget`, checked while decoding), and images larger than
:func:`e4d.limits.max_image_pixels` are decoded reduced (JPEG) or refused, before their pixels are read.
Alpha is kept when the source has it (RGBA PNG frames, GIF transparency, animated WebP/APNG, VP8/VP9 WebM with
``alpha_mode=1``, MOV with qtrle/png/ProRes 4444 and other alpha pixel formats).

Backends: PyAV for video containers (WebM alpha is decoded with ``libvpx``, FFmpeg's native VP9 decoder drops
it; e4d/video_containers.py), Pillow for GIF/WebP/APNG and image folders, OpenCV as the fallback for containers
PyAV cannot open.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .limits import MAX_VIDEO_FRAMES_ENV, check_frames_budget, max_video_frames
from .image_read import open_image, pil_has_alpha, pil_rgba_uint8
from .masks import informative_alpha
from .video_containers import iter_opencv, iter_pyav, record_seen, source_name

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 0.5
"""Longest time between progress callbacks (which check cancel) while decoding, skipped frames included."""

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
ANIMATED_EXTENSIONS = (".gif", ".webp", ".png", ".apng")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
Source = Union[str, Path, BinaryIO]


@dataclass
class DecodeConfig:
    """How a video is decoded: keep frames ``start, start + stride, ...``, at most ``max_frames``, downscaled to ``max_side``."""

    start: int = 0
    """Index of the first kept frame (0-based)."""
    stride: int = 1
    """Keep every ``stride``-th frame from ``start`` (2 halves the frame rate)."""
    max_frames: int = 0
    """Most frames to keep; 0 = the default cap :func:`e4d.limits.max_video_frames` (1024 unless
    E4D_MAX_VIDEO_FRAMES raises it)."""
    max_side: int = 0
    """Downscale frames whose longest side exceeds this many pixels (aspect kept); 0 keeps the size."""

    @property
    def cap(self) -> int:
        """The number of frames kept at most (``max_frames``, or the default cap when it is 0)."""
        return self.max_frames if self.max_frames > 0 else max_video_frames()

    def validate(self) -> None:
        """Raise ValueError naming the field when a value is out of range."""
        if self.start < 0 or self.stride < 1 or self.max_frames < 0 or self.max_side < 0:
            raise ValueError(f"frame selection needs start >= 0, stride >= 1, max_frames >= 0, max_side >= 0; got "
                             f"start={self.start}, stride={self.stride}, max_frames={self.max_frames}, "
                             f"max_side={self.max_side}")

    def keeps(self, index: int) -> bool:
        return index >= self.start and (index - self.start) % self.stride == 0

    def done(self, index: int, kept: int) -> bool:
        """True once no later frame can be kept (cap reached)."""
        return kept >= self.cap

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
    notes: list[str] = field(default_factory=list)
    """What the user should know about the result (default cap reached, truncated file); also logged."""


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def frame_files(folder: Path) -> list[Path]:
    """Image files of a frame folder in natural order (``f2.png`` before ``f10.png``)."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS
             and not p.name.startswith(".")]
    return sorted(files, key=_natural_key)


def _pil_rgba(im, sel: DecodeConfig) -> np.ndarray:
    from PIL import Image

    rgba = pil_rgba_uint8(im)
    size = sel.target_size(rgba.shape[1], rgba.shape[0])
    if size != (rgba.shape[1], rgba.shape[0]):
        rgba = np.asarray(Image.fromarray(rgba, "RGBA").resize(size, Image.BICUBIC))
    return rgba


def _target(path: Path, sel: DecodeConfig) -> Optional[tuple[int, int]]:
    """The decode size ``max_side`` asks for (for JPEG draft decoding), or None when it keeps the size."""
    return (sel.max_side, sel.max_side) if sel.max_side > 0 else None


def _iter_folder(folder: Path, sel: DecodeConfig, info: dict) -> Iterator[tuple[int, np.ndarray, bool]]:
    files = frame_files(folder)
    if not files:
        raise FileNotFoundError(f"no image frames ({', '.join(FRAME_EXTENSIONS)}) in folder {folder}")
    info["frames"] = len(files)
    kept = 0
    for i, f in enumerate(files):
        if sel.done(i, kept):
            return
        record_seen(info, i + 1)
        if not sel.keeps(i):
            continue
        with open_image(f, _target(f, sel)) as im:
            try:
                rgba = _pil_rgba(im, sel)
            except OSError as e:
                raise ValueError(f"cannot decode frame {f}: {e}; re-export it as PNG") from e
            yield i, rgba, pil_has_alpha(im)
        kept += 1


def _iter_pil_animation(path: Path, sel: DecodeConfig, info: dict) -> Iterator[tuple[int, np.ndarray, bool]]:
    from PIL import ImageSequence

    with open_image(path) as im:
        info["frames"] = int(getattr(im, "n_frames", 0) or 0)
        durations = []
        kept = 0
        for i, frame in enumerate(ImageSequence.Iterator(im)):
            if sel.done(i, kept):
                break
            record_seen(info, i + 1)
            if not sel.keeps(i):
                continue
            rgba = _pil_rgba(frame, sel)  # loads the frame; WebP sets its duration only then
            durations.append(frame.info.get("duration", im.info.get("duration", 0)) or 0)
            ms = [d for d in durations if d > 0]
            info["fps"] = 1000.0 / float(np.mean(ms)) if ms else 0.0
            # GIF frames after the first often come as "RGB" with disposal applied; the first frame's
            # transparency tells whether the animation has alpha at all.
            yield i, rgba, pil_has_alpha(frame) or pil_has_alpha(im)
            kept += 1


def _is_animated(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return bool(getattr(im, "is_animated", False)) or path.suffix.lower() == ".gif"
    except OSError:
        return False


def iter_frames(source: Source, selection: DecodeConfig = DecodeConfig(),
                info: Optional[dict] = None) -> Iterator[tuple[int, np.ndarray, bool]]:
    """Yield ``(source_index, uint8 [H, W, 3|4], has_alpha)`` for every kept frame, decoding lazily.

    ``info`` (a dict) receives ``fps`` (source rate; 0 when unknown) as soon as it is known, ``frames`` (the
    frame count the source declares; 0 when unknown) and ``seen`` (source frames decoded so far).

    Raises ValueError for damaged files (naming the frame where decoding broke), non-images and images above the
    pixel limit.
    """
    selection.validate()
    info = {} if info is None else info
    if not isinstance(source, (str, Path)):
        import av

        try:
            yield from iter_pyav(source, selection, info)
        except av.error.FFmpegError as e:
            raise _damaged(source, info, e) from e
        return
    path = Path(source)
    if path.is_dir():
        yield from _iter_folder(path, selection, info)
        return
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    ext = path.suffix.lower()
    if ext in ANIMATED_EXTENSIONS and _is_animated(path):
        yield from _iter_pil_animation(path, selection, info)
        return
    if ext in FRAME_EXTENSIONS or ext in ANIMATED_EXTENSIONS:  # a still image (or a non-image: clear error)
        yield from _iter_folder_single(path, selection)
        return
    try:
        import av
    except ImportError:
        yield from iter_opencv(path, selection, info)
        return
    started = False
    try:
        for item in iter_pyav(str(path), selection, info):
            started = True
            yield item
    except av.error.FFmpegError as e:
        if started:  # a stream broken mid-way: falling back would repeat frames
            raise _damaged(path, info, e) from e
        yield from iter_opencv(path, selection, info)  # a container/codec this PyAV build cannot read


def _damaged(source, info: dict, e: Exception) -> ValueError:
    where = f"after frame {info['seen']}" if info.get("seen") else "before its first frame"
    return ValueError(f"{source_name(source)} is damaged: decoding failed {where} ({type(e).__name__}: {e}); "
                      "re-encode it (e.g. ffmpeg -i in.mp4 -c:v libx264 out.mp4) or re-download it")


def _iter_folder_single(path: Path, sel: DecodeConfig) -> Iterator[tuple[int, np.ndarray, bool]]:
    if not sel.keeps(0):
        return
    with open_image(path, _target(path, sel)) as im:
        try:
            rgba = _pil_rgba(im, sel)
        except OSError as e:
            raise ValueError(f"cannot decode image {path}: {e}; re-export it as PNG") from e
        yield 0, rgba, pil_has_alpha(im)


def decode_video(source: Source, selection: DecodeConfig = DecodeConfig(), default_fps: float = 8.0,
                 callback=None) -> DecodedVideo:
    """Decode the kept frames of ``source`` (video file, animated image, frame folder or a binary stream).

    Args:
        source: path of a file or folder, or a binary file object (e.g. ComfyUI's VIDEO stream source).
        selection: start / stride / cap / downscale, see :class:`DecodeConfig`.
        default_fps: rate reported for sources without timing (frame folders, still images).
        callback: optional ``ProgressCallback`` called after each kept frame and at least every
            :data:`HEARTBEAT_SECONDS` while frames are skipped (it may raise to cancel).

    Returns:
        :class:`DecodedVideo`; ``alpha`` is None when the source has no alpha channel; ``notes`` (also logged as
        warnings) say when the default frame cap cut the clip or the file ended before its declared length.

    Raises:
        FileNotFoundError: missing file or empty folder. ValueError: undecodable or damaged data, mixed frame
        sizes, nothing left after ``start``/``stride``, frames above the pixel limit or the memory budget.
    """
    from .progress import report

    frames: list[np.ndarray] = []
    indices: list[int] = []
    any_alpha = False
    name = source_name(source)
    last = [time.monotonic()]

    def heartbeat() -> None:  # at least every HEARTBEAT_SECONDS, so cancel is checked while frames are skipped
        if callback is not None and time.monotonic() - last[0] >= HEARTBEAT_SECONDS:
            last[0] = time.monotonic()
            report(callback, len(frames), min(selection.cap, info.get("frames") or selection.cap))

    info: dict = {"heartbeat": heartbeat}
    for idx, arr, has_alpha in iter_frames(source, selection, info):
        if frames and arr.shape[:2] != frames[0].shape[:2]:
            raise ValueError(f"frame {idx} of {name} is {arr.shape[1]}x{arr.shape[0]} but frame "
                             f"{indices[0]} is {frames[0].shape[1]}x{frames[0].shape[0]}; all frames need one size")
        # RGB + alpha float32 of every kept frame must fit, checked before the frame is kept
        check_frames_budget(f"loading {name}", len(frames) + 1, int(arr.shape[0]), int(arr.shape[1]), channels=4,
                            fix="lower max_frames, raise stride or set max_side")
        frames.append(arr)
        indices.append(idx)
        any_alpha |= bool(has_alpha) and arr.shape[-1] == 4
        report(callback, len(frames), min(selection.cap, info.get("frames") or selection.cap))
        last[0] = time.monotonic()
    if not frames:
        if selection.start == 0:
            raise ValueError(f"could not decode any frame of {name}: the file is empty, damaged or not a video; "
                             "re-encode it as H.264 mp4 or VP9 webm")
        raise ValueError(f"no frames left in {name} after start={selection.start}, stride={selection.stride}"
                         f"; lower 'start' (the clip may be shorter)")
    notes = _notes(name, selection, info, len(frames))
    for note in notes:
        log.warning("%s", note)
    N, (H, W) = len(frames), frames[0].shape[:2]
    rgb = torch.empty(N, H, W, 3, dtype=torch.float32)
    alpha = torch.ones(N, H, W, dtype=torch.float32) if any_alpha else None
    for i, arr in enumerate(frames):  # fill in place: no second full-size float copy
        t = torch.from_numpy(np.require(arr, requirements=("C", "W")))
        rgb[i] = t[..., :3].float().div_(255.0)
        if alpha is not None and arr.shape[-1] == 4:
            alpha[i] = t[..., 3].float().div_(255.0)
        frames[i] = None  # type: ignore[call-overload]  # release the uint8 frame early
    alpha = informative_alpha(alpha)  # an alpha channel opaque everywhere carries no information
    src_fps = float(info.get("fps") or 0.0) or float(default_fps)
    return DecodedVideo(rgb, alpha, src_fps / selection.stride, src_fps, indices, notes)


def _notes(name: str, sel: DecodeConfig, info: dict, kept: int) -> list[str]:
    """The default cap reached, or fewer frames decoded than the file declares (a truncated file)."""
    notes = []
    declared, seen = int(info.get("frames") or 0), int(info.get("seen") or 0)
    if sel.max_frames == 0 and kept >= sel.cap and (declared == 0 or declared > seen):
        notes.append(f"{name}: kept {kept} frames (source frames {sel.start}..{seen - 1}, stride {sel.stride}), "
                     f"the default cap{f' of {declared} declared frames' if declared else ''}; set max_frames, "
                     f"raise stride, or raise the cap with {MAX_VIDEO_FRAMES_ENV}=<frames>")
    elif kept < sel.cap and declared > 0 and seen < declared:
        notes.append(f"{name}: decoded {seen} of the {declared} frames the file declares (kept {kept}); the file "
                     "is probably truncated: re-download or re-encode it")
    return notes
