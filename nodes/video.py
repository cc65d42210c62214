"""E4D_LoadVideo: a video file, animated image or folder of (RGBA) frames → IMAGE + MASK (alpha) + fps."""
from __future__ import annotations

import hashlib
import os

import torch
from comfy_api.latest import io

from . import _common as C
from . import _paths as P
from . import _tensors as T
from ._widgets import field_default, param_default

CATEGORY = "Efficient4D/input"


def _choices() -> list[str]:
    from e4d.video_decode import ANIMATED_EXTENSIONS, VIDEO_EXTENSIONS

    try:
        return P.input_files(VIDEO_EXTENSIONS + ANIMATED_EXTENSIONS + (".apng",), with_dirs=True)
    except Exception:  # the dropdown must never break the node list
        C.log.warning("Efficient4D: cannot list the input folder", exc_info=True)
        return []


def _select_components(images: torch.Tensor, sel) -> torch.Tensor:
    idx = list(range(sel.start, images.shape[0], sel.stride))
    if sel.max_frames:
        idx = idx[: sel.max_frames]
    if not idx:
        raise ValueError(f"the VIDEO input has {images.shape[0]} frames; nothing is left after start={sel.start}")
    out = images[idx, ..., :3].float()
    w, h = sel.target_size(out.shape[2], out.shape[1])
    if (w, h) != (out.shape[2], out.shape[1]):
        out = torch.nn.functional.interpolate(out.permute(0, 3, 1, 2), size=(h, w), mode="area").permute(0, 2, 3, 1)
    return out


class LoadVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from e4d.video_decode import DecodeConfig as F, decode_video

        return io.Schema(
            node_id="E4D_LoadVideo",
            display_name="Load Video (Efficient4D)",
            category=CATEGORY,
            description="Load the object's video: a file from ComfyUI's input folder (mp4, webm, mov, gif, animated "
                        "webp/png), a folder of (RGBA) frames, or a VIDEO from another node. Only the kept frames "
                        "are decoded (start, stride, cap), so long videos do not fill the memory. Alpha is kept "
                        "(webm VP9 with alpha, mov ProRes 4444/qtrle/png, RGBA png frames) and returned as MASK.",
            inputs=[
                io.Combo.Input("video", options=_choices(), upload=io.UploadType.video,
                               tooltip="File or frame folder (name ending in '/') in ComfyUI's input folder; "
                                       "ignored when 'video_in' is connected. Paths outside ComfyUI's "
                                       "input/output/temp folders are refused (see SECURITY.md)."),
                io.Int.Input("start_frame", default=field_default(F, "start"), min=0, max=1_000_000,
                             tooltip="Index of the first frame to keep (0 = the first frame)."),
                io.Int.Input("stride", default=field_default(F, "stride"), min=1, max=1000,
                             tooltip="Keep every n-th frame from start_frame (2 halves the frame rate)."),
                io.Int.Input("max_frames", default=field_default(F, "max_frames"), min=0, max=100_000,
                             tooltip="Most frames to keep; 0 = up to 1024 (the default cap; the server's owner can "
                                     "change it with E4D_MAX_VIDEO_FRAMES), and the log says when it cut the clip. "
                                     "Efficient4D uses 8-32 frames of a clip."),
                io.Int.Input("max_side", default=field_default(F, "max_side"), min=0, max=16384, step=8,
                             tooltip="Downscale frames whose longest side is larger (aspect kept); 0 keeps the size. "
                                     "The object is later cropped to 256 px, so 1024 is plenty."),
                io.Float.Input("fps_if_unknown", default=param_default(decode_video, "default_fps"),
                               min=0.1, max=240.0, step=0.1,
                               tooltip="Frame rate reported for frame folders and stills, which carry no timing."),
                io.Video.Input("video_in", optional=True,
                               tooltip="Optional core VIDEO (e.g. from core Load Video); replaces the file widget."),
            ],
            outputs=[
                io.Image.Output(display_name="IMAGE", tooltip="Kept frames, RGB [N, H, W, 3] (not composited)."),
                io.Mask.Output(display_name="MASK",
                               tooltip="Alpha of each frame, 1 = object (NOT inverted like core Load Image's mask); "
                                       "all ones when the source has no alpha."),
                io.Float.Output(display_name="fps", tooltip="Frame rate of the kept frames (source rate / stride)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, video=None) -> bool | str:
        if not video:
            return True  # 'video_in' supplies the frames; execute() explains if it is missing too
        try:
            P.input_path(video, "any", "video")
        except P.NodePathError as e:  # one message for missing and refused: no probing of the server's files
            return str(e)
        return True

    @classmethod
    def fingerprint_inputs(cls, video=None, **kwargs):
        if not video:
            return ""
        try:
            path = P.input_path(video, "any", "video")
            if path.is_dir():
                stats = [(e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in os.scandir(path) if e.is_file()]
                return hashlib.sha256(repr(sorted(stats)).encode()).hexdigest()
            st = path.stat()
            return f"{st.st_mtime_ns}-{st.st_size}"
        except OSError:
            return ""

    @classmethod
    def execute(cls, video=None, start_frame=0, stride=1, max_frames=0, max_side=0, fps_if_unknown=8.0,
                video_in=None) -> io.NodeOutput:
        from e4d.video_decode import DecodeConfig, decode_video

        sel = DecodeConfig(int(start_frame), int(stride), int(max_frames), int(max_side))
        sel.validate()
        cb = C.progress_callback()
        if video_in is not None:
            if type(video_in).__name__ == "VideoFromComponents":  # already tensors: slice, no re-encode
                comp = video_in.get_components()
                rgb = _select_components(comp.images, sel)
                src_fps = float(comp.frame_rate or fps_if_unknown)
                return io.NodeOutput(T.image_out(rgb), T.mask_out(torch.ones(rgb.shape[:3])), src_fps / sel.stride)
            decoded = decode_video(video_in.get_stream_source(), sel, float(fps_if_unknown), callback=cb)
        else:
            if not video:
                raise ValueError("no video: choose a file in 'video' (upload one) or connect 'video_in'")
            decoded = decode_video(P.input_path(video, "any", "video"), sel, float(fps_if_unknown), callback=cb)
        mask = decoded.alpha if decoded.alpha is not None else torch.ones(decoded.frames.shape[:3])
        return io.NodeOutput(T.image_out(decoded.frames), T.mask_out(mask), float(decoded.fps))


NODES = [LoadVideo]
