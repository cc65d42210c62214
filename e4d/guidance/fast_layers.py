"""channels_last layers for the SDS step: the VAE encoder (forward + backward) and the Zero123 UNet without cuDNN's
layout transposes, with GroupNorm + SiLU fused and a math attention in the VAE's mid block.

cuDNN's fast half-precision convolutions are NHWC; on NCHW models every convolution transposes its input and output
(on an H200, 5.9 of the 25.2 ms of an SDS step, B = 4). With channels_last weights and activations they do not, but
PyTorch's CUDA GroupNorm returns NCHW and would undo the layout at every norm. :func:`use_channels_last` therefore
swaps, in place and without touching a parameter or a state-dict key:

- every ``nn.GroupNorm`` for :class:`ChannelsLastGroupNorm` (Triton forward/backward in the input's layout on CUDA,
  :mod:`.triton_groupnorm`; elsewhere :func:`group_norm_reference`, same maths in float32),
- diffusers ``ResnetBlock2D`` for :class:`FusedResnetBlock2D` (its two ``norm -> SiLU`` pairs in one kernel each),
  and ``conv_norm_out -> conv_act`` likewise,
- diffusers ``Transformer2DModel`` (the UNet's) for :class:`ChannelsLastTransformer2D` (no NCHW copy before its
  1x1 output projection),
- the VAE mid block's single-head (head dim 512, 1,024 tokens) attention for :class:`MathAttnProcessor`: the
  memory-efficient SDPA kernel's backward at head dim 512 took 1.44 ms per step; the 1024² score matrix is small.

The weights stay frozen (SDS differentiates w.r.t. the input only); a layer whose weights require grad runs the
reference path.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


def group_norm_reference(x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                         silu: bool) -> Tensor:
    """``act(group_norm(x))`` for ``x [N, C, *S]`` in float32 maths, output in ``x``'s dtype and 4-D layout
    (channels_last in, channels_last out)."""
    N, C = x.shape[:2]
    cl = x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    xf = x.float().reshape(N, num_groups, -1)
    var, mean = torch.var_mean(xf, dim=-1, unbiased=False, keepdim=True)
    y = ((xf - mean) * torch.rsqrt(var + eps)).reshape(x.shape)
    shape = (1, C) + (1,) * (x.ndim - 2)
    if weight is not None:
        y = y * weight.float().reshape(shape)
    if bias is not None:
        y = y + bias.float().reshape(shape)
    y = F.silu(y) if silu else y
    return y.to(x.dtype, memory_format=torch.channels_last if cl else torch.preserve_format)


class _TritonGroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, num_groups: int, weight: Tensor, bias: Tensor, eps: float, silu: bool) -> Tensor:
        from .triton_groupnorm import group_norm_forward

        y, stats = group_norm_forward(x, num_groups, weight, bias, eps, silu)
        ctx.save_for_backward(x, weight, bias, stats)
        ctx.num_groups, ctx.silu = num_groups, silu
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        from .triton_groupnorm import group_norm_backward

        x, weight, bias, stats = ctx.saved_tensors
        return group_norm_backward(dy, x, ctx.num_groups, weight, bias, stats, ctx.silu), None, None, None, None, None


@functools.lru_cache(maxsize=None)
def triton_norm_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Run the Triton GroupNorm + SiLU forward and backward once on a small channels_last tensor and compare them
    with :func:`group_norm_reference` (this also JIT-compiles them); False when Triton is missing, fails or
    disagrees. Cached per device and dtype."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return False
    try:
        from . import triton_groupnorm  # noqa: F401

        gen = torch.Generator().manual_seed(0)
        # 32 groups of 4 channels: the kernels the VAE encoder's first level compiles anyway
        x = (torch.randn(2, 128, 8, 8, generator=gen) * 2 + 1).to(device, dtype)
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        w, b, dy = (torch.randn(*s, generator=gen).to(device, dtype) for s in ((128,), (128,), (2, 128, 8, 8)))
        y = _TritonGroupNorm.apply(x, 32, w, b, 1e-6, True)
        (dx,) = torch.autograd.grad(y, x, dy)
        xr = x.detach().float().requires_grad_(True)
        yr = group_norm_reference(xr, 32, w, b, 1e-6, True)
        (dxr,) = torch.autograd.grad(yr, xr, dy.float())
        err = max(float((y.detach().float() - yr.detach()).abs().max()),
                  float((dx.float() - dxr).abs().max() / dxr.abs().max()))
        ok = err < 0.02 and y.is_contiguous(memory_format=torch.channels_last)
    except Exception as e:  # noqa: BLE001 -- no Triton, no compiler, a driver problem: keep the stock layers
        log.warning("Triton GroupNorm unusable on %s (%s: %s); SDS keeps PyTorch's layers", device, type(e).__name__,
                    str(e)[:300])
        return False
    if not ok:
        log.warning("Triton GroupNorm disagrees with the reference on %s (error %.3g); SDS keeps PyTorch's layers",
                    device, err)
    return ok


class ChannelsLastGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (+ SiLU when :attr:`silu`) whose output keeps the input's memory format; same parameters.

    On CUDA half/bfloat16 inputs with frozen weights: two Triton kernels forward, two backward; elsewhere
    :func:`group_norm_reference`."""

    silu: bool = False
    """Apply SiLU to the output (the norm replaced a ``GroupNorm -> SiLU`` pair)."""

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.weight, self.bias
        if (x.is_cuda and w is not None and b is not None and not w.requires_grad and not b.requires_grad
                and x.dtype == w.dtype and triton_norm_works(x.device, x.dtype)):
            from .triton_groupnorm import supported

            if supported(x, self.num_groups):
                return _TritonGroupNorm.apply(x, self.num_groups, w, b, self.eps, self.silu)
        return group_norm_reference(x, self.num_groups, w, b, self.eps, self.silu)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, silu={self.silu}"


