"""E4D_Preview4D: shows fitted 4D Gaussians in an interactive player inside the node (web/js/e4d_preview.js)."""
from __future__ import annotations

import uuid
from pathlib import Path

from comfy_api.latest import io

from .types import E4D_GAUSSIANS4D

CATEGORY = "Efficient4D/preview"
UI_KEY = "e4d_preview"
"""Key of the node's UI output; the frontend extension reads ``output[UI_KEY][0]``."""
SUBFOLDER = "efficient4d"
BACKGROUNDS = ["white", "black", "grey"]


def _most_opaque(g, limit: int):
    """Keep the ``limit`` most opaque Gaussians (the browser's memory and frame time grow with N)."""
    import torch

    if limit <= 0 or g.means.shape[0] <= limit:
        return g
    idx = torch.topk(g.opacity_logit.detach().reshape(-1), limit).indices.sort().values
    return g.select(idx)


class Preview4D(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="E4D_Preview4D",
            display_name="Preview 4D",
            category=CATEGORY,
            description="Interactive player for 4D Gaussians inside the node: drag to orbit, right-drag or "
                        "shift-drag to pan, wheel to zoom, double-click to reset; time slider, play/pause, loop, "
                        "speed and background. The Gaussians are sliced at time t on the GPU (4DGS eq. 4-6). "
                        "Works offline: everything is bundled with the pack.",
            inputs=[
                E4D_GAUSSIANS4D.Input("gaussians", tooltip="4D Gaussians from 4DGS Fit or Load 4D Gaussians."),
                io.Combo.Input("background", options=BACKGROUNDS, default="white",
                               tooltip="Initial background colour (the 'bg' button in the player cycles it). "
                                       "White matches the view matrix the fit was trained on."),
                io.Boolean.Input("autoplay", default=True, tooltip="Start playing as soon as the preview loads."),
                io.Float.Input("duration_s", default=3.0, min=0.2, max=120.0, step=0.1,
                               tooltip="Seconds one pass over the whole clip takes at speed 1x."),
                io.Int.Input("max_gaussians", default=300_000, min=0, max=10_000_000,
                             tooltip="Keep at most this many (the most opaque) Gaussians in the preview file; "
                                     "0 keeps all. The paper's fits have 50,000."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, gaussians, background: str = "white", autoplay: bool = True, duration_s: float = 3.0,
                max_gaussians: int = 300_000) -> io.NodeOutput:
        import folder_paths

        from e4d.export.compact4d import write_compact4d

        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
        g = _most_opaque(gaussians, int(max_gaussians))
        name = f"e4d_preview_{uuid.uuid4().hex[:12]}.e4dc"
        path = Path(folder_paths.get_temp_directory()) / SUBFOLDER / name
        write_compact4d(g, path, time_range=(0.0, 1.0),
                        extras={"background": background, "autoplay": bool(autoplay), "duration": float(duration_s)})
        entry = {"filename": name, "subfolder": SUBFOLDER, "type": "temp", "count": int(g.means.shape[0]),
                 "background": background, "autoplay": bool(autoplay), "duration": float(duration_s)}
        return io.NodeOutput(ui={UI_KEY: [entry]})


NODES = [Preview4D]
