"""View-matrix nodes: load/save the ``views/vVV/tTT.png + cameras.json`` layout, and assemble any multi-view
model's IMAGE batch into a view matrix (the swap-in point for generators other than SyncDreamer-T)."""
from __future__ import annotations

from typing import Optional

import torch
from comfy_api.latest import io

from . import _paths as P
from . import _tensors
from .types import E4D_VIEW_MATRIX

CATEGORY = "Efficient4D/view matrix"
ORDERINGS = ("time-major", "view-major")


def parse_index_list(text: str, name: str) -> Optional[list[int]]:
    """``""`` → None (all); ``"0-15"``, ``"0,2,4"``, ``"0-3, 8"`` → indices."""
    text = str(text or "").strip()
    if not text:
        return None
    out: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError as e:
        raise ValueError(f"{name} must be indices like '0-15' or '0,2,4' (empty = all), got {text!r}") from e
    return out


def vm_images(vm, ordering: str = "time-major") -> torch.Tensor:
    """The view matrix's images as one IMAGE batch ``[T*V, H, W, 3]``."""
    x = vm.images if ordering == "time-major" else vm.images.transpose(0, 1)
    return x.reshape(-1, vm.H, vm.W, 3)


class LoadViewMatrix(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="E4D_LoadViewMatrix",
            display_name="Load View Matrix (Efficient4D)",
            category=CATEGORY,
            description="Read a view matrix folder (cameras.json + views/vVV/tTT.png, e.g. one written by Save View "
                        "Matrix or a dataset in that layout) to fit it directly or to compare with a generator.",
            inputs=[
                io.String.Input("folder", default="view_matrix",
                                tooltip="Folder inside ComfyUI's input folder (or 'name [output]') holding "
                                        "cameras.json and views/vVV/tTT.png. Absolute paths only when the server's "
                                        "owner sets E4D_ALLOW_ABSOLUTE_PATHS=1 (see SECURITY.md)."),
                io.String.Input("views", default="",
                                tooltip="View ids to load, e.g. '0-15' (train on the ring) or '0,4,8'; empty = all."),
                io.Boolean.Input("with_input_video", default=True,
                                 tooltip="Also load the single-view input frames (input/fKK.png) when present."),
            ],
            outputs=[
                E4D_VIEW_MATRIX.Output(display_name="view_matrix", tooltip="The loaded view matrix (T times x V views)."),
                io.Image.Output(display_name="IMAGE", tooltip="All its images, time-major [T*V, H, W, 3], for previews."),
            ],
        )

    @classmethod
    def execute(cls, folder: str, views: str = "", with_input_video: bool = True) -> io.NodeOutput:
        from e4d.viewmatrix import load_view_matrix

        path = P.input_path(folder, "dir", "view-matrix folder (cameras.json + views/)")
        if not (path / "cameras.json").is_file():
            raise FileNotFoundError(f"no view matrix in {folder!r} (cameras.json missing); give a folder inside "
                                    "ComfyUI's input folder in the views/vVV/tTT.png + cameras.json layout")
        vm = load_view_matrix(path, parse_index_list(views, "views"), with_input=bool(with_input_video))
        return io.NodeOutput(vm, _tensors.image_out(vm_images(vm)))


class SaveViewMatrix(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="E4D_SaveViewMatrix",
            display_name="Save View Matrix (Efficient4D)",
            category=CATEGORY,
            description="Write a view matrix into ComfyUI's output folder (cameras.json + views/vVV/tTT.png), "
                        "atomically, so it can be fitted again later or with `python -m e4d fit --views`.",
            is_output_node=True,
            inputs=[
                E4D_VIEW_MATRIX.Input("view_matrix", tooltip="The view matrix to save."),
                io.String.Input("filename_prefix", default="efficient4d/view_matrix",
                                tooltip="Folder name prefix inside the output folder; a counter is appended."),
            ],
            outputs=[io.String.Output(display_name="folder", tooltip="Absolute path of the written folder.")],
        )

    @classmethod
    def execute(cls, view_matrix, filename_prefix: str = "efficient4d/view_matrix") -> io.NodeOutput:
        from e4d.viewmatrix import save_view_matrix

        base, name, counter, _ = P.output_target(filename_prefix, view_matrix.W, view_matrix.H)
        target = base / f"{name}_{counter:05}"
        while target.exists():
            counter += 1
            target = base / f"{name}_{counter:05}"
        save_view_matrix(view_matrix.to("cpu"), target)
        return io.NodeOutput(str(target), ui={"text": [str(target)]})


