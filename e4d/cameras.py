"""Camera contract shared by every stage.

Conventions (identical to ``shared/data/cesium_man_walk`` and to SyncDreamer's ``camera-16.pkl``):

* World: right-handed, **+Z up**. A camera at azimuth ``az`` and elevation ``el`` (degrees) sits at
  ``r * (cos el cos az, cos el sin az, sin el)`` and looks at the origin; azimuth 0 is +X and grows
  counter-clockwise seen from +Z (towards +Y).
* ``w2c``: 4x4 world-to-camera matrix in **OpenCV** axes (x right, y down, z forward); world +Z projects upwards.
* ``K``: pinhole intrinsics in pixels; pixel (u, v) covers [u, u+1) x [v, v+1), so the principal point of a
  W x H image is (W/2, H/2). Projection: ``p = K @ (w2c @ [X, 1])[:3]; (u, v) = p[:2] / p[2]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

# SyncDreamer's fixed output rig (SyncDreamer meta_info/camera-16.pkl; Efficient4D uses it unchanged).
SYNCDREAMER_FOCAL_256 = 280.0
SYNCDREAMER_RADIUS = 1.5
SYNCDREAMER_ELEVATION = 30.0
SYNCDREAMER_NUM_VIEWS = 16

FloatSeq = Union[Sequence[float], Tensor, float]


@dataclass
class Cameras:
    """A set of V pinhole cameras of one image size.

    Attributes:
        w2c: ``[V, 4, 4]`` world-to-camera (OpenCV axes).
        K: ``[V, 3, 3]`` intrinsics in pixels for a ``width x height`` image.
        width, height: image size in pixels.
        azimuth, elevation, radius: optional ``[V]`` orbit coordinates (degrees, degrees, world units), kept
            for presets and for guidance that needs relative angles; ``None`` for arbitrary cameras.
    """

    w2c: Tensor
    K: Tensor
    width: int
    height: int
    azimuth: Optional[Tensor] = None
    elevation: Optional[Tensor] = None
    radius: Optional[Tensor] = None

    def __post_init__(self) -> None:
        if self.w2c.ndim != 3 or self.w2c.shape[1:] != (4, 4):
            raise ValueError(f"Cameras.w2c must be [V, 4, 4], got {tuple(self.w2c.shape)}")
        if self.K.shape != (self.w2c.shape[0], 3, 3):
            raise ValueError(f"Cameras.K must be [V, 3, 3] with V={self.w2c.shape[0]}, got {tuple(self.K.shape)}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"Cameras image size must be positive, got {self.width}x{self.height}")
        for name in ("w2c", "K"):
            if not torch.isfinite(getattr(self, name)).all():
                raise ValueError(f"Cameras.{name} contains NaN or inf; check the camera file")

    def __len__(self) -> int:
        return int(self.w2c.shape[0])

    def __getitem__(self, idx) -> "Cameras":
        """Select cameras by int, slice, list or bool/long tensor; the result is always a Cameras of V' >= 1."""
        if isinstance(idx, int):
            idx = [idx]
        pick = lambda x: None if x is None else x[idx]  # noqa: E731
        return Cameras(self.w2c[idx], self.K[idx], self.width, self.height,
                       pick(self.azimuth), pick(self.elevation), pick(self.radius))

    def to(self, device=None, dtype=None) -> "Cameras":
        mv = lambda x: None if x is None else x.to(device=device, dtype=dtype)  # noqa: E731
        return Cameras(mv(self.w2c), mv(self.K), self.width, self.height,
                       mv(self.azimuth), mv(self.elevation), mv(self.radius))

    @property
    def device(self) -> torch.device:
        return self.w2c.device

    def centers(self) -> Tensor:
        """Camera centres in world coordinates, ``[V, 3]``."""
        R, t = self.w2c[:, :3, :3], self.w2c[:, :3, 3:]
        return (-R.transpose(1, 2) @ t)[..., 0]

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras for another image size (intrinsics scaled per axis)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.clone()
        K[:, 0] *= sx
        K[:, 1] *= sy
        return Cameras(self.w2c, K, width, height, self.azimuth, self.elevation, self.radius)

    @staticmethod
    def cat(items: Sequence["Cameras"]) -> "Cameras":
        if not items:
            raise ValueError("Cameras.cat needs at least one Cameras")
        if len({(c.width, c.height) for c in items}) != 1:
            raise ValueError(f"Cameras.cat needs one image size, got {[(c.width, c.height) for c in items]}")
        opt = lambda name: (None if any(getattr(c, name) is None for c in items)  # noqa: E731
                            else torch.cat([getattr(c, name) for c in items]))
        return Cameras(torch.cat([c.w2c for c in items]), torch.cat([c.K for c in items]),
                       items[0].width, items[0].height, opt("azimuth"), opt("elevation"), opt("radius"))


