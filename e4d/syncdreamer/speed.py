"""Opt-in GPU speed settings for a loaded SyncDreamer (numerics unchanged up to fp rounding / kernel choice).

The defaults need none of this: the sampler replays CUDA graphs of its per-chunk passes (:mod:`.chunks`).
``torch.compile`` is the opt-in extra; its compiled artifacts can be kept in a cache file (``cache_dir``) so the
minutes of compiling are paid once per machine and torch version, not once per process.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from .attention import use_literal_depth_attention
from .layers import use_fused_group_norm
from .model import SyncDreamer

log = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_cache_file(cache_dir: Union[str, Path], mode: str) -> Path:
    """Where the compiled artifacts of ``mode`` live: one file per torch version and mode."""
    return Path(cache_dir) / f"syncdreamer-compile-{mode}-torch{torch.__version__}.bin"


def load_compile_cache(path: Path) -> bool:
    """Pre-load torch.compile's caches from ``path`` (torch's portable cache artifacts); False when absent."""
    if not path.is_file():
        return False
    try:
        info = torch.compiler.load_cache_artifacts(path.read_bytes())  # None when torch cannot read it
        why = "not a cache of this torch version" if info is None else ""
    except Exception as e:  # noqa: BLE001 -- a stale or foreign cache only costs a recompile
        why = f"{type(e).__name__}: {e}"
    if why:
        log.warning("SyncDreamer: ignoring unreadable compile cache %s (%s)", path, why)
        return False
    return True


def save_compile_cache(model: nn.Module) -> Optional[Path]:
    """After the first compiled sampling step: write torch.compile's artifacts to the model's cache file once."""
    path = getattr(model, "compile_cache", None)
    if path is None or getattr(model, "compile_cache_saved", False):
        return None
    model.compile_cache_saved = True
    art = torch.compiler.save_cache_artifacts()
    if art is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(art[0])
    tmp.replace(path)
    log.info("SyncDreamer: compiled kernels saved to %s (later processes skip most of the compile)", path)
    return path


def use_channels_last(model: SyncDreamer, unet: bool = True, volume: bool = True) -> None:
    """Convolution weights (and the UNet input) in channels_last / channels_last_3d, or back to contiguous.

    ``unet``: the UNet's 2-D convolutions; ``volume``: the spatial/frustum volume nets' 2-D and 3-D ones. cuDNN
    then runs them on NHWC / NDHWC tensors without its NCHW <-> NHWC transposes; the fused GroupNorm kernels
    (:class:`~.layers.GroupNormAct`) keep the layout from layer to layer. Cheap when already in that layout.
    """
    def put(modules, fmt2, fmt3):
        for mod in modules:
            if isinstance(mod, (nn.Conv3d, nn.ConvTranspose3d)) and mod.weight.dim() == 5:
                mod.weight.data = mod.weight.data.contiguous(memory_format=fmt3)
            elif isinstance(mod, nn.Conv2d):
                mod.weight.data = mod.weight.data.contiguous(memory_format=fmt2)

    flat = torch.contiguous_format
    # UNet: 2-D only (its 1x1x1 Conv3d run as matmuls)
    put(model.unet.modules(), torch.channels_last if unet else flat, flat)
    model.unet.channels_last = unet
    put(model.spatial_volume.modules(), *((torch.channels_last, torch.channels_last_3d) if volume else (flat, flat)))


def accelerate(model: SyncDreamer, channels_last: bool = False, compile_mode: Optional[str] = None,
               literal_depth_attention: bool = False, cache_dir: Optional[Union[str, Path]] = None,
               fused_norm: bool = True, volume_channels_last: bool = False) -> SyncDreamer:
    """Configure ``model`` in place for fast sampling and return it.

    Args:
        channels_last: the UNet's 2-D conv weights and input in channels_last (NHWC) memory format
            (:func:`use_channels_last`).
        compile_mode: ``torch.compile`` the UNet and the frustum 3-D net in place with this mode (one of
            :data:`COMPILE_MODES`; shapes are static, so each new chunk size compiles once: the first step then
            takes a minute or more, not seconds; Inductor's on-disk cache shortens later runs). None = eager.
        literal_depth_attention: use the official order of operations in the depth attention (materialised
            keys/values, chunked float32 softmax) instead of the folded SDPA path.
        cache_dir: with ``compile_mode``, a folder (e.g. the user's ComfyUI temp or model folder) for the
            compiled artifacts: read here if present, written after the first compiled step. Nothing else
            (no environment variable) is changed.
        fused_norm: GroupNorm + activation as one Triton kernel on CUDA half tensors in the UNet and the volume
            nets (their default, :class:`~.layers.GroupNormAct`); False = PyTorch's kernels. The VAE keeps
            PyTorch's.
        volume_channels_last: the spatial/frustum volume nets' conv weights in channels_last(_3d).
    """
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {COMPILE_MODES} or None, got {compile_mode!r}")
    unet = model.unet
    use_literal_depth_attention(unet, literal_depth_attention)
    use_fused_group_norm(model.unet, fused_norm)
    use_fused_group_norm(model.spatial_volume, fused_norm)
    use_channels_last(model, channels_last, volume_channels_last)
    if compile_mode is not None:
        model.compiled = True  # the sampler then leaves CUDA graphs to torch.compile
        model.compile_cache = None if cache_dir is None else compile_cache_file(cache_dir, compile_mode)
        model.compile_cache_saved = False
        hit = model.compile_cache is not None and load_compile_cache(model.compile_cache)
        log.info("SyncDreamer: torch.compile (%s) of the UNet and frustum net; the first sampling step compiles "
                 "(%s)", compile_mode, "from the cache " + str(model.compile_cache) if hit else
                 "minutes, once" + ("" if cache_dir is None else "; cached for later processes"))
        unet.compile(mode=compile_mode, dynamic=False)
        # run once per view chunk; its GroupNorm/SiLU/adds fuse and Inductor picks the 3-D conv layouts
        model.spatial_volume.frustum_volume_feats.compile(mode=compile_mode, dynamic=False)
    return model
