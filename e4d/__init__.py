"""Efficient4D core: framework-free library (never imports ComfyUI).

Submodules are imported lazily by their users; importing ``e4d`` itself is cheap.
Paper: Pan, Yang, Zhu, Zhang, "Efficient4D: Fast Dynamic 3D Object Generation from a Single-view Video".
"""

__version__ = "0.1.0"