def _as_tensor(x: FloatSeq, dtype=torch.float64) -> Tensor:
    return torch.as_tensor(x, dtype=dtype).reshape(-1)


def look_at(azimuth_deg: FloatSeq, elevation_deg: FloatSeq, radius: FloatSeq = SYNCDREAMER_RADIUS) -> Tensor:
    """World-to-camera matrices ``[N, 4, 4]`` (float32) of cameras on a sphere looking at the origin.

    The three arguments broadcast against each other. Elevation must stay inside (-90, 90): at the poles the
    +Z-up roll is undefined.
    """
    az, el, r = torch.broadcast_tensors(_as_tensor(azimuth_deg), _as_tensor(elevation_deg), _as_tensor(radius))
    if (el.abs() >= 89.999).any():
        raise ValueError(f"elevation must be inside (-90, 90) degrees, got {el.tolist()}; the roll is undefined at a pole")
    if (r <= 0).any():
        raise ValueError(f"camera radius must be > 0, got {r.tolist()}")
    a, e = torch.deg2rad(az), torch.deg2rad(el)
    center = torch.stack([torch.cos(e) * torch.cos(a), torch.cos(e) * torch.sin(a), torch.sin(e)], -1) * r[:, None]
    forward = -center / center.norm(dim=-1, keepdim=True)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(forward)
    right = torch.linalg.cross(forward, up)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward], dim=1)  # rows: camera axes in world coordinates
    w2c = torch.zeros(len(a), 4, 4, dtype=torch.float64)
    w2c[:, :3, :3] = R
    w2c[:, :3, 3] = -(R @ center[..., None])[..., 0]
    w2c[:, 3, 3] = 1.0
    return w2c.float()


def intrinsics(width: int, height: int, fx: float, fy: Optional[float] = None,
               cx: Optional[float] = None, cy: Optional[float] = None, n: int = 1) -> Tensor:
    """Pinhole ``K`` repeated ``n`` times, ``[n, 3, 3]``; the principal point defaults to the image centre."""
    K = torch.tensor([[fx, 0.0, width / 2 if cx is None else cx],
                      [0.0, fx if fy is None else fy, height / 2 if cy is None else cy],
                      [0.0, 0.0, 1.0]], dtype=torch.float32)
    return K.expand(n, 3, 3).clone()


def focal_from_fov(fov_deg: float, size: int) -> float:
    """Focal length in pixels for a field of view ``fov_deg`` across ``size`` pixels."""
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
    return 0.5 * size / math.tan(math.radians(fov_deg) / 2)


def orbit_cameras(azimuth_deg: FloatSeq, elevation_deg: FloatSeq, radius: FloatSeq = SYNCDREAMER_RADIUS,
                  size: int = 256, focal: Optional[float] = None, height: Optional[int] = None) -> Cameras:
    """Cameras looking at the origin from the given orbit coordinates.

    ``focal`` defaults to SyncDreamer's (280 px at 256 px width, i.e. a 49.1 deg field of view), scaled to ``size``.
    """
    h = size if height is None else height
    w2c = look_at(azimuth_deg, elevation_deg, radius)
    az, el, r = torch.broadcast_tensors(_as_tensor(azimuth_deg, torch.float32),
                                        _as_tensor(elevation_deg, torch.float32), _as_tensor(radius, torch.float32))
    f = SYNCDREAMER_FOCAL_256 * size / 256 if focal is None else focal
    return Cameras(w2c, intrinsics(size, h, f, n=len(w2c)), size, h, az.clone(), el.clone(), r.clone())


def syncdreamer16(size: int = 256) -> Cameras:
    """SyncDreamer's 16 output views: azimuth 22.5 deg * i, elevation 30 deg, radius 1.5, fx = fy = 280 at 256 px."""
    return orbit_cameras([22.5 * i for i in range(SYNCDREAMER_NUM_VIEWS)], SYNCDREAMER_ELEVATION,
                         SYNCDREAMER_RADIUS, size)


def input_view(elevation_deg: float = 0.0, size: int = 256, radius: float = SYNCDREAMER_RADIUS) -> Cameras:
    """The camera of the user's video: azimuth 0 (view 0's azimuth), given elevation, SyncDreamer intrinsics."""
    return orbit_cameras([0.0], elevation_deg, radius, size)


def orbit_path(n: int, elevation_deg: float = SYNCDREAMER_ELEVATION, radius: float = SYNCDREAMER_RADIUS,
               size: int = 256, start_azimuth: float = 0.0, turns: float = 1.0, focal: Optional[float] = None) -> Cameras:
    """``n`` cameras evenly spaced along ``turns`` full orbits (the last one does not repeat the first)."""
    if n < 1:
        raise ValueError(f"an orbit needs at least 1 camera, got n={n}")
    az = [start_azimuth + 360.0 * turns * i / n for i in range(n)]
    return orbit_cameras(az, elevation_deg, radius, size, focal)


