"""E4D_OrbitRender: 4D Gaussians → IMAGE batch (+ MASK) along an orbit, for SaveVideo / VideoHelperSuite."""
from __future__ import annotations

from comfy_api.latest import io

from . import _common as C
from .types import E4D_GAUSSIANS4D

CATEGORY = "Efficient4D/render"
MODES = ("orbit", "fixed_time", "fixed_view")
BACKENDS = ("auto", "gsplat", "reference")


class OrbitRender(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="E4D_OrbitRender",
            display_name="Orbit Render 4D (Efficient4D)",
            category=CATEGORY,
            description="Render the 4D Gaussians along a camera path: orbit (the camera circles while the clip "
                        "plays), fixed_time (circle a frozen moment) or fixed_view (watch the clip from one side). "
                        "Connect IMAGE to core Create Video + Save Video, or to VideoHelperSuite's Video Combine.",
            inputs=[
                E4D_GAUSSIANS4D.Input("gaussians", tooltip="Fitted (or loaded) 4D Gaussians."),
                io.Combo.Input("mode", options=list(MODES), default="orbit",
                               tooltip="orbit: camera circles while time plays; fixed_time: camera circles at "
                                       "fixed_time; fixed_view: camera stays at azimuth_start while time plays."),
                io.Int.Input("frames", default=120, min=1, max=10_000, tooltip="Number of output frames."),
                io.Int.Input("resolution", default=512, min=16, max=4096, step=16,
                             tooltip="Square image size in pixels (the fit saw 256; larger is sharper to a point)."),
                io.Float.Input("elevation", default=30.0, min=-89.0, max=89.0, step=0.5,
                               tooltip="Camera elevation in degrees (SyncDreamer's views: 30)."),
                io.Float.Input("radius", default=1.5, min=0.1, max=20.0, step=0.05,
                               tooltip="Camera distance from the object centre (SyncDreamer: 1.5)."),
                io.Float.Input("azimuth_start", default=0.0, min=-360.0, max=360.0, step=1.0,
                               tooltip="Azimuth of the first frame in degrees (0 = the input video's side)."),
                io.Float.Input("turns", default=1.0, min=0.0, max=100.0, step=0.25,
                               tooltip="Camera revolutions over all frames (orbit, fixed_time)."),
                io.Int.Input("time_loops", default=2, min=1, max=1000,
                             tooltip="How often the clip plays over all frames (orbit, fixed_view)."),
                io.Boolean.Input("pingpong", default=False,
                                 tooltip="Play time forwards then backwards (seamless loop for non-periodic motion)."),
                io.Float.Input("fixed_time", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="fixed_time mode: the normalized time shown (0 = first frame, 1 = last)."),
                io.Float.Input("background", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Background grey level (1 = white, as in training)."),
                io.Combo.Input("backend", options=list(BACKENDS), default="auto",
                               tooltip="auto: gsplat on CUDA, the pure-torch reference renderer on CPU."),
            ],
            outputs=[
                io.Image.Output(display_name="IMAGE", tooltip="Rendered frames [F, resolution, resolution, 3]."),
                io.Mask.Output(display_name="MASK", tooltip="Coverage of each frame, 1 = object."),
            ],
        )

    @classmethod
    def execute(cls, gaussians, mode: str = "orbit", frames: int = 120, resolution: int = 512,
                elevation: float = 30.0, radius: float = 1.5, azimuth_start: float = 0.0, turns: float = 1.0,
                time_loops: int = 2, pingpong: bool = False, fixed_time: float = 0.0, background: float = 1.0,
                backend: str = "auto") -> io.NodeOutput:
        from e4d.orbit import OrbitConfig, orbit_render

        cfg = OrbitConfig(mode=mode, frames=int(frames), elevation=float(elevation), radius=float(radius),
                          resolution=int(resolution), azimuth_start=float(azimuth_start), turns=float(turns),
                          time_loops=int(time_loops), pingpong=bool(pingpong), fixed_time=float(fixed_time),
                          background=float(background)).check()
        g = gaussians.to(C.get_torch_device())
        out = orbit_render(g, cfg, backend=backend, callback=C.progress_callback(cfg.frames),
                           output_device=C.intermediate_device())
        return io.NodeOutput(C.image_out(out.frames), C.mask_out(out.alpha))


NODES = [OrbitRender]