def _resnet_class():
    from diffusers.models.resnet import ResnetBlock2D

    return ResnetBlock2D


class FusedResnetBlock2D(nn.Module):
    """Forward of a diffusers ``ResnetBlock2D`` (no up/down sampling, ``time_embedding_norm="default"``, SiLU)
    whose ``norm1``/``norm2`` are :class:`ChannelsLastGroupNorm` with the SiLU fused (assigned as ``__class__`` by
    :func:`use_channels_last`, so it also subclasses ``ResnetBlock2D``)."""

    def forward(self, input_tensor: Tensor, temb: Optional[Tensor] = None, *args, **kwargs) -> Tensor:
        h = self.conv1(self.norm1(input_tensor))
        if self.time_emb_proj is not None and temb is not None:
            t = temb if self.skip_time_act else F.silu(temb)
            h = h + self.time_emb_proj(t)[:, :, None, None]
        h = self.conv2(self.dropout(self.norm2(h)))
        x = input_tensor if self.conv_shortcut is None else self.conv_shortcut(input_tensor)
        out = x + h
        return out if self.output_scale_factor == 1.0 else out / self.output_scale_factor


@functools.lru_cache(maxsize=None)
def _fused_resnet_type(base: type) -> type:
    return type("Fused" + base.__name__, (FusedResnetBlock2D, base), {"__module__": __name__})


