"""Frames out of video containers, one kept frame at a time: PyAV first (WebM VP8/VP9 alpha through libvpx, which
FFmpeg's native VP9 decoder drops; alpha pixel formats such as yuva420p, ProRes 4444, qtrle, png in MOV), OpenCV
when PyAV cannot open the file. Each reader yields ``(source index, uint8 HxWx3|4 frame, has alpha)`` and follows
:class:`e4d.video_decode.DecodeConfig` (start, stride, frame cap, downscale)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import numpy as np

from .limits import MAX_IMAGE_PIXELS_ENV, max_image_pixels

if TYPE_CHECKING:  # the config's module reads through these readers
    from .video_decode import DecodeConfig


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


def iter_pyav(source, sel: "DecodeConfig", info: dict) -> Iterator[tuple[int, np.ndarray, bool]]:
    import av

    with av.open(source) as container:
        if not container.streams.video:
            raise ValueError(f"{source_name(source)} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        info["fps"] = float(rate) if rate else 0.0
        info["frames"] = int(stream.frames or 0)
        w, h, limit = stream.codec_context.width, stream.codec_context.height, max_image_pixels()
        if w * h > limit:
            raise ValueError(f"{source_name(source)} is {w}x{h} ({w * h / 1e6:.0f} MP a frame), more than the "
                             f"{limit / 1e6:.0f} MP decoded at full size; downscale it first, or raise the limit with "
                             f"{MAX_IMAGE_PIXELS_ENV}=<pixels>")
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
            record_seen(info, i + 1)
            if not sel.keeps(i):
                continue
            w, h = sel.target_size(frame.width, frame.height)
            if (w, h) != (frame.width, frame.height):
                frame = frame.reformat(width=w, height=h)
            yield i, frame.to_ndarray(format="rgba" if has_alpha else "rgb24"), has_alpha
            kept += 1


def iter_opencv(path: Path, sel: "DecodeConfig", info: dict) -> Iterator[tuple[int, np.ndarray, bool]]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path} with PyAV or OpenCV; re-encode it as H.264 mp4 or VP9 webm")
    try:
        info["fps"] = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        info["frames"] = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        kept, i = 0, 0
        while not sel.done(i, kept):
            ok = cap.grab()  # grab without decoding the colour conversion of skipped frames
            if not ok:
                return
            record_seen(info, i + 1)
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


def record_seen(info: dict, count: int) -> None:
    """Record that ``count`` source frames were decoded and give the consumer its heartbeat (skipped frames are
    decoded too: a large stride must not keep cancel unchecked)."""
    info["seen"] = count
    beat = info.get("heartbeat")
    if beat is not None:
        beat()


def source_name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "the video stream"