class AssembleViewMatrix(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from e4d.cameras import CAMERA_PRESETS

        return io.Schema(
            node_id="E4D_AssembleViewMatrix",
            display_name="Assemble View Matrix (Efficient4D)",
            category=CATEGORY,
            description="Turn the output of any multi-view model (an IMAGE batch of T times x V views, e.g. Zero123++ "
                        "or SV3D run per frame) into a view matrix with that model's cameras, ready for the 4D fit.",
            inputs=[
                io.Image.Input("images", tooltip="T x V square views on white (RGBA also accepted)."),
                io.Combo.Input("camera_preset", options=list(CAMERA_PRESETS), default="syncdreamer16",
                               tooltip="The generator's camera rig: syncdreamer16 (16 views, 30 deg elevation), "
                                       "zero123plus6 (Zero123++ v1.2, 6 views), sv3d21 (SV3D, 21 views), or custom "
                                       "(azimuths/elevations below)."),
                io.Combo.Input("ordering", options=list(ORDERINGS), default="time-major",
                               tooltip="time-major: all views of time 0, then of time 1, ...; view-major: all times "
                                       "of view 0, then of view 1, ..."),
                io.String.Input("azimuths", default="0, 90, 180, 270",
                                tooltip="custom preset: azimuth of each view in degrees (0 = the input view's side)."),
                io.String.Input("elevations", default="30",
                                tooltip="custom preset: one elevation for all views or one per view, in degrees."),
                io.Float.Input("elevation", default=0.0, min=-89.0, max=89.0, step=0.5,
                               tooltip="sv3d21: the orbit's elevation; and the input camera's elevation when "
                                       "input_frames are given."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional alpha of the views (1 = object), same batch order as images."),
                io.Image.Input("input_frames", optional=True,
                               tooltip="Optional user video frames at the same T times (seen from azimuth 0), "
                                       "used by the fit as an extra view."),
            ],
            outputs=[E4D_VIEW_MATRIX.Output(display_name="view_matrix",
                                            tooltip="The assembled view matrix (times evenly spaced in [0, 1]).")],
        )

    @classmethod
    def execute(cls, images, camera_preset: str = "syncdreamer16", ordering: str = "time-major",
                azimuths: str = "0, 90, 180, 270", elevations: str = "30", elevation: float = 0.0,
                mask=None, input_frames=None) -> io.NodeOutput:
        from e4d.cameras import camera_preset as make_preset, input_view
        from e4d.viewmatrix import ViewMatrix

        rgb, alpha = _tensors.image_in(images, "images")
        B, H, W, _ = rgb.shape
        if H != W:
            raise ValueError(f"view images must be square (the presets' cameras are), got {W}x{H}; crop or pad them")
        alpha = _tensors.object_alpha(rgb, alpha, mask)
        custom = camera_preset == "custom"
        cams = make_preset(camera_preset, size=W, elevation_deg=float(elevation),
                           azimuths=_tensors.parse_floats(azimuths, "azimuths") if custom else None,
                           elevations=_tensors.parse_floats(elevations, "elevations") if custom else None)
        V = len(cams)
        if B % V:
            raise ValueError(f"images hold {B} views, not a multiple of the {V} views of preset {camera_preset!r}; "
                             "check the preset or the number of frames")
        T = B // V
        if ordering not in ORDERINGS:
            raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}")

        def grid(x):
            x = x.reshape(T, V, *x.shape[1:]) if ordering == "time-major" else x.reshape(V, T, *x.shape[1:]).transpose(0, 1)
            return x.contiguous()

        rgb = grid(rgb)
        if alpha is not None:
            alpha = grid(alpha)
            rgb = rgb * alpha[..., None] + (1.0 - alpha[..., None])  # the contract: colour on white
        times = torch.linspace(0.0, 1.0, T) if T > 1 else torch.zeros(1)
        extra = {}
        if input_frames is not None:
            in_rgb, in_alpha = _tensors.image_in(input_frames, "input_frames")
            if in_rgb.shape[0] != T:
                raise ValueError(f"input_frames has {in_rgb.shape[0]} frames but the views cover T={T} times")
            if in_rgb.shape[1] != in_rgb.shape[2]:
                raise ValueError(f"input_frames must be square, got {in_rgb.shape[2]}x{in_rgb.shape[1]}")
            if in_alpha is not None:
                in_rgb = in_rgb * in_alpha[..., None] + (1.0 - in_alpha[..., None])
            extra = dict(input_images=in_rgb, input_alpha=in_alpha,
                         input_camera=input_view(float(elevation), size=int(in_rgb.shape[2])))
        return io.NodeOutput(ViewMatrix(rgb, cams, times, alpha, **extra))


NODES = [LoadViewMatrix, SaveViewMatrix, AssembleViewMatrix]
