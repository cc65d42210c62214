"""E4D_Export4D (PLY sequence, native 4D file, .splatv, orbit video → output folder) and E4D_Load4DGaussians."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from comfy_api.latest import io

from . import _common as C
from . import _devices as D
from . import _paths as P
from . import _tensors as T
from .types import E4D_GAUSSIANS4D

CATEGORY = "Efficient4D/export"
NATIVE_SUFFIX = ".e4d.safetensors"


def _native_choices() -> list[str]:
    try:
        import folder_paths

        out = []
        for base in (folder_paths.get_input_directory(), folder_paths.get_output_directory()):
            tag = "" if base == folder_paths.get_input_directory() else " [output]"
            if not os.path.isdir(base):
                continue
            for root, dirs, files in os.walk(base):
                if root[len(base):].count(os.sep) >= 3:  # keep /object_info fast on big output folders
                    dirs.clear()
                for f in files:
                    if f.endswith(NATIVE_SUFFIX):
                        out.append(os.path.relpath(os.path.join(root, f), base).replace(os.sep, "/") + tag)
        return sorted(out)
    except Exception:  # never break the node list
        C.log.warning("Efficient4D: cannot list 4D Gaussian files", exc_info=True)
        return []


class Export4D(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="E4D_Export4D",
            display_name="Export 4D Gaussians (Efficient4D)",
            category=CATEGORY,
            description="Write the 4D Gaussians into ComfyUI's output folder: a standard 3DGS PLY per time step "
                        "(opens in any 3DGS viewer; our +Z-up axes), the native 4D file (lossless, loads back with "
                        "Load 4D Gaussians), a .splatv for the splaTV web viewer, an orbit video, and one +Y-up PLY "
                        "for core Preview 3D (ply_preview). Returns the paths.",
            is_output_node=True,
            inputs=[
                E4D_GAUSSIANS4D.Input("gaussians", tooltip="The 4D Gaussians to export."),
                io.String.Input("filename_prefix", default="efficient4d/object",
                                tooltip="Name prefix inside the output folder (sub-folders allowed); a counter is "
                                        "appended."),
                io.Boolean.Input("native", default=True, tooltip="Write <prefix>_NNNNN_.e4d.safetensors (lossless)."),
                io.Boolean.Input("ply_sequence", default=True,
                                 tooltip="Write <prefix>_NNNNN_ply/frame_XXXX.ply, one 3DGS PLY per time step."),
                io.Int.Input("ply_frames", default=16, min=1, max=1000,
                             tooltip="Number of evenly spaced time steps of the PLY sequence."),
                io.Boolean.Input("splatv", default=False, tooltip="Write <prefix>_NNNNN_.splatv (splaTV web viewer)."),
                io.Boolean.Input("video", default=True,
                                 tooltip="Write <prefix>_NNNNN_.mp4: 'frames' when connected, else a default orbit."),
                io.Float.Input("fps", default=24.0, min=1.0, max=120.0, step=1.0, tooltip="Frame rate of the video."),
                io.Boolean.Input("splat_sequence", default=False, optional=True,  # optional: older prompts lack it
                                 tooltip="Write <prefix>_NNNNN_splat/frame_XXXX.splat, one .splat per PLY time step "
                                         "(ComfyUI's own 3D viewer, frontend >= 1.36, opens .splat files)."),
                io.Image.Input("frames", optional=True,
                               tooltip="Optional frames for the video (e.g. from Orbit Render 4D)."),
                io.Float.Input("preview_time", default=0.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="Normalized time of the 'ply_preview' file (the nearest time step of the "
                                       "PLY sequence)."),
            ],
            outputs=[
                io.String.Output(display_name="native_path", tooltip="Path of the native file ('' if not written)."),
                io.String.Output(display_name="ply_folder", tooltip="Folder of the PLY sequence ('' if not written)."),
                io.String.Output(display_name="splatv_path", tooltip="Path of the .splatv file ('' if not written)."),
                io.String.Output(display_name="video_path", tooltip="Path of the mp4 ('' if not written)."),
                io.String.Output(display_name="splat_folder",
                                 tooltip="Folder of the per-time .splat files ('' if not written)."),
                io.String.Output(display_name="ply_preview",
                                 tooltip="<prefix>_NNNNN_preview.ply: the PLY at preview_time turned +Y-up for core "
                                         "Preview 3D (connect to its model_file; relative to the output folder). "
                                         "The PLY sequence keeps our +Z-up axes. '' without the PLY sequence."),
            ],
        )

    @classmethod
    def execute(cls, gaussians, filename_prefix: str = "efficient4d/object", native: bool = True,
                ply_sequence: bool = True, ply_frames: int = 16, splatv: bool = False, video: bool = True,
                fps: float = 24.0, splat_sequence: bool = False, frames=None,
                preview_time: float = 0.0) -> io.NodeOutput:
        import folder_paths

        from e4d.atomic import atomic_dir
        from e4d.export import save_native, save_ply, save_ply_sequence

        g = gaussians.detach().to("cpu")
        folder, name, counter, _ = P.output_target(filename_prefix)
        stem = folder / f"{name}_{counter:05}_"  # ComfyUI's "<prefix>_NNNNN_" naming keeps its counter working
        steps = 4 if ply_sequence else 0
        cb = C.progress_callback(steps)
        paths = {"native": "", "ply": "", "splatv": "", "video": "", "splat": ""}
        preview = ""
        if native:
            paths["native"] = str(save_native(g, stem.with_name(stem.name + NATIVE_SUFFIX),
                                              meta={"source": "ComfyUI E4D_Export4D"}))
        cb(1, 4, {})
        if ply_sequence:
            times = torch.linspace(0.0, 1.0, int(ply_frames)) if ply_frames > 1 else torch.zeros(1)
            ply_dir = stem.with_name(stem.name + "ply")
            with atomic_dir(ply_dir) as tmp:  # never leave a half-written sequence
                save_ply_sequence(g, times, tmp, callback=C.progress_callback())
            paths["ply"] = str(ply_dir)
            # core Preview 3D (three.js) is +Y up: its copy of the nearest time step is turned; the sequence is not
            nearest = float(times[int((times - float(preview_time)).abs().argmin())])
            preview_path = save_ply(g, nearest, stem.with_name(stem.name + "preview.ply"), rotation=T.ZUP_TO_YUP)
            preview = os.path.relpath(preview_path, folder_paths.get_output_directory()).replace(os.sep, "/")
        if splat_sequence:
            from e4d.export.splat import save_splat_sequence

            times = torch.linspace(0.0, 1.0, int(ply_frames)) if ply_frames > 1 else torch.zeros(1)
            splat_dir = stem.with_name(stem.name + "splat")
            with atomic_dir(splat_dir) as tmp:
                save_splat_sequence(g, times.tolist(), tmp, callback=C.progress_callback())
            paths["splat"] = str(splat_dir)
        cb(2, 4, {})
        if splatv:
            paths["splatv"] = str(_write_splatv(g, stem.with_name(stem.name + ".splatv")))
        cb(3, 4, {})
        if video:
            paths["video"] = str(_write_video(g, frames, stem.with_name(stem.name + ".mp4"), float(fps)))
        cb(4, 4, {})
        written = [p for p in paths.values() if p]
        return io.NodeOutput(paths["native"], paths["ply"], paths["splatv"], paths["video"], paths["splat"], preview,
                             ui={"text": written})


def _write_splatv(g, path: Path) -> Path:
    try:
        from e4d.export import splatv
    except ImportError as e:
        raise ValueError(f"splatv export is not available in this installation ({e}); switch 'splatv' off") from e
    return Path(splatv.save_splatv(g, path))


def _write_video(g, frames, path: Path, fps: float) -> Path:
    from e4d.video_io import write_mp4

    if frames is None:
        from e4d.orbit import OrbitConfig, orbit_render

        out = orbit_render(g.to(D.get_torch_device()), OrbitConfig(), callback=C.progress_callback())
        frames = out.frames
    else:
        frames, _ = T.image_in(frames, "frames")
    return write_mp4(frames, path, fps)


class Load4DGaussians(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="E4D_Load4DGaussians",
            display_name="Load 4D Gaussians (Efficient4D)",
            category=CATEGORY,
            description="Load a native 4D Gaussian file (.e4d.safetensors written by Export 4D Gaussians or "
                        "`python -m e4d export`) from the input or output folder.",
            inputs=[
                io.Combo.Input("file", options=_native_choices(),
                               tooltip="A .e4d.safetensors file in ComfyUI's input folder, or in the output folder "
                                       "(marked [output])."),
                io.String.Input("path_override", default="",
                                tooltip="Name of a native file inside the input folder (or 'name [output]'); "
                                        "replaces 'file' when not empty. Absolute paths only when the server's "
                                        "owner sets E4D_ALLOW_ABSOLUTE_PATHS=1 (see SECURITY.md)."),
            ],
            outputs=[E4D_GAUSSIANS4D.Output(display_name="gaussians", tooltip="The loaded 4D Gaussians.")],
        )

    @classmethod
    def validate_inputs(cls, file=None, path_override="") -> bool | str:
        try:
            _native_path(file, path_override)
        except P.NodePathError as e:  # one message for missing and refused: no probing of the server's files
            return str(e)
        return True

    @classmethod
    def fingerprint_inputs(cls, file=None, path_override=""):
        try:
            p = _native_path(file, path_override)
            st = p.stat()
            return f"{p}-{st.st_mtime_ns}-{st.st_size}"
        except OSError:
            return ""

    @classmethod
    def execute(cls, file=None, path_override: str = "") -> io.NodeOutput:
        from e4d.export import load_native

        path = _native_path(file, path_override)
        return io.NodeOutput(load_native(path, device=D.intermediate_device()))


def _native_path(file, path_override: str) -> Path:
    """The native file a Load 4D Gaussians prompt names, resolved inside ComfyUI's folders (see ``_paths``)."""
    if str(path_override or "").strip():
        return P.input_path(path_override, "file", "path_override")
    return P.input_path(file or "", "file", "4D Gaussian file")


NODES = [Export4D, Load4DGaussians]
