"""Small shared layers: sinusoidal timestep embedding, GroupNorm that normalises in float32, GroupNorm fused with
its activation."""
from __future__ import annotations

import functools
import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[B] -> [B, dim]`` laid out as [cos | sin] (latent-diffusion convention)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with float32 statistics, output in the input dtype (the official GroupNorm32).

    On CUDA the native half/bfloat16 kernel already accumulates in float32, so half inputs skip the explicit
    upcast (it would triple the memory traffic of every norm); CPU and float32 inputs take the literal path.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
            w = None if self.weight is None else self.weight.to(x.dtype)
            b = None if self.bias is None else self.bias.to(x.dtype)
            return F.group_norm(x, self.num_groups, w, b, self.eps)
        return F.group_norm(x.float(), self.num_groups, self.weight.float() if self.weight is not None else None,
                            self.bias.float() if self.bias is not None else None, self.eps).type(x.dtype)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 (OpenAI CLIP does this for fp16 weights)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).type(x.dtype)


_ACTIVATIONS = {"none": lambda x: x, "silu": F.silu, "relu": F.relu}


_fused_failed_once = False
"""True after a fused-norm launch failed in this process (PyTorch's kernels from then on)."""


@functools.lru_cache(maxsize=None)
def _triton_importable() -> bool:
    try:
        from . import triton_norm  # noqa: F401
    except Exception:  # noqa: BLE001 -- ImportError, or a Triton that cannot find its compiler
        return False
    return True


def triton_available() -> bool:
    """Whether the Triton GroupNorm kernel can be used: importable (Linux CUDA wheels ship Triton; other platforms
    may not) and no launch has failed in this process."""
    return not _fused_failed_once and _triton_importable()


def _fused_failed(err: Exception) -> None:
    global _fused_failed_once
    log.warning("fused GroupNorm kernel failed (%s: %s); using PyTorch's GroupNorm from now on",
                type(err).__name__, str(err)[:300])
    _fused_failed_once = True


@functools.lru_cache(maxsize=None)
def fused_norm_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Run the fused kernel once on a small channels_last tensor of ``dtype`` on ``device`` and compare it with
    PyTorch's GroupNorm + SiLU (this also JIT-compiles it for that layout); False, and the kernel switched off for
    the process, when it fails or disagrees. Cached per device and dtype."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16) or not triton_available():
        return False
    from .triton_norm import group_norm_act

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 32, 4, 4, generator=gen) * 2 + 1).to(device, dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    w, b = (torch.randn(32, generator=gen).to(device, dtype) for _ in range(2))
    try:
        y = group_norm_act(x, 8, w, b, 1e-5, "silu")
        err = (y.float() - F.silu(F.group_norm(x.float(), 8, w.float(), b.float(), 1e-5))).abs().max().item()
    except Exception as e:  # noqa: BLE001 -- no compiler, driver or Triton problem: PyTorch's kernels
        _fused_failed(e)
        return False
    if not err < 0.05:
        _fused_failed(ValueError(f"max |fused - native| = {err} on a test tensor"))
        return False
    return True


class GroupNormAct(GroupNorm32):
    """GroupNorm (float32 statistics, as :class:`GroupNorm32`) followed by ``act`` (``none``/``silu``/``relu``).

    On CUDA half/bfloat16 tensors (outside autocast and ``torch.compile``) both run in two Triton kernels
    (:mod:`.triton_norm`: one read for the statistics, one read and one write for the output, in the input's memory
    format) instead of PyTorch's three; elsewhere the literal ``act(GroupNorm32(x))``. Where it replaces a
    ``GroupNorm, SiLU`` pair of the official ``nn.Sequential``, an ``nn.Identity`` keeps the checkpoint's indices.
    """

    fused: bool = True
    """Use the Triton kernel where it applies (:func:`use_fused_group_norm` switches a whole model)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, act: str = "none"):
        super().__init__(num_groups, num_channels, eps=eps, affine=True)
        if act not in _ACTIVATIONS:
            raise ValueError(f"act must be one of {tuple(_ACTIVATIONS)}, got {act!r}")
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        if (self.fused and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)
                and not torch.is_autocast_enabled("cuda") and not torch.compiler.is_compiling() and triton_available()):
            from .triton_norm import group_norm_act

            try:
                return group_norm_act(x, self.num_groups, self.weight, self.bias, self.eps, self.act)
            except Exception as e:  # noqa: BLE001 -- a Triton/driver problem must not stop sampling: native ops
                _fused_failed(e)
        return self.activate(super().forward(x))

    def activate(self, x: Tensor) -> Tensor:
        """This layer's activation alone."""
        return _ACTIVATIONS[self.act](x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, act={self.act}"


def use_fused_group_norm(model: nn.Module, fused: bool = True) -> None:
    """Switch every :class:`GroupNormAct` in ``model`` to the Triton kernel (where it applies) or the literal ops."""
    for m in model.modules():
        if isinstance(m, GroupNormAct):
            m.fused = fused