def _equal_size_radius(fov_deg: float) -> float:
    """Radius at which a camera of ``fov_deg`` sees the unit-diameter object as large as SyncDreamer's rig does."""
    sd_half = math.atan(128.0 / SYNCDREAMER_FOCAL_256)
    return SYNCDREAMER_RADIUS * math.tan(sd_half) / math.tan(math.radians(fov_deg) / 2)


def camera_preset(name: str, size: int = 256, elevation_deg: float = 0.0,
                  azimuths: Optional[Sequence[float]] = None,
                  elevations: Optional[Sequence[float]] = None) -> Cameras:
    """Named multi-view rigs, for assembling another generator's views into a view matrix.

    * ``syncdreamer16``: 16 views, azimuth 22.5 deg * i, elevation 30 deg (SyncDreamer, Efficient4D).
    * ``zero123plus6``: Zero123++ v1.2: azimuths 30 + 60 i deg relative to the input, elevations alternating
      20 / -10 deg, 30 deg field of view.
    * ``sv3d21``: SV3D: 21 views, azimuth 360/21 * i deg, elevation ``elevation_deg``, 33.8 deg field of view.
    * ``custom``: ``azimuths`` and ``elevations`` (degrees) with SyncDreamer intrinsics.

    Radii are chosen so the object appears as large as in SyncDreamer's rig (the fit's sphere of radius 0.5).
    """
    if name == "syncdreamer16":
        return syncdreamer16(size)
    if name == "zero123plus6":
        fov = 30.0
        return orbit_cameras([30.0 + 60.0 * i for i in range(6)], [20.0, -10.0] * 3,
                             _equal_size_radius(fov), size, focal_from_fov(fov, size))
    if name == "sv3d21":
        fov = 33.8
        return orbit_cameras([360.0 * i / 21 for i in range(21)], elevation_deg,
                             _equal_size_radius(fov), size, focal_from_fov(fov, size))
    if name == "custom":
        if not azimuths or elevations is None:
            raise ValueError("camera preset 'custom' needs azimuths and elevations (degrees), e.g. '0,90,180,270' and '30'")
        el = list(elevations)
        if len(el) == 1:
            el = el * len(azimuths)
        if len(el) != len(azimuths):
            raise ValueError(f"custom cameras: {len(azimuths)} azimuths but {len(el)} elevations; give one elevation or one per azimuth")
        return orbit_cameras(list(azimuths), el, SYNCDREAMER_RADIUS, size)
    raise ValueError(f"unknown camera preset {name!r}; choose one of {CAMERA_PRESETS}")


CAMERA_PRESETS = ("syncdreamer16", "zero123plus6", "sv3d21", "custom")


def project(points: Tensor, cameras: Cameras) -> tuple[Tensor, Tensor]:
    """Project world points ``[N, 3]`` into every camera: pixels ``[V, N, 2]`` and depths ``[V, N]``."""
    R, t = cameras.w2c[:, :3, :3], cameras.w2c[:, :3, 3]
    cam = points[None] @ R.transpose(1, 2) + t[:, None]
    uvw = cam @ cameras.K.transpose(1, 2)
    return uvw[..., :2] / uvw[..., 2:3], cam[..., 2]


def cameras_to_json(cameras: Cameras) -> list[dict]:
    """Per-view dicts in the ``cameras.json`` layout of the shared data (w2c, fx, fy, cx, cy, orbit coordinates)."""
    out = []
    for i in range(len(cameras)):
        d = {"id": i, "w2c": cameras.w2c[i].double().tolist(),
             "fx": float(cameras.K[i, 0, 0]), "fy": float(cameras.K[i, 1, 1]),
             "cx": float(cameras.K[i, 0, 2]), "cy": float(cameras.K[i, 1, 2])}
        for name, key in (("azimuth", "azimuth_deg"), ("elevation", "elevation_deg"), ("radius", "radius")):
            v = getattr(cameras, name)
            if v is not None:
                d[key] = float(v[i])
        out.append(d)
    return out


def cameras_from_json(views: Sequence[dict], width: int, height: int) -> Cameras:
    """Inverse of :func:`cameras_to_json`; orbit coordinates are kept only when every view has them."""
    if not views:
        raise ValueError("camera list is empty")
    try:
        w2c = torch.tensor([v["w2c"] for v in views], dtype=torch.float32)
        K = torch.stack([intrinsics(width, height, v["fx"], v.get("fy"), v.get("cx"), v.get("cy"))[0] for v in views])
    except KeyError as e:
        raise ValueError(f"camera entry lacks {e}; every view needs 'w2c' (4x4) and 'fx' (plus optional fy, cx, cy)") from e
    opt = lambda key: (torch.tensor([v[key] for v in views], dtype=torch.float32)  # noqa: E731
                       if all(key in v for v in views) else None)
    return Cameras(w2c, K, width, height, opt("azimuth_deg"), opt("elevation_deg"), opt("radius"))
