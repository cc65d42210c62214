"""Command-line entry of the mesh export (``python -m e4d export --mesh``): a native 4D file -> mesh files."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch

from ..progress import ProgressCallback
from .config import MeshConfig

PathLike = Union[str, os.PathLike]
ANIMATED_NAME = "mesh_animated.glb"
SEQUENCE_DIR = "mesh_frames"


def cli_export(model_path: PathLike, out_dir: PathLike, times: Optional[Sequence[float]] = None,
               count: Optional[int] = None, config: Optional[MeshConfig] = None, device: str = "auto",
               backend: str = "auto", fps: float = 8.0, sequence_formats: Sequence[str] = ("glb",),
               callback: Optional[ProgressCallback] = None) -> Dict[str, object]:
    """Extract meshes from the native 4D file ``model_path`` and write them into ``out_dir``:

    * ``mesh_animated.glb``: the fixed-topology animated mesh (when ``config.fixed_topology``, the default);
    * ``mesh_frames/mesh_NNNN.<fmt>``: one mesh per time for each of ``sequence_formats`` (glb, ply, obj); an
      existing ``mesh_frames`` is replaced as a whole.

    ``times``: normalized times (default: the fitted ones, or ``count`` evenly spaced). ``device``: "auto" (CUDA
    when available), "cpu", "cuda"... Returns a JSON-ready summary (paths, counts, seconds). Nothing is written
    when the extraction fails or ``callback`` raises.
    """
    from ..export import fitted_times, load_native
    from .extract import extract_mesh_4d
    from .glb import write_animated_glb, write_mesh_sequence

    cfg = (config or MeshConfig()).validate()
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    g = load_native(model_path, device=dev)
    t = list(times) if times else fitted_times(model_path, count)
    seq = extract_mesh_4d(g, t, cfg, callback=callback, backend=backend)
    out = Path(out_dir)
    summary: Dict[str, object] = {"times": [float(x) for x in t], "vertices": seq.info["vertices"][0],
                                  "faces": seq.info["faces"][0], "seconds": seq.info["seconds"]}
    if seq.fixed_topology:
        summary["animated_glb"] = str(write_animated_glb(seq, out / ANIMATED_NAME, fps=fps))
    if sequence_formats:
        files = write_mesh_sequence(seq, out / SEQUENCE_DIR, sequence_formats, overwrite=True)
        summary["sequence_dir"], summary["sequence_files"] = str(out / SEQUENCE_DIR), len(files)
    return summary


__all__ = ["cli_export", "ANIMATED_NAME", "SEQUENCE_DIR"]
