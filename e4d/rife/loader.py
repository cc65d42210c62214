"""Load RIFE checkpoints and detect their version from the state dict (never from the file name).

Formats (reference ARCHITECTURE §7): official ``flownet.pkl`` (torch.save'd dict, keys prefixed ``module.``;
the official loader keeps only those keys and strips the prefix), ComfyUI ``rife47.pth``/``rife49.pth`` (bare
keys), and ``.safetensors`` with either layout. Extra keys (``block_tea.*``, teacher nets) are ignored.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Mapping, Union

import torch
from torch import Tensor

from ..checkpoints import read_checkpoint
from .ifnet4 import PRESETS, IFNet4, IFNet4Config
from .ifnet36 import IFNet36

StateDict = Mapping[str, Tensor]
WHERE = "put rife47.pth / rife49.pth / flownet.pkl into ComfyUI/models/rife (or choose 'flow (no weights)')"


def strip_prefix(sd: StateDict) -> dict[str, Tensor]:
    """Official rule: when any key has ``module.``, keep only those keys and strip the prefix. A ``flownet.``
    prefix (a whole RIFE ``Model`` saved, as some files in ComfyUI's ``frame_interpolation`` folder are) is
    stripped the same way."""
    out = dict(sd)
    for prefix in ("module.", "flownet."):
        if any(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items() if k.startswith(prefix)}
    return out


def _shape(sd: StateDict, key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ValueError(f"RIFE checkpoint is missing {key!r}; the file is truncated or of an unknown layout")
    return tuple(sd[key].shape)


def detect_version(sd: StateDict) -> Union[str, IFNet4Config]:
    """Return ``"3.6"`` for the HD v3.6 layout or an :class:`IFNet4Config` for a 4.x layout.

    Sentinels: ``block0.conv1.2.weight`` (v3.6 separate flow head), ``block0.convblock.0.beta`` (4.5+ ResConv),
    ``encode.0`` / ``encode.cnn0`` (4.7 / 4.13+ encoder); channel counts come from the weight shapes.
    """
    sd = strip_prefix(sd)
    if "block0.conv1.2.weight" in sd and "block0.convblock0.0.0.weight" in sd:
        cin = _shape(sd, "block0.conv0.0.0.weight")[1]
        if cin != 11:
            raise ValueError(f"HD v3-style checkpoint with block0 input {cin} channels; only HD v3.6 (11) is supported")
        return "3.6"
    if "block0.lastconv.weight" in sd:
        raise ValueError("this is a RIFE 4.0-4.4 checkpoint (block0.lastconv without '.0'); those need the "
                         "contextnet/unet refinement and are not supported: use rife47.pth or rife49.pth")
    if any(k.startswith("extract.extract_sublevels") for k in sd):
        raise ValueError("this is a FILM frame-interpolation model, not RIFE; core ComfyUI runs FILM (put it in "
                         "models/frame_interpolation, load it with 'Load Frame Interpolation Model' and run 'Run "
                         "Frame Interpolation Model'), or pick a RIFE file here (rife47.pth, rife49.pth, flownet.pkl)")
    if "block0.convblock.0.beta" not in sd or "block0.lastconv.0.weight" not in sd:
        raise ValueError("not a RIFE state dict: none of the sentinel keys block0.conv1.2.weight (HD v3.6) or "
                         f"block0.convblock.0.beta (4.5+) found; first keys: {sorted(sd)[:5]}")
    n_blocks = 0
    while f"block{n_blocks}.conv0.0.0.weight" in sd:
        n_blocks += 1
    chans = tuple(_shape(sd, f"block{i}.conv0.1.0.weight")[0] for i in range(n_blocks))
    k = _shape(sd, "block0.lastconv.0.weight")[1] // 4
    if "encode.0.weight" in sd and "encode.1.weight" in sd and "encode.2.weight" not in sd:
        enc, hid, out = "conv2", _shape(sd, "encode.0.weight")[0], _shape(sd, "encode.1.weight")[1]
        label = "4.7"
    elif "encode.cnn0.weight" in sd:
        enc, hid, out = "head", _shape(sd, "encode.cnn0.weight")[0], _shape(sd, "encode.cnn3.weight")[1]
        label = "4.25" if n_blocks == 5 else ("4.17" if k == 6 else ("4.22" if out == 8 else "4.22.lite"))
    elif not any(key.startswith("encode.") for key in sd):
        enc, hid, out, label = "none", 0, 0, "4.6" if k == 6 else "4.5"
    else:
        raise ValueError("unsupported RIFE 4.10-4.12 encoder layout (encode.0..6); use rife47.pth / rife49.pth")
    scales = (16.0, 8.0, 4.0, 2.0, 1.0) if n_blocks == 5 else (8.0, 4.0, 2.0, 1.0)
    if n_blocks not in (4, 5) or k not in (5, 6, 13):
        raise ValueError(f"unsupported RIFE 4.x layout: {n_blocks} blocks, {k} block outputs")
    cfg = IFNet4Config(label, chans, enc, hid, out, k, accumulate_mask=(enc == "none"), base_scales=scales)
    got0 = _shape(sd, "block0.conv0.0.0.weight")[1]
    got1 = _shape(sd, "block1.conv0.0.0.weight")[1]
    if (got0, got1) != (cfg.block0_in, cfg.block_in):
        raise ValueError(f"RIFE {label}-like checkpoint has block input channels {(got0, got1)}, expected "
                         f"{(cfg.block0_in, cfg.block_in)}; the layout is not one we know")
    return cfg


def build_model(sd: StateDict) -> Union[IFNet4, IFNet36]:
    """Detect the version, build the network and load the weights strictly (extra keys dropped first)."""
    sd = strip_prefix(sd)
    ver = detect_version(sd)
    net = IFNet36() if ver == "3.6" else IFNet4(ver)
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise ValueError(f"RIFE {getattr(net, 'version', None) or ver.version} checkpoint is missing "
                         f"{len(missing)} keys, e.g. {missing[:3]}; the file is truncated or of another layout")
    bad = [(k, tuple(sd[k].shape), tuple(v.shape)) for k, v in own.items() if sd[k].shape != v.shape]
    if bad:
        raise ValueError(f"RIFE checkpoint shapes differ from the detected layout: {bad[:3]} (key, file, model)")
    net.load_state_dict({k: sd[k] for k in own}, strict=True)
    return net.eval().requires_grad_(False)


def load_rife_model(path: Union[str, Path]) -> Union[IFNet4, IFNet36]:
    """Read a checkpoint file and return the fp32 CPU network in eval mode."""
    return build_model(read_checkpoint(path, dtype=torch.float32, where=WHERE))


def random_model(version: str = "4.7", seed: int = 0) -> Union[IFNet4, IFNet36]:
    """A randomly initialised network of a known layout (tests, benchmarks, tiny checkpoints)."""
    torch.manual_seed(seed)
    if version in ("3.6", "3.6hd"):
        return IFNet36().eval().requires_grad_(False)
    key = {"4.8": "4.7", "4.9": "4.7", "4.26": "4.25"}.get(version, version)
    if key not in PRESETS:
        raise ValueError(f"unknown RIFE version {version!r}; known: 3.6, {', '.join(sorted(PRESETS))}, 4.9, 4.26")
    cfg = PRESETS[key]
    if key != version:
        cfg = replace(cfg, version=version)
    return IFNet4(cfg).eval().requires_grad_(False)
