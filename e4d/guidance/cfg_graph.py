"""The SDS step's classifier-free-guided Zero123 UNet call, replayed from a captured CUDA graph.

The call runs without gradient on a small batch (2B = 8 latents of 32²), where the eager diffusers UNet spends
more time launching its ~1,000 kernels than running them. Its shapes repeat every fit step, so on CUDA it is
captured once per batch shape and replayed: same kernels, same numbers, no Python per step. The per-step inputs
(noisy latents, timesteps, conditioning tokens, reference latents) are copied into the static buffers the graph
reads; the guidance scale is part of the graph key. The output buffer is allocated before the capture, so the capture
frees everything it allocates (no "uncaptured free of a captured allocation" under ``cudaMallocAsync``).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Dict

import torch
from torch import Tensor

log = logging.getLogger(__name__)

EpsFn = Callable[[object, Tensor, Tensor, Tensor, Tensor, float], Tensor]


class GraphedCFG:
    """``eps_fn(unet, z_t, t, cond, ref, scale)`` with each distinct input signature captured once on CUDA.

    Args:
        eps_fn: the eager function (``cfg_noise_prediction``); also used as is on CPU and under autograd.
    """

    def __init__(self, eps_fn: EpsFn) -> None:
        self.eps_fn = eps_fn
        self.graphs: Dict[tuple, tuple] = {}
        self._pool = None
        self.capture_s = 0.0
        """Seconds spent capturing (warm-up included), device-synchronized."""

    def __call__(self, unet, z_t: Tensor, t: Tensor, cond: Tensor, ref: Tensor, scale: float) -> Tensor:
        """Guided eps ``[B, 4, h, w]`` float32 (a fresh tensor, safe to keep across calls)."""
        args = (z_t, t, cond, ref)
        if z_t.device.type != "cuda" or torch.is_grad_enabled():
            return self.eps_fn(unet, *args, scale)
        w = next(unet.parameters())  # a moved or re-cast UNet has new storage: its old graph would read freed memory
        key = (id(unet), w.data_ptr(), w.dtype, float(scale)) + tuple((tuple(a.shape), a.dtype, a.device) for a in args)
        if key not in self.graphs:
            self.graphs[key] = self._capture(unet, args, float(scale))
        graph, static, out = self.graphs[key]
        for s, a in zip(static, args):
            s.copy_(a)
        graph.replay()
        return out.clone()  # the next replay overwrites ``out``

    def _capture(self, unet, args: tuple, scale: float) -> tuple:
        dev = args[0].device
        torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        static = tuple(a.clone() for a in args)
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):  # warm-up outside the capture, on the capturing stream (its cuBLAS workspace)
            warm = self.eps_fn(unet, *static, scale)
        torch.cuda.current_stream(dev).wait_stream(side)
        out = torch.empty_like(warm)  # the graph's output buffer, allocated outside it
        del warm
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, stream=side):
            out.copy_(self.eps_fn(unet, *static, scale))
        torch.cuda.synchronize(dev)
        dt = time.perf_counter() - t0
        self.capture_s += dt
        log.info("Zero123 SDS: captured the guided UNet call (batch %d) in %.2f s", args[0].shape[0], dt)
        return graph, static, out

    def clear(self) -> None:
        """Drop the captured graphs and their memory (e.g. when the UNet is released or moved)."""
        self.graphs.clear()
        self._pool = None
