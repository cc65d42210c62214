"""RIFE 4.x IFNet (4.5/4.6, 4.7-4.9, 4.13-4.20 "4.17", 4.21-4.23 "4.22", 4.25/4.26), our implementation.

Reference: shared/reference/rife/ARCHITECTURE.md §2-3. Parity with the public code is tested for 4.7
(tests/test_rife_parity.py); the other layouts follow the same description and are checked for shapes only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from .blocks import Encoder47, Head, IFBlock
from .warp import swap_flow, warp


@dataclass(frozen=True)
class IFNet4Config:
    """Shape and behaviour of one 4.x release family."""

    version: str
    """Release label shown to users, e.g. "4.7" (4.7, 4.8 and 4.9 share it)."""
    block_channels: tuple[int, ...] = (192, 128, 96, 64)
    """Width c of each IFBlock, coarse to fine."""
    encoder: str = "conv2"
    """Per-frame encoder: "none" (4.5/4.6), "conv2" (4.7-4.9), "head" (4.13+)."""
    enc_hidden: int = 16
    """Hidden width of the encoder."""
    enc_out: int = 4
    """Feature channels per frame produced by the encoder (0 without encoder)."""
    out_channels: int = 6
    """Channels emitted by each block: 4 flow + 1 mask + (1 unused | 8 feat)."""
    accumulate_mask: bool = False
    """4.5/4.6 add the mask logits of successive blocks; 4.7+ replace them."""
    base_scales: tuple[float, ...] = (8.0, 4.0, 2.0, 1.0)
    """Per-block downscale at scale=1 (divided by the user scale)."""

    @property
    def feat_channels(self) -> int:
        """Feature channels passed from block to block (4.21+: 8)."""
        return self.out_channels - 5 if self.out_channels > 6 else 0

    @property
    def supports_ensemble(self) -> bool:
        return self.feat_channels == 0

    @property
    def block0_in(self) -> int:
        return 3 + 3 + 2 * self.enc_out + 1

    @property
    def block_in(self) -> int:
        return self.block0_in + 1 + self.feat_channels + 4

    @property
    def min_multiple(self) -> int:
        """Padded H and W must be multiples of 4 * max(scale list) at scale 1."""
        return int(4 * max(self.base_scales))


PRESETS: dict[str, IFNet4Config] = {
    "4.6": IFNet4Config("4.6", encoder="none", enc_out=0, accumulate_mask=True),
    "4.7": IFNet4Config("4.7"),
    "4.17": IFNet4Config("4.17", encoder="head", enc_hidden=32, enc_out=8),
    "4.22": IFNet4Config("4.22", (256, 192, 96, 48), "head", 32, 8, 13),
    "4.22.lite": IFNet4Config("4.22.lite", (192, 128, 64, 32), "head", 16, 4, 13),
    "4.25": IFNet4Config("4.25", (192, 128, 96, 64, 32), "head", 16, 4, 13,
                         base_scales=(16.0, 8.0, 4.0, 2.0, 1.0)),
}
"""Layouts of the manifests in shared/reference/rife/keys (4.26 = 4.25 layout, 4.9 = 4.7 layout)."""


class IFNet4(nn.Module):
    """RIFE 4.x flow network on padded inputs. Module names equal the official state-dict keys."""

    def __init__(self, config: IFNet4Config) -> None:
        super().__init__()
        self.config = config
        cfg = config
        if cfg.encoder == "conv2":
            self.encode = Encoder47(cfg.enc_hidden, cfg.enc_out).encode  # keys encode.0 / encode.1
        elif cfg.encoder == "head":
            self.encode = Head(cfg.enc_hidden, cfg.enc_out)
        elif cfg.encoder != "none":
            raise ValueError(f"unknown encoder kind {cfg.encoder!r}; use none, conv2 or head")
        for i, c in enumerate(cfg.block_channels):
            setattr(self, f"block{i}", IFBlock(cfg.block0_in if i == 0 else cfg.block_in, c, cfg.out_channels))

    @property
    def blocks(self) -> list[IFBlock]:
        return [getattr(self, f"block{i}") for i in range(len(self.config.block_channels))]

    def forward(self, img0: Tensor, img1: Tensor, timestep: Tensor, scale: float = 1.0, ensemble: bool = False,
                debug: Optional[dict] = None) -> tuple[Tensor, Tensor, Tensor]:
        """Interpolate padded, clamped frames.

        Args:
            img0, img1: ``[B, 3, H, W]`` in [0, 1], H and W multiples of ``min_multiple / scale``.
            timestep: ``[B, 1, H, W]`` constant planes of t.
            scale: divides every entry of the scale list (<1 coarser flow, >1 finer).
            ensemble: official 4.6/4.7 ensemble (reverse pass averaged before the flow update).
            debug: if a dict, filled with per-block intermediates (keys as in FIXTURE.md).

        Returns:
            ``(out [B,3,H,W], flow [B,4,H,W], mask [B,1,H,W])``: the blend, the final flow (ch 0-1 to img0,
            ch 2-3 to img1) and the sigmoid blend weight of the warped img0.
        """
        cfg = self.config
        if ensemble and not cfg.supports_ensemble:
            raise ValueError(f"RIFE {cfg.version} has no ensemble mode (4.21+ pass features between blocks); "
                             "set ensemble=False")
        scales = [s / scale for s in cfg.base_scales]
        f0 = f1 = None
        if cfg.encoder != "none":
            f0, f1 = self.encode(img0), self.encode(img1)
            if debug is not None:
                debug["encode_f0"], debug["encode_f1"] = f0, f1

        def frames(a: Tensor, b: Tensor, fa: Optional[Tensor], fb: Optional[Tensor]) -> list[Tensor]:
            return [a, b] if fa is None else [a, b, fa, fb]

        flow: Optional[Tensor] = None
        mask = feat = None
        w0, w1, wf0, wf1 = img0, img1, f0, f1
        for i, block in enumerate(self.blocks):
            if flow is None:
                fd, m, ft = block(torch.cat(frames(img0, img1, f0, f1) + [timestep], 1), None, scales[i])
                if ensemble:
                    fr, mr, _ = block(torch.cat(frames(img1, img0, f1, f0) + [1 - timestep], 1), None, scales[i])
                    fd, m = (fd + swap_flow(fr)) / 2, (m - mr) / 2
                flow, mask = fd, m
            else:
                extra = [] if feat is None else [feat]
                fd, m, ft = block(torch.cat(frames(w0, w1, wf0, wf1) + [timestep, mask] + extra, 1), flow, scales[i])
                if ensemble:
                    fr, mr, _ = block(torch.cat(frames(w1, w0, wf1, wf0) + [1 - timestep, -mask], 1),
                                      swap_flow(flow), scales[i])
                    fd, m = (fd + swap_flow(fr)) / 2, (m - mr) / 2
                flow = flow + fd
                mask = mask + m if cfg.accumulate_mask else m
            feat = ft
            if debug is not None:
                debug[f"block{i}_flow_out"], debug[f"block{i}_mask_out"] = fd, m
            # warped frames are always re-sampled from the ORIGINAL frames with the current flow
            w0, w1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
            if f0 is not None:
                wf0, wf1 = warp(f0, flow[:, :2]), warp(f1, flow[:, 2:4])
        m = torch.sigmoid(mask)
        if debug is not None:
            debug["flow_final"], debug["final_mask_sigmoid"] = flow, m
        return w0 * m + w1 * (1 - m), flow, m
