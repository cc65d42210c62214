"""The view matrix: T times x V views of one object, the contract between generation and fitting.

Folder layout (the one of ``shared/data/cesium_man_walk``), readable and writable so any dataset can be fitted::

    cameras.json          width, height, fx, fy, cx, cy, views[i] = {w2c, fx, fy, cx, cy, dir, ...},
                          optional input_view {w2c, ..., dir}, animation.gt_time_norm (times in [0, 1])
    views/vVV/tTT.png     RGB composited on white (+ alpha channel when known)
    input/fKK.png         optional single-view input video (its times in animation.input_time_norm)
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .atomic import atomic_dir
from .cameras import Cameras, cameras_from_json, cameras_to_json
from .dataset_checks import check_cameras_json, check_view_folders, check_views_have_object
from .limits import check_frames_budget, inside_folder
from .image_read import read_image
from .masks import composite_on_white


@dataclass
class ViewMatrix:
    """Images of one object at T normalized times from V cameras.

    Attributes:
        images: ``[T, V, H, W, 3]`` float in [0, 1], composited on a white background.
        cameras: the V cameras (image size W x H).
        times: ``[T]`` normalized times in [0, 1], increasing.
        alpha: optional ``[T, V, H, W]`` coverage in [0, 1].
        input_images: optional ``[T, H, W, 3]`` frames of the user's single-view video at the same times.
        input_alpha: optional ``[T, H, W]``.
        input_camera: optional Cameras of length 1 for ``input_images``.
    """

    images: Tensor
    cameras: Cameras
    times: Tensor
    alpha: Optional[Tensor] = None
    input_images: Optional[Tensor] = None
    input_alpha: Optional[Tensor] = None
    input_camera: Optional[Cameras] = None

    def __post_init__(self) -> None:
        self.validate()

    # -- shape helpers ------------------------------------------------------------------------
    @property
    def T(self) -> int:
        return int(self.images.shape[0])

    @property
    def V(self) -> int:
        return int(self.images.shape[1])

    @property
    def H(self) -> int:
        return int(self.images.shape[2])

    @property
    def W(self) -> int:
        return int(self.images.shape[3])

    @property
    def has_input(self) -> bool:
        return self.input_images is not None and self.input_camera is not None

    def validate(self) -> None:
        """Check shapes, ranges and finiteness; raise ValueError naming the field, the rule and the value."""
        im = self.images
        if im.ndim != 5 or im.shape[-1] != 3:
            raise ValueError(f"view matrix images must be [T, V, H, W, 3], got {tuple(im.shape)}")
        T, V, H, W, _ = im.shape
        if T < 1 or V < 1:
            raise ValueError(f"view matrix needs at least 1 time and 1 view, got T={T}, V={V}")
        if not torch.is_floating_point(im):
            raise ValueError(f"view matrix images must be float in [0, 1], got dtype {im.dtype}")
        if not torch.isfinite(im).all():
            raise ValueError("view matrix images contain NaN or inf; the generating stage diverged")
        if len(self.cameras) != V:
            raise ValueError(f"view matrix has V={V} views but {len(self.cameras)} cameras")
        if (self.cameras.width, self.cameras.height) != (W, H):
            raise ValueError(f"cameras are for {self.cameras.width}x{self.cameras.height} but images are {W}x{H}; "
                             "use Cameras.resized()")
        if self.times.shape != (T,):
            raise ValueError(f"times must be [T]=[{T}], got {tuple(self.times.shape)}")
        if T > 1 and not bool((self.times[1:] > self.times[:-1]).all()):
            raise ValueError(f"times must increase strictly, got {self.times.tolist()}")
        if self.alpha is not None and self.alpha.shape != (T, V, H, W):
            raise ValueError(f"alpha must be [T, V, H, W]={[T, V, H, W]}, got {tuple(self.alpha.shape)}")
        if self.input_images is not None:
            if self.input_images.shape[0] != T or self.input_images.shape[-1] != 3 or self.input_images.ndim != 4:
                raise ValueError(f"input_images must be [T, H, W, 3] with T={T}, got {tuple(self.input_images.shape)}")
            if self.input_camera is None or len(self.input_camera) != 1:
                raise ValueError("input_images need input_camera (one camera)")
            h, w = self.input_images.shape[1:3]
            if (self.input_camera.width, self.input_camera.height) != (w, h):
                raise ValueError(f"input camera is {self.input_camera.width}x{self.input_camera.height}, input frames {w}x{h}")
            if self.input_alpha is not None and self.input_alpha.shape != self.input_images.shape[:3]:
                raise ValueError(f"input_alpha must be {list(self.input_images.shape[:3])}, got {tuple(self.input_alpha.shape)}")

    # -- selections ---------------------------------------------------------------------------
    def select_views(self, idx: Sequence[int]) -> "ViewMatrix":
        idx = list(idx)
        bad = [i for i in idx if not 0 <= i < self.V]
        if bad or not idx:
            raise ValueError(f"view indices must be in [0, {self.V - 1}] and non-empty, got {idx}")
        return replace(self, images=self.images[:, idx], cameras=self.cameras[idx],
                       alpha=None if self.alpha is None else self.alpha[:, idx])

    def select_times(self, idx: Sequence[int]) -> "ViewMatrix":
        idx = list(idx)
        bad = [i for i in idx if not 0 <= i < self.T]
        if bad or not idx:
            raise ValueError(f"time indices must be in [0, {self.T - 1}] and non-empty, got {idx}")
        pick = lambda x: None if x is None else x[idx]  # noqa: E731
        return replace(self, images=self.images[idx], times=self.times[idx], alpha=pick(self.alpha),
                       input_images=pick(self.input_images), input_alpha=pick(self.input_alpha))

    def to(self, device=None, dtype=None) -> "ViewMatrix":
        mv = lambda x: None if x is None else x.to(device=device, dtype=dtype)  # noqa: E731
        return ViewMatrix(mv(self.images), self.cameras.to(device), self.times.to(device), mv(self.alpha),
                          mv(self.input_images), mv(self.input_alpha),
                          None if self.input_camera is None else self.input_camera.to(device))


# -- folder IO ---------------------------------------------------------------------------------
def _read_png(path: Path) -> tuple[np.ndarray, Optional[np.ndarray]]:
    return read_image(path)  # 16-bit PNGs scaled, pixel limit, clear errors for non-images


def _composite_white(rgb: np.ndarray, alpha: Optional[np.ndarray]) -> np.ndarray:
    """Files in the layout store RGB already on white; RGBA written by other tools may not be.

    Where alpha is 0 the colour must be white for the contract; enforce it by compositing straight colour only
    when the file clearly holds non-white colour under zero alpha.
    """
    if alpha is None:
        return rgb
    if np.abs(rgb[alpha == 0] - 1.0).max(initial=0.0) > 1e-3:  # straight (not composited) colour
        return composite_on_white(torch.from_numpy(rgb), torch.from_numpy(alpha)).numpy()
    return rgb


def _frame_files(folder: Path, prefix: str) -> list[Path]:
    pat = re.compile(rf"^{prefix}(\d+)\.png$")
    files = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pat.match(p.name))] if folder.is_dir() else []
    return [p for _, p in sorted(files)]


def load_view_matrix(folder, views: Optional[Sequence[int]] = None, with_input: bool = True) -> ViewMatrix:
    """Read a view matrix folder (layout in the module docstring).

    Args:
        folder: the dataset folder holding ``cameras.json``.
        views: optional subset of view ids to load (e.g. ``range(16)`` for training on the ring).
        with_input: also read the single-view input video when present, picking for each view-matrix time the
            input frame nearest in time.
    """
    folder = Path(folder)
    cam_file = folder / "cameras.json"
    if not cam_file.is_file():
        raise FileNotFoundError(f"no cameras.json in {folder}; a view matrix folder needs cameras.json and views/vVV/tTT.png")
    try:
        meta = json.loads(cam_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cam_file} is not valid JSON: {e}") from e
    check_cameras_json(meta, cam_file)
    W, H = int(meta["width"]), int(meta["height"])
    entries = meta.get("views") or []
    if views is None:
        check_view_folders(folder, len(entries), cam_file)
    if views is not None:
        ids = list(views)
        bad = [i for i in ids if not 0 <= i < len(entries)]
        if bad:
            raise ValueError(f"view ids {bad} out of range: {cam_file} has {len(entries)} views")
        entries = [entries[i] for i in ids]
    for e in entries:
        e.setdefault("fx", meta.get("fx")), e.setdefault("fy", meta.get("fy"))
        e.setdefault("cx", meta.get("cx")), e.setdefault("cy", meta.get("cy"))
    cams = cameras_from_json(entries, W, H)
    view_dirs = [inside_folder(folder, e.get("dir", f"views/v{e.get('id', i):02d}"), f"{cam_file} view 'dir'")
                 for i, e in enumerate(entries)]
    files = [_frame_files(d, "t") for d in view_dirs]
    T = len(files[0])
    if T == 0 or any(len(f) != T for f in files):
        raise ValueError(f"every view folder must hold the same number (>0) of tTT.png files; found "
                         f"{[(str(d.relative_to(folder)), len(f)) for d, f in zip(view_dirs, files)]}")
    check_frames_budget(str(cam_file), T * len(files), H, W, channels=4, fix="load fewer views or smaller images")
    rgb = np.zeros((T, len(files), H, W, 3), np.float32)
    alpha = np.ones((T, len(files), H, W), np.float32)
    any_alpha = False
    for v, fl in enumerate(files):
        for t, p in enumerate(fl):
            c, a = _read_png(p)
            if c.shape[:2] != (H, W):
                raise ValueError(f"{p} is {c.shape[1]}x{c.shape[0]} but cameras.json says {W}x{H}")
            rgb[t, v] = _composite_white(c, a)
            if a is not None:
                alpha[t, v], any_alpha = a, True
    check_views_have_object(rgb, alpha if any_alpha else None, view_dirs)
    anim = meta.get("animation", {})
    times = torch.tensor(meta.get("times") or anim.get("gt_time_norm") or np.linspace(0, 1, T).tolist(), dtype=torch.float32)
    if times.shape != (T,):
        raise ValueError(f"{cam_file} lists {len(times)} times but the views hold {T} frames")
    vm = dict(images=torch.from_numpy(rgb), cameras=cams, times=times,
              alpha=torch.from_numpy(alpha) if any_alpha else None)
    iv = meta.get("input_view")
    if with_input and iv:
        in_files = _frame_files(inside_folder(folder, iv.get("dir", "input"), f"{cam_file} input_view 'dir'"), "f")
        if in_files:
            in_times = anim.get("input_time_norm") or np.linspace(0, 1, len(in_files)).tolist()
            if len(in_times) != len(in_files):
                raise ValueError(f"{cam_file}: {len(in_times)} input times for {len(in_files)} input frames")
            pick = [int(np.argmin(np.abs(np.asarray(in_times) - float(t)))) for t in times]
            frames = [_read_png(in_files[i]) for i in pick]
            for k, (c, _) in enumerate(frames):
                if c.shape[:2] != (H, W):
                    raise ValueError(f"{in_files[pick[k]]} is {c.shape[1]}x{c.shape[0]}, expected {W}x{H}")
            for key in ("fx", "fy", "cx", "cy"):
                iv.setdefault(key, meta.get(key))
            vm["input_images"] = torch.from_numpy(np.stack([_composite_white(c, a) for c, a in frames]))
            if all(a is not None for _, a in frames):
                vm["input_alpha"] = torch.from_numpy(np.stack([a for _, a in frames]))
            vm["input_camera"] = cameras_from_json([iv], W, H)
    return ViewMatrix(**vm)


def _write_png(path: Path, rgb: Tensor, alpha: Optional[Tensor]) -> None:
    from PIL import Image

    arr = rgb.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    if alpha is not None:
        a = alpha.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
        arr = np.concatenate([arr, a[..., None]], -1)
    Image.fromarray(arr).save(path)


def save_view_matrix(vm: ViewMatrix, folder, overwrite: bool = False) -> Path:
    """Write ``vm`` in the folder layout, atomically (a temp folder renamed at the end). Returns the folder."""
    folder = Path(folder)
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        views = cameras_to_json(vm.cameras)
        for v, entry in enumerate(views):
            entry["dir"] = f"views/v{v:02d}"
            d = tmp / entry["dir"]
            d.mkdir(parents=True)
            for t in range(vm.T):
                _write_png(d / f"t{t:02d}.png", vm.images[t, v], None if vm.alpha is None else vm.alpha[t, v])
        K0 = vm.cameras.K[0]
        meta = {"width": vm.W, "height": vm.H, "fx": float(K0[0, 0]), "fy": float(K0[1, 1]),
                "cx": float(K0[0, 2]), "cy": float(K0[1, 2]), "views": views,
                "times": vm.times.tolist(), "animation": {"gt_time_norm": vm.times.tolist()}}
        if vm.has_input:
            iv = cameras_to_json(vm.input_camera)[0]
            iv.update(kind="input", dir="input")
            (tmp / "input").mkdir()
            for t in range(vm.T):
                _write_png(tmp / "input" / f"f{t:02d}.png", vm.input_images[t],
                           None if vm.input_alpha is None else vm.input_alpha[t])
            meta["input_view"] = iv
            meta["animation"]["input_time_norm"] = vm.times.tolist()
        (tmp / "cameras.json").write_text(json.dumps(meta, indent=1))
    return folder
