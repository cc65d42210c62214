"""E4D_OrbitRender: 4D Gaussians → IMAGE batch (+ MASK) along an orbit, for SaveVideo / VideoHelperSuite."""
from __future__ import annotations

import math
from typing import Optional

import torch
from comfy_api.latest import io

from . import _common as C
from . import _devices as D
from . import _tensors as T
from ._widgets import field_input
from .types import E4D_GAUSSIANS4D

CATEGORY = "Efficient4D/render"


def camera_info_to_orbit(info: dict, resolution: int) -> dict:
    """OrbitConfig fields (``azimuth_start``, ``elevation``, ``radius``, ``focal``) of a core LOAD3D_CAMERA.

    The camera's offset from its target gives azimuth, elevation and radius in our +Z-up world (our orbit always
    looks at the origin, so a target elsewhere only shifts where the view comes from); a perspective camera's
    vertical ``fov`` and ``zoom`` give the focal length in pixels at ``resolution``.
    """
    try:
        pos = [float(info["position"][k]) for k in "xyz"]
        tgt = [float(info.get("target", {}).get(k, 0.0)) for k in "xyz"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"camera_info must hold position {{x, y, z}} (and target) as core Load 3D gives it; got "
                         f"{info!r}") from e
    offset = torch.tensor(pos, dtype=torch.float64) - torch.tensor(tgt, dtype=torch.float64)
    dx, dy, dz = T.yup_to_zup(offset).tolist()
    radius = math.sqrt(dx * dx + dy * dy + dz * dz)
    if radius <= 1e-9:
        raise ValueError("camera_info places the camera on its target (distance 0); move the camera in the 3D view")
    out = dict(azimuth_start=math.degrees(math.atan2(dy, dx)), elevation=math.degrees(math.asin(dz / radius)),
               radius=radius)
    fov = info.get("fov")
    if info.get("cameraType", "perspective") == "perspective" and fov:
        zoom = float(info.get("zoom", 1.0) or 1.0)
        out["focal"] = zoom * 0.5 * resolution / math.tan(math.radians(float(fov)) / 2.0)
    return out


def _camera_inputs() -> list:
    if not hasattr(io, "Load3DCamera"):  # ComfyUI without core 3D camera types
        return []
    return [io.Load3DCamera.Input("camera_info", optional=True,
                                  tooltip="Optional core 3D camera (Load 3D / Preview 3D / Create Camera Info, +Y up) "
                                          "as the start view: replaces azimuth_start, elevation and radius (and the "
                                          "focal length by its field of view).")]


class OrbitRender(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from e4d.orbit import ORBIT_MODES, OrbitConfig as O
        from e4d.render import BACKENDS

        return io.Schema(
            node_id="E4D_OrbitRender",
            display_name="Orbit Render 4D (Efficient4D)",
            category=CATEGORY,
            description="Render the 4D Gaussians along a camera path: orbit (the camera circles while the clip "
                        "plays), fixed_time (circle a frozen moment) or fixed_view (watch the clip from one side). "
                        "Connect IMAGE to core Create Video + Save Video, or to VideoHelperSuite's Video Combine.",
            inputs=[
                E4D_GAUSSIANS4D.Input("gaussians", tooltip="Fitted (or loaded) 4D Gaussians."),
                field_input(O, "mode", options=ORBIT_MODES),
                field_input(O, "frames", min=1, max=10_000),
                field_input(O, "resolution", min=16, max=4096, step=16),
                field_input(O, "elevation", min=-89.0, max=89.0, step=0.5),
                field_input(O, "radius", min=0.1, max=20.0, step=0.05),
                field_input(O, "azimuth_start", min=-360.0, max=360.0, step=1.0),
                field_input(O, "turns", min=0.0, max=100.0, step=0.25),
                field_input(O, "time_loops", min=1, max=1000),
                field_input(O, "pingpong"),
                field_input(O, "fixed_time", min=0.0, max=1.0, step=0.01),
                field_input(O, "background", min=0.0, max=1.0, step=0.01),
                io.Combo.Input("backend", options=list(BACKENDS), default=BACKENDS[0],
                               tooltip="auto: gsplat on CUDA, the pure-torch reference renderer on CPU."),
                *_camera_inputs(),
            ],
            outputs=[
                io.Image.Output(display_name="IMAGE", tooltip="Rendered frames [F, resolution, resolution, 3]."),
                io.Mask.Output(display_name="MASK", tooltip="Coverage of each frame, 1 = object."),
            ],
        )

    @classmethod
    def execute(cls, gaussians, mode: str = "orbit", frames: int = 60, resolution: int = 256,
                elevation: float = 30.0, radius: float = 1.5, azimuth_start: float = 0.0, turns: float = 1.0,
                time_loops: int = 1, pingpong: bool = False, fixed_time: float = 0.0, background: float = 1.0,
                backend: str = "auto", camera_info: Optional[dict] = None) -> io.NodeOutput:
        from e4d.orbit import OrbitConfig, orbit_render

        view = dict(elevation=float(elevation), radius=float(radius), azimuth_start=float(azimuth_start))
        if camera_info is not None:
            view.update(camera_info_to_orbit(camera_info, int(resolution)))
        cfg = OrbitConfig(mode=mode, frames=int(frames), resolution=int(resolution), turns=float(turns),
                          time_loops=int(time_loops), pingpong=bool(pingpong), fixed_time=float(fixed_time),
                          background=float(background), **view)
        cfg.validate()
        g = gaussians.to(D.get_torch_device())
        out = orbit_render(g, cfg, backend=backend, callback=C.progress_callback(cfg.frames),
                           output_device=D.intermediate_device())
        return io.NodeOutput(T.image_out(out.frames), T.mask_out(out.alpha))


NODES = [OrbitRender]
