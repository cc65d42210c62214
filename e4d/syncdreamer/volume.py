"""SpatialVolumeNet: the 3D-aware feature volume shared by all 16 views (SyncDreamer §3.3).

Pipeline per denoising step: every noisy view latent -> NoisyTargetViewEncoder -> unprojected into a V^3 grid
(view-major channels) -> SpatialTime3DNet -> spatial volume V ``[B, C, V, V, V]``. Per target view the volume is
resampled into a camera frustum (D depths) and refined by FrustumTV3DNet into 4 resolution levels.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dims import VolumeDims
from .layers import GroupNormAct


class Image2DResBlockWithTV(nn.Module):
    def __init__(self, dim: int, tdim: int, vdim: int):
        super().__init__()
        self.time_embed = nn.Conv2d(tdim, dim, 1)
        self.view_embed = nn.Conv2d(vdim, dim, 1)
        # GroupNorm + SiLU as one layer; each Identity keeps the checkpoint's layer indices
        self.conv = nn.Sequential(GroupNormAct(8, dim, act="silu"), nn.Identity(), nn.Conv2d(dim, dim, 3, 1, 1),
                                  GroupNormAct(8, dim, act="silu"), nn.Identity(), nn.Conv2d(dim, dim, 3, 1, 1))

    def forward(self, x: Tensor, t: Tensor, v: Tensor) -> Tensor:
        return x + self.conv(x + self.time_embed(t) + self.view_embed(v))


class NoisyTargetViewEncoder(nn.Module):
    """Noisy view latent ``[B, 4, h, w]`` + time ``[B, Dt]`` + view ``[B, Dv]`` -> features ``[B, out, h, w]``."""

    def __init__(self, tdim: int, vdim: int, run_dim: int, out_dim: int):
        super().__init__()
        self.init_conv = nn.Conv2d(4, run_dim, 3, 1, 1)
        self.out_conv0 = Image2DResBlockWithTV(run_dim, tdim, vdim)
        self.out_conv1 = Image2DResBlockWithTV(run_dim, tdim, vdim)
        self.out_conv2 = Image2DResBlockWithTV(run_dim, tdim, vdim)
        self.final_out = nn.Sequential(GroupNormAct(8, run_dim, act="silu"), nn.Identity(),
                                       nn.Conv2d(run_dim, out_dim, 3, 1, 1))

    def forward(self, x: Tensor, t: Tensor, v: Tensor) -> Tensor:
        t, v = t[..., None, None], v[..., None, None]
        x = self.init_conv(x)
        for blk in (self.out_conv0, self.out_conv1, self.out_conv2):
            x = blk(x, t, v)
        return self.final_out(x)


class _PreActBlock3D(nn.Module):
    """``x + Conv1(t) [+ Conv1(v)]`` -> GN(8) + SiLU (one layer) -> (transposed) Conv3d k3."""

    def __init__(self, cin: int, cout: int, tdim: int, vdim: int = 0, stride: int = 1, up: bool = False):
        super().__init__()
        self.t_conv = nn.Conv3d(tdim, cin, 1)
        if vdim:
            self.v_conv = nn.Conv3d(vdim, cin, 1)
        norm = GroupNormAct(8, cin, act="silu")
        if up:  # checkpoint names: ``norm`` for up-blocks, ``bn`` for the others
            self.norm = norm
            self.conv = nn.ConvTranspose3d(cin, cout, 3, stride=2, padding=1, output_padding=1)
        else:
            self.bn = norm
            self.conv = nn.Conv3d(cin, cout, 3, stride=stride, padding=1)

    def forward(self, x: Tensor, t: Tensor, v: Tensor = None) -> Tensor:
        x = x + self.t_conv(t)
        if hasattr(self, "v_conv"):
            x = x + self.v_conv(v)
        norm = self.norm if hasattr(self, "norm") else self.bn
        return self.conv(norm(x))


class SpatialTime3DNet(nn.Module):
    def __init__(self, tdim: int, cin: int, dims):
        super().__init__()
        d0, d1, d2, d3 = dims
        self.init_conv = nn.Conv3d(cin, d0, 3, 1, 1)
        self.conv0 = _PreActBlock3D(d0, d0, tdim)
        self.conv1, self.conv2_0, self.conv2_1 = (_PreActBlock3D(d0, d1, tdim, stride=2),
                                                  _PreActBlock3D(d1, d1, tdim), _PreActBlock3D(d1, d1, tdim))
        self.conv3, self.conv4_0, self.conv4_1 = (_PreActBlock3D(d1, d2, tdim, stride=2),
                                                  _PreActBlock3D(d2, d2, tdim), _PreActBlock3D(d2, d2, tdim))
        self.conv5, self.conv6_0, self.conv6_1 = (_PreActBlock3D(d2, d3, tdim, stride=2),
                                                  _PreActBlock3D(d3, d3, tdim), _PreActBlock3D(d3, d3, tdim))
        self.conv7 = _PreActBlock3D(d3, d2, tdim, up=True)
        self.conv8 = _PreActBlock3D(d2, d1, tdim, up=True)
        self.conv9 = _PreActBlock3D(d1, d0, tdim, up=True)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = t[..., None, None, None]
        c0 = self.conv0(self.init_conv(x), t)
        c2 = self.conv2_1(self.conv2_0(self.conv1(c0, t), t), t)
        c4 = self.conv4_1(self.conv4_0(self.conv3(c2, t), t), t)
        x = self.conv6_1(self.conv6_0(self.conv5(c4, t), t), t)
        x = c4 + self.conv7(x, t)
        x = c2 + self.conv8(x, t)
        return c0 + self.conv9(x, t)


class FrustumTV3DNet(nn.Module):
    def __init__(self, cin: int, tdim: int, vdim: int, dims):
        super().__init__()
        d0, d1, d2, d3 = dims
        self.conv0 = nn.Conv3d(cin, d0, 3, 1, 1)
        self.conv1, self.conv2 = _PreActBlock3D(d0, d1, tdim, vdim, 2), _PreActBlock3D(d1, d1, tdim, vdim)
        self.conv3, self.conv4 = _PreActBlock3D(d1, d2, tdim, vdim, 2), _PreActBlock3D(d2, d2, tdim, vdim)
        self.conv5, self.conv6 = _PreActBlock3D(d2, d3, tdim, vdim, 2), _PreActBlock3D(d3, d3, tdim, vdim)
        self.up0 = _PreActBlock3D(d3, d2, tdim, vdim, up=True)
        self.up1 = _PreActBlock3D(d2, d1, tdim, vdim, up=True)
        self.up2 = _PreActBlock3D(d1, d0, tdim, vdim, up=True)

    def forward(self, x: Tensor, t: Tensor, v: Tensor) -> Dict[int, Tensor]:
        t, v = t[..., None, None, None], v[..., None, None, None]
        w = x.shape[-1]
        x0 = self.conv0(x)
        x1 = self.conv2(self.conv1(x0, t, v), t, v)
        x2 = self.conv4(self.conv3(x1, t, v), t, v)
        x3 = self.conv6(self.conv5(x2, t, v), t, v)
        x2 = self.up0(x3, t, v) + x2
        x1 = self.up1(x2, t, v) + x1
        x0 = self.up2(x1, t, v) + x0
        return {w: x0, w // 2: x1, w // 4: x2, w // 8: x3}


# ---- geometry (eq.-level functions) -------------------------------------------------------------------------

def projection_matrices(Ks: Tensor, poses: Tensor, ratio: float) -> Tensor:
    """``[N, 4, 4]`` = pad(diag(ratio, ratio, 1) @ K @ [R|t]) mapping world points to feature-map pixels*depth."""
    scale = torch.diag(torch.tensor([ratio, ratio, 1.0], dtype=torch.float32, device=Ks.device))
    P = scale @ Ks.float() @ poses.float()  # [N, 3, 4]
    pad = torch.zeros(P.shape[0], 1, 4, dtype=P.dtype, device=P.device)
    pad[:, 0, 3] = 1.0
    return torch.cat([P, pad], dim=1)


def voxel_grid(size: int, half_length: float, device) -> Tensor:
    """Voxel centres ``[V, V, V, 3]``: index (d, h, w) sits at world (x=a_w, y=a_h, z=a_d)."""
    a = torch.linspace(-half_length, half_length, size, dtype=torch.float32, device=device)
    z, y, x = torch.meshgrid(a, a, a, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def project_to_grid(points: Tensor, P: Tensor, feat_size: int) -> Tensor:
    """World points ``[M, 3]`` through ``P [N, 4, 4]`` -> grid_sample coords ``[N, M, 2]`` (align_corners=True)."""
    p = P[:, :3, :3] @ points.t()[None] + P[:, :3, 3:]  # [N, 3, M]; same reduction order as the official code
    depth = p[:, 2:].clamp_min(1e-4)
    uv = p[:, :2] / depth
    return (uv / ((feat_size - 1) / 2) - 1).transpose(1, 2)


def frustum_points(P: Tensor, size: int, depth: int, distance: float, half_length: float) -> Tensor:
    """World xyz ``[N, D, size, size, 3]`` of each target view's frustum samples (pixel (u, v) at depth z),
    depths ``linspace(near, far)`` with near/far = distance -/+ half_length."""
    dev, f32 = P.device, torch.float32
    dist = torch.full((), distance, dtype=f32, device=dev)
    near_t, far_t = dist - half_length, dist + half_length  # float32 arithmetic, as the official tensors
    z = torch.linspace(0, 1, depth, dtype=f32, device=dev) * (far_t - near_t) + near_t  # [D]
    v, u = torch.meshgrid(torch.arange(size, dtype=f32, device=dev), torch.arange(size, dtype=f32, device=dev),
                          indexing="ij")
    pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(size * size, dtype=f32, device=dev)])  # [3, HW]
    cam = (pix[:, None, :] * z[None, :, None]).reshape(3, -1)  # [3, D*HW]
    Pinv = torch.inverse(P)  # [N, 4, 4]
    xyz = Pinv[:, :3, :3] @ cam[None] + Pinv[:, :3, 3:]  # [N, 3, D*HW]
    return xyz.reshape(-1, 3, depth, size, size).permute(0, 2, 3, 4, 1)


class SpatialVolumeNet(nn.Module):
    def __init__(self, d: VolumeDims):
        super().__init__()
        self.d = d
        self._geometry: Dict[tuple, Tensor] = {}  # sampling grids per camera set and size (constant over steps)
        self.target_encoder = NoisyTargetViewEncoder(d.time_dim, d.view_dim, d.encoder_run_dim, d.encoder_out_dim)
        self.spatial_volume_feats = SpatialTime3DNet(d.time_dim, d.encoder_out_dim * d.view_num, d.spatial_dims)
        self.frustum_volume_feats = FrustumTV3DNet(d.frustum_in_dim, d.time_dim, d.view_dim, d.frustum_dims)

    def _cached(self, kind: str, poses: Tensor, Ks: Tensor, size: int, build) -> Tensor:
        """``build()`` once per camera set, size and device: the grids depend only on the cameras, so every DDIM
        step and chunk reuses them (no per-chunk matrix inverse, nothing to sync inside a captured CUDA graph)."""
        key = (kind, size, poses.device, poses.data_ptr(), Ks.data_ptr(),
               *(getattr(t, "_version", 0) if not t.is_inference() else 0 for t in (poses, Ks)))
        if key not in self._geometry:
            self._geometry = {k: v for k, v in self._geometry.items() if k[0] != kind}  # one entry per kind
            self._geometry[key] = build()
        return self._geometry[key]

    def unproject(self, x: Tensor, t_embed: Tensor, v_embed: Tensor, poses: Tensor, Ks: Tensor) -> Tensor:
        """Noisy latents ``[B, N, 4, h, w]`` -> unprojected features ``[B, N*C, V, V, V]`` (view-major channels)."""
        B, N, _, h, w = x.shape
        V = self.d.spatial_size
        grid = self._cached("unproject", poses, Ks, w, lambda: project_to_grid(
            voxel_grid(V, self.d.spatial_length, x.device).reshape(-1, 3),
            projection_matrices(Ks, poses, w / self.d.input_image_size), w))  # [N, V^3, 2] float32, as fp16
        # coordinates would shift samples
        feats = self.target_encoder(x.reshape(B * N, *x.shape[2:]), t_embed.repeat_interleave(N, 0),
                                    v_embed.reshape(B * N, -1).to(x.dtype))  # [B*N, C, h, w]
        C = feats.shape[1]
        g = grid.reshape(1, N, V, V * V, 2).expand(B, -1, -1, -1, -1).reshape(B * N, V, V * V, 2)
        vol = F.grid_sample(feats.float(), g, mode="bilinear", padding_mode="zeros", align_corners=True)
        return vol.reshape(B, N * C, V, V, V).to(x.dtype)

    def construct_spatial_volume(self, x: Tensor, t_embed: Tensor, v_embed: Tensor, poses: Tensor, Ks: Tensor) -> Tensor:
        """``x [B, N, 4, h, w]``, ``t_embed [B, Dt]``, ``v_embed [B, N, Dv]`` -> spatial volume ``[B, C, V, V, V]``."""
        return self.spatial_volume_feats(self.unproject(x, t_embed, v_embed, poses, Ks), t_embed)

    def frustum_volumes(self, volume: Tensor, t_embed: Tensor, v_embed: Tensor, poses: Tensor, Ks: Tensor,
                        target: Tensor, size: int = 0) -> Dict[int, Tensor]:
        """Frustum features of target views ``target [B, TN]`` -> {width: ``[B*TN, C, D', width, width]``}.

        ``volume [B, C, V, V, V]``, ``v_embed [B, N, Dv]``; rows are ordered (b, tn). ``size``: latent width
        (default ``input_image_size // 8`` = 32); smaller latents (tests) scale the intrinsics accordingly.
        """
        d = self.d
        B, TN = target.shape
        size = size or d.input_image_size // 8
        idx = target.reshape(-1)
        xyz = self._cached("frustum", poses, Ks, size, lambda: frustum_points(
            projection_matrices(Ks, poses, size / d.input_image_size), size, d.frustum_depth, d.camera_distance,
            d.frustum_length) / d.spatial_length)[idx]  # [B*TN, D, H, W, 3]
        vol = volume.repeat_interleave(TN, 0)
        feats = F.grid_sample(vol.float(), xyz, mode="bilinear", padding_mode="zeros",
                              align_corners=True).to(vol.dtype)  # sampled in float32, like autocast does
        v = v_embed[torch.arange(B, device=target.device)[:, None], target].reshape(B * TN, -1)
        return self.frustum_volume_feats(feats, t_embed.repeat_interleave(TN, 0).to(vol.dtype), v.to(vol.dtype))
