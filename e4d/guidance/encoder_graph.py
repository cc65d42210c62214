"""The SDS step's VAE encoder forward *and* backward, replayed from captured CUDA graphs.

Every SDS step encodes the B novel-view renders (256² -> 32² latents) with gradient and back-propagates the SDS
gradient through the encoder into the renders. The encoder's ~600 forward + backward kernels run on small tensors,
so eagerly a large part of the step is launch overhead. Its shapes repeat every fit step, so on CUDA the pass
``image -> posterior moments`` is captured once per input signature as two graphs (forward; backward of the
moments to the image) and replayed: same kernels, same numbers. The posterior *sample* (it draws from the
guidance's generator) stays outside the graphs.

Why not ``torch.cuda.make_graphed_callables``: it keeps its warm-up's autograd graph alive through the capture, so
the sample input's AccumulateGrad node is the one made on its warm-up stream while the captured backward runs on
the capture stream (torch's "The AccumulateGrad node's stream does not match ..." warning); and its static outputs
are allocated inside the capture and freed after it (under ``cudaMallocAsync``, ComfyUI's allocator backend: the
"uncaptured free of a captured allocation" warnings). Here the warm-up's graph is gone before the capture, the
leaf is made inside the forward capture, and every buffer that outlives a capture is allocated before it.
"""
from __future__ import annotations

import logging
import time
from typing import Dict

import torch
from torch import Tensor

log = logging.getLogger(__name__)


def encoder_moments(vae, x: Tensor) -> Tensor:
    """Posterior parameters ``[B, 2 * latent_channels, h, w]`` (mean | logvar) of a diffusers ``AutoencoderKL``."""
    return vae.encode(x).latent_dist.parameters


class _EncoderGraphs:
    """Forward and backward graphs of ``encoder_moments(vae, x)`` for one input signature, with their buffers."""

    def __init__(self, vae, like: Tensor, pool) -> None:
        dev = like.device
        self.x = torch.zeros_like(like)  # static input; both graphs read it
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):  # warm-up on the capturing stream (cuDNN plans, kernels, its cuBLAS workspace)
            warm_in = self.x.clone().requires_grad_(True)
            warm = encoder_moments(vae, warm_in)
            (warm_grad,) = torch.autograd.grad(warm, warm_in, torch.ones_like(warm))
        torch.cuda.current_stream(dev).wait_stream(side)
        self.moments = torch.empty_like(warm)  # static output, grad of the output, grad of the input
        self.grad_moments = torch.zeros_like(warm)
        self.grad_x = torch.empty_like(warm_grad)
        del warm_in, warm, warm_grad  # the warm-up's autograd graph dies here
        self.fwd, self.bwd = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.fwd, pool=pool, stream=side):
            leaf = self.x.detach().requires_grad_(True)  # its AccumulateGrad is made on the capture stream
            out = encoder_moments(vae, leaf)
            self.moments.copy_(out.detach())
        with torch.cuda.graph(self.bwd, pool=pool, stream=side):
            (g,) = torch.autograd.grad(out, leaf, self.grad_moments)  # frees the saved activations in here
            self.grad_x.copy_(g)
            del g, out, leaf  # the forward's output goes inside a capture too


class _Replay(torch.autograd.Function):
    """Autograd node replaying :class:`_EncoderGraphs` (forward in ``forward``, backward in ``backward``)."""

    @staticmethod
    def forward(ctx, x: Tensor, graphs: _EncoderGraphs) -> Tensor:
        graphs.x.copy_(x)
        graphs.fwd.replay()
        ctx.graphs = graphs
        return graphs.moments.clone()  # the next replay overwrites the static output

    @staticmethod
    def backward(ctx, grad: Tensor):
        g = ctx.graphs
        g.grad_moments.copy_(grad)
        g.bwd.replay()
        return g.grad_x.clone(), None


class GraphedEncoder:
    """``encoder_moments(vae, x)`` with forward and backward captured once per input signature on CUDA.

    Used only where it pays and is safe: a CUDA input that requires grad with autograd on (the SDS step); any
    other call (CPU, ``no_grad`` reference encoding, the refine guidance) runs eagerly. Call one forward, then
    its backward, before the next forward: a replay overwrites the previous call's saved activations.
    """

    def __init__(self) -> None:
        self.graphs: Dict[tuple, _EncoderGraphs] = {}
        self.capture_s = 0.0
        """Seconds spent capturing (warm-up included), device-synchronized."""
        self._pool = None

    def __call__(self, vae, x: Tensor) -> Tensor:
        if x.device.type != "cuda" or not (torch.is_grad_enabled() and x.requires_grad):
            return encoder_moments(vae, x)
        w = next(vae.parameters())  # a moved or re-cast VAE has new storage: its old graph would read freed memory
        key = (id(vae), w.data_ptr(), w.dtype, tuple(x.shape), x.dtype, x.device)
        if key not in self.graphs:
            torch.cuda.synchronize(x.device)
            t0 = time.perf_counter()
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            self.graphs[key] = _EncoderGraphs(vae, x.detach(), self._pool)
            torch.cuda.synchronize(x.device)
            dt = time.perf_counter() - t0
            self.capture_s += dt
            log.info("Zero123 SDS: captured the VAE encoder forward/backward (batch %d) in %.2f s", x.shape[0], dt)
        return _Replay.apply(x, self.graphs[key])

    def clear(self) -> None:
        """Drop the captured graphs and their memory (e.g. when the VAE is released or moved)."""
        self.graphs.clear()
        self._pool = None
