"""Per-chunk guided noise prediction of one DDIM step, eager or replayed from captured CUDA graphs.

A chunk is up to ``view_batch`` (frame, view) pairs: frustum volumes of the target views, then one UNet call over
all guidance branches. Its shapes are the same at every step, so on CUDA :class:`ChunkRunner` captures it once per
chunk size into a ``torch.cuda.CUDAGraph`` and replays it for the other 49 steps: no Python, no kernel launches,
identical kernels (results equal to the eager path's). The inputs that change per step (volumes, time) are copied
into static buffers the graph reads; the conditioning is constant over a run and read in place.

Every tensor that outlives a capture (inputs, output) is allocated before it and written inside it: what the capture
allocates it also frees. Under ``cudaMallocAsync`` (ComfyUI's allocator backend) freeing a captured allocation after
the capture is what PyTorch warns about as "uncaptured free of a captured allocation".
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Sequence

import torch
from torch import Tensor

from .attention import profile_range
from .model import Condition, SyncDreamer

log = logging.getLogger(__name__)


def graphs_supported(model: SyncDreamer, device: torch.device) -> bool:
    """CUDA graphs need a CUDA device and an uncompiled model (``torch.compile``'s modes bring their own)."""
    return device.type == "cuda" and not getattr(model, "compiled", False)


class ChunkRunner:
    """Guided eps of chunks of (frame, view) pairs for one sampling run (static shapes: ``K`` frames, one cond).

    Args:
        model: the SyncDreamer.
        cond: conditioning of the K frames (must not be modified during the run: graphs read it in place).
        guidance, scales: as :class:`~.sampler.SamplerConfig`.
        use_graphs: capture/replay CUDA graphs (ignored where :func:`graphs_supported` is False).
    """

    def __init__(self, model: SyncDreamer, cond: Condition, guidance: str, scales: Sequence[float],
                 use_graphs: bool) -> None:
        self.model, self.cond, self.guidance, self.scales = model, cond, guidance, tuple(float(s) for s in scales)
        dev = cond.clip_embed.device
        self.use_graphs = use_graphs and graphs_supported(model, dev)
        self.graphs: Dict[tuple, tuple] = {}
        self._step: Dict[str, Tensor] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self.capture_s = 0.0
        """Seconds spent capturing (warm-up pass included), device-synchronized."""

    def set_step(self, volumes: Tensor, t_embed: Tensor, t: Tensor) -> None:
        """Per-step inputs: ``volumes [K, C, V, V, V]``, ``t_embed [K, Dt]``, timestep ``t [1]`` (long)."""
        new = {"volumes": volumes, "t_embed": t_embed, "t": t}
        if not self.use_graphs:
            self._step = new
            return
        if not self._step or any(self._step[k].shape != v.shape or self._step[k].dtype != v.dtype
                                 for k, v in new.items()):
            self._step = {k: v.clone() for k, v in new.items()}  # static buffers the graphs read
            self.graphs.clear()
        else:
            for k, v in new.items():
                self._step[k].copy_(v)

    def _eps(self, x: Tensor, f: Tensor, v: Tensor) -> Tensor:
        """``x [M, 4, h, w]`` (weights' dtype), frame and view indices ``[M]`` -> guided eps ``[M, 4, h, w]`` float32."""
        m, c, s = self.model, self.cond, self._step
        sub = Condition(c.clip_embed[f], c.x_input[f], c.v_embed[f])
        with profile_range("sd/frustum"):
            ctx, vols = m.target_view_feats(sub, s["volumes"][f], s["t_embed"][f], v[:, None])
        wdt = m.cc_projection.weight.dtype
        with profile_range("sd/unet"):
            e = m.predict_eps(x, s["t"].expand(x.shape[0]), ctx, vols, sub.x_input.to(wdt), self.guidance,
                              self.scales)
        return e.float()

    def __call__(self, x: Tensor, f: Tensor, v: Tensor) -> Tensor:
        """Guided eps ``[M, 4, h, w]`` float32 of the pairs ``(f, v)`` with noisy latents ``x [M, 4, h, w]``."""
        x = x.to(self.model.cc_projection.weight.dtype)
        if not self.use_graphs:
            return self._eps(x, f, v)
        key = (tuple(x.shape), x.dtype)
        if key not in self.graphs:
            self.graphs[key] = self._capture(x, f, v)
        graph, xs, fs, vs, out = self.graphs[key]
        xs.copy_(x)
        fs.copy_(f)
        vs.copy_(v)
        graph.replay()
        return out.clone()  # the next replay overwrites ``out``

    def _capture(self, x: Tensor, f: Tensor, v: Tensor) -> tuple:
        torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        xs, fs, vs = x.clone(), f.clone(), v.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        # warm-up outside the capture, on the stream that then captures: cuDNN plans, lazy kernel loading, and that
        # stream's cuBLAS workspace are made here, not inside the capture
        with torch.cuda.stream(side):
            warm = self._eps(xs, fs, vs)
        torch.cuda.current_stream(x.device).wait_stream(side)
        out = torch.empty_like(warm)  # the graph's output buffer, allocated outside it
        del warm
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, stream=side):
            out.copy_(self._eps(xs, fs, vs))
        torch.cuda.synchronize(x.device)
        dt = time.perf_counter() - t0
        self.capture_s += dt
        log.info("SyncDreamer: captured a CUDA graph for chunks of %d views in %.2f s", x.shape[0], dt)
        return graph, xs, fs, vs, out

