"""The SDS step's VAE encoder forward *and* backward, replayed from captured CUDA graphs.

Every SDS step encodes the B novel-view renders (256² -> 32² latents) with gradient and back-propagates the SDS
gradient through the encoder into the renders. The encoder's ~600 forward + backward kernels run on small tensors,
so eagerly a large part of the step is launch overhead. Its shapes repeat every fit step, so on CUDA the pass
``image -> posterior moments`` is captured once per input signature with :func:`torch.cuda.make_graphed_callables`
(forward and backward graphs) and replayed: same kernels, same numbers. The posterior *sample* (it draws from the
guidance's generator) stays outside the graph.
"""
from __future__ import annotations

import logging
from typing import Dict

import torch
from torch import Tensor

log = logging.getLogger(__name__)


def encoder_moments(vae, x: Tensor) -> Tensor:
    """Posterior parameters ``[B, 2 * latent_channels, h, w]`` (mean | logvar) of a diffusers ``AutoencoderKL``."""
    return vae.encode(x).latent_dist.parameters


class GraphedEncoder:
    """``encoder_moments(vae, x)`` with forward and backward captured once per input signature on CUDA.

    Used only where it pays and is safe: a CUDA input that requires grad with autograd on (the SDS step); any
    other call (CPU, ``no_grad`` reference encoding, the refine guidance) runs eagerly. Call one forward, then
    its backward, before the next forward: a replay overwrites the previous call's saved activations.
    """

    def __init__(self) -> None:
        self.graphs: Dict[tuple, object] = {}

    def __call__(self, vae, x: Tensor) -> Tensor:
        if x.device.type != "cuda" or not (torch.is_grad_enabled() and x.requires_grad):
            return encoder_moments(vae, x)
        w = next(vae.parameters())  # a moved or re-cast VAE has new storage: its old graph would read freed memory
        key = (id(vae), w.data_ptr(), w.dtype, tuple(x.shape), x.dtype, x.device)
        if key not in self.graphs:
            log.info("Zero123 SDS: capturing CUDA graphs of the VAE encoder forward/backward (batch %d)", x.shape[0])
            sample = torch.zeros_like(x).requires_grad_(True)
            self.graphs[key] = torch.cuda.make_graphed_callables(lambda inp: encoder_moments(vae, inp), (sample,))
        return self.graphs[key](x)

    def clear(self) -> None:
        """Drop the captured graphs and their memory (e.g. when the VAE is released or moved)."""
        self.graphs.clear()