class MathAttnProcessor:
    """Self-attention of a diffusers ``Attention`` with a GroupNorm (the VAE mid block) as explicit matmuls with float32
    logits and softmax; other calls (masks, cross-attention, 3-D inputs) go to the processor it replaced."""

    def __init__(self, previous) -> None:
        self.previous = previous

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Optional[Tensor] = None,
                 attention_mask: Optional[Tensor] = None, temb: Optional[Tensor] = None, *args, **kwargs) -> Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 4:
            return self.previous(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        B, C, H, W = hidden_states.shape
        tokens = attn.group_norm(hidden_states).permute(0, 2, 3, 1).reshape(B, H * W, C)  # a view in channels_last
        q, k, v = attn.to_q(tokens), attn.to_k(tokens), attn.to_v(tokens)
        d = q.shape[-1] // attn.heads
        q, k, v = (t.view(B, -1, attn.heads, d).transpose(1, 2) for t in (q, k, v))
        # float32 logits and softmax (as the fused kernels keep them; fp16 logits of magnitude 20 would be off by 1%
        # in probability); at 1,024 tokens and d = 512 these matmuls are ~0.1 ms
        logits = torch.matmul(q.float() * d ** -0.5, k.float().transpose(-1, -2))
        p = logits.softmax(dim=-1).to(v.dtype)
        o = torch.matmul(p, v).transpose(1, 2).reshape(B, H * W, attn.heads * d)
        o = attn.to_out[1](attn.to_out[0](o))
        o = o.reshape(B, H, W, C).permute(0, 3, 1, 2)
        if attn.residual_connection:
            o = o + hidden_states
        return o if attn.rescale_output_factor == 1.0 else o / attn.rescale_output_factor


class ChannelsLastTransformer2D(nn.Module):
    """Output of a diffusers ``Transformer2DModel`` (continuous input) without its ``.contiguous()``: the 1x1
    ``proj_out`` convolution as the matmul it is on the tokens, then a channels_last view of the result (assigned as
    ``__class__`` by :func:`use_channels_last`, so it also subclasses ``Transformer2DModel``)."""

    def _get_output_for_continuous_inputs(self, hidden_states: Tensor, residual: Tensor, batch_size: int, height: int,
                                          width: int, inner_dim: int) -> Tensor:
        if self.use_linear_projection:
            out = self.proj_out(hidden_states)
        else:
            out = F.linear(hidden_states, self.proj_out.weight.flatten(1), self.proj_out.bias)
        return out.reshape(batch_size, height, width, -1).permute(0, 3, 1, 2) + residual


@functools.lru_cache(maxsize=None)
def _channels_last_transformer_type(base: type) -> type:
    return type("ChannelsLast" + base.__name__, (ChannelsLastTransformer2D, base), {"__module__": __name__})


def _transformer_fits(mod) -> bool:
    proj = getattr(mod, "proj_out", None)
    conv_1x1 = isinstance(proj, nn.Conv2d) and proj.kernel_size == (1, 1) and proj.groups == 1
    return (getattr(mod, "is_input_continuous", False) and hasattr(mod, "_get_output_for_continuous_inputs")
            and (mod.use_linear_projection or conv_1x1))


def _math_attention_fits(attn) -> bool:
    return (attn.group_norm is not None and attn.spatial_norm is None and attn.norm_q is None
            and attn.norm_k is None and not attn.is_cross_attention)


def use_channels_last(model: nn.Module) -> int:
    """Swap ``model``'s layers in place for the channels_last ones above and convert its 4-D weights to
    channels_last; returns how many modules were swapped. Idempotent; parameters, buffers and state-dict keys are
    unchanged (only the 4-D weights' strides), and every swapped layer computes what it replaced (attention: the
    processor's maths, with a float32 softmax).
    """
    from diffusers.models.attention_processor import Attention
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    resnet = _resnet_class()
    swapped = 0
    for mod in list(model.modules()):
        if isinstance(mod, resnet) and not isinstance(mod, FusedResnetBlock2D):
            if (mod.upsample is None and mod.downsample is None and mod.time_embedding_norm == "default"
                    and isinstance(mod.nonlinearity, nn.SiLU) and isinstance(mod.norm1, nn.GroupNorm)
                    and isinstance(mod.norm2, nn.GroupNorm)):
                for norm in (mod.norm1, mod.norm2):
                    norm.__class__, norm.silu = ChannelsLastGroupNorm, True
                mod.__class__ = _fused_resnet_type(type(mod))
                swapped += 1
        elif isinstance(mod, Attention) and _math_attention_fits(mod) and not isinstance(mod.processor,
                                                                                         MathAttnProcessor):
            mod.set_processor(MathAttnProcessor(mod.processor))
            swapped += 1
        elif (isinstance(mod, Transformer2DModel) and not isinstance(mod, ChannelsLastTransformer2D)
              and _transformer_fits(mod)):
            mod.__class__ = _channels_last_transformer_type(type(mod))
            swapped += 1
    for name in ("conv_norm_out",):  # encoder / UNet output norm followed by its SiLU: fuse the pair
        norm, act = getattr(model, name, None), getattr(model, "conv_act", None)
        if isinstance(norm, nn.GroupNorm) and not isinstance(norm, ChannelsLastGroupNorm) and isinstance(act, nn.SiLU):
            norm.__class__, norm.silu = ChannelsLastGroupNorm, True
            model.conv_act = nn.Identity()
            swapped += 1
    for mod in model.modules():
        if type(mod) is nn.GroupNorm:
            mod.__class__, mod.silu = ChannelsLastGroupNorm, False
            swapped += 1
    model.to(memory_format=torch.channels_last)
    return swapped


@contextlib.contextmanager
def cudnn_benchmark(on: bool):
    """``torch.backends.cudnn.benchmark`` on inside the block when ``on`` (restored after; off never overrides a
    process that has it on)."""
    prev = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = prev or on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = prev


def fast_sds_layers(comps, unet: bool = True) -> bool:
    """Switch the SDS path's VAE encoder (and the UNet with ``unet``) of Zero123 components to the channels_last
    layers above, in place; False (model untouched) where the Triton GroupNorm cannot run (CPU, fp32, no
    Triton, a failed self-check). Idempotent."""
    w = next(comps.vae.parameters())
    if not triton_norm_works(w.device, w.dtype):
        return False
    n = use_channels_last(comps.vae.encoder)
    comps.vae.quant_conv.to(memory_format=torch.channels_last)
    if unet:
        n += use_channels_last(comps.unet)
    if n:
        log.info("Zero123 SDS: %d layers switched to channels_last kernels", n)
    return True
