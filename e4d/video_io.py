"""Writing frame tensors ``[F, H, W, 3]`` (float in [0, 1] or uint8) to mp4 or gif, atomically.

mp4: with an ``ffmpeg`` executable on PATH, H.264 (yuv420p, plays in browsers); otherwise OpenCV's VideoWriter
with the MPEG-4 Part 2 ('mp4v') codec, which every opencv-python wheel can encode. gif: Pillow.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from torch import Tensor

from .atomic import atomic_path

FramesLike = Union[Tensor, np.ndarray, Sequence[np.ndarray]]
MP4_CODECS = ("auto", "h264", "mp4v", "avc1")


def frames_to_uint8(frames: FramesLike) -> np.ndarray:
    """``[F, H, W, 3]`` uint8 RGB from float frames in [0, 1] (clamped, rounded) or uint8 frames."""
    if isinstance(frames, Tensor):
        arr = frames.detach().cpu()
        arr = arr.float().numpy() if arr.is_floating_point() else arr.numpy()
    elif isinstance(frames, np.ndarray):
        arr = frames
    else:
        arr = np.stack([np.asarray(f) for f in frames])
    if arr.ndim == 4 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise ValueError(f"frames must be [F, H, W, 3] with F >= 1, got shape {tuple(arr.shape)}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"frames must be float in [0, 1] or uint8, got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError("frames contain NaN or inf; the render diverged")
    return np.ascontiguousarray((np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def _check_fps(fps: float) -> None:
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")


def _write_ffmpeg(arr: np.ndarray, path: Path, fps: float) -> None:
    f, h, w, _ = arr.shape
    # yuv420p needs even sizes; pad by repeating the last row/column rather than rescaling.
    if h % 2 or w % 2:
        arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        f, h, w, _ = arr.shape
    cmd = [shutil.which("ffmpeg") or "ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", f"{fps}", "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-movflags", "+faststart", str(path)]
    proc = subprocess.run(cmd, input=arr.tobytes(), capture_output=True, check=False)
    if proc.returncode != 0:
        raise OSError(f"ffmpeg failed to write {path}: {proc.stderr.decode(errors='replace')[-500:]}; check free space "
                      "and that the folder is writable")
    _check_written(path, "ffmpeg")


def _write_cv2(arr: np.ndarray, path: Path, fps: float, fourcc: str) -> None:
    import cv2

    f, h, w, _ = arr.shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot encode '{fourcc}' mp4 here; use codec='mp4v' or install ffmpeg")
    try:
        for frame in arr:
            writer.write(np.ascontiguousarray(frame[..., ::-1]))  # OpenCV wants BGR
    finally:
        writer.release()
    _check_written(path, "OpenCV")


def _check_written(path: Path, writer: str) -> None:
    """OpenCV's writer reports no write errors (a full disk still "succeeds"): check the closed file is a
    non-empty video whose first frame decodes."""
    import cv2

    size = path.stat().st_size if path.is_file() else 0
    ok = False
    if size > 0:
        cap = cv2.VideoCapture(str(path))
        try:
            ok = cap.isOpened() and cap.read()[0]
        finally:
            cap.release()
    if not ok:
        raise OSError(f"{writer} wrote an unreadable video ({size} bytes) for {path}; the disk may be full or the "
                      "file-size limit reached: free space or write to another folder")


def write_mp4(frames: FramesLike, path: Union[str, os.PathLike], fps: float = 24.0, codec: str = "auto") -> Path:
    """Write an mp4 atomically; returns the path.

    ``codec``: "auto" (H.264 via ffmpeg if on PATH, else 'mp4v' via OpenCV), "h264" (ffmpeg, required),
    "mp4v" or "avc1" (OpenCV fourcc).
    """
    if codec not in MP4_CODECS:
        raise ValueError(f"unknown mp4 codec {codec!r}; choose one of {MP4_CODECS}")
    _check_fps(fps)
    arr = frames_to_uint8(frames)
    path = Path(path)
    use_ffmpeg = codec == "h264" or (codec == "auto" and shutil.which("ffmpeg") is not None)
    if codec == "h264" and shutil.which("ffmpeg") is None:
        raise FileNotFoundError("codec='h264' needs an ffmpeg executable on PATH; install ffmpeg or use codec='mp4v'")
    with atomic_path(path) as tmp:
        if use_ffmpeg:
            _write_ffmpeg(arr, tmp, fps)
        else:
            _write_cv2(arr, tmp, fps, "mp4v" if codec == "auto" else codec)
    return path


def write_gif(frames: FramesLike, path: Union[str, os.PathLike], fps: float = 24.0, loop: int = 0) -> Path:
    """Write an animated gif atomically (``loop=0`` repeats forever); returns the path."""
    from PIL import Image

    _check_fps(fps)
    arr = frames_to_uint8(frames)
    images = [Image.fromarray(f) for f in arr]
    path = Path(path)
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(1, int(round(1000.0 / fps))), loop=int(loop), disposal=2)
    return path


def write_video(frames: FramesLike, path: Union[str, os.PathLike], fps: float = 24.0) -> Path:
    """Write ``.mp4`` or ``.gif`` depending on the suffix of ``path``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        return write_mp4(frames, path, fps)
    if suffix == ".gif":
        return write_gif(frames, path, fps)
    raise ValueError(f"video path must end in .mp4 or .gif, got {str(path)!r}")


def read_video_frames(path: Union[str, os.PathLike]) -> np.ndarray:
    """Decode all frames of an mp4/gif as ``[F, H, W, 3]`` uint8 RGB (for tests and previews)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video at {path}")
    if path.suffix.lower() == ".gif":
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            return np.stack([np.asarray(fr.convert("RGB")) for fr in ImageSequence.Iterator(im)])
    import cv2

    cap = cv2.VideoCapture(str(path))
    out = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            out.append(frame[..., ::-1])
    finally:
        cap.release()
    if not out:
        raise ValueError(f"could not decode any frame from {path}")
    return np.stack(out)


__all__ = ["write_mp4", "write_gif", "write_video", "read_video_frames", "frames_to_uint8"]
