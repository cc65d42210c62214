"""Writing meshes: one animated glTF binary (morph targets, one per time, and an animation playing them) and
per-time mesh files (GLB / PLY / OBJ) for tools that take sequences. Every file is written atomically.

The animated GLB is built with ``pygltflib`` (the Khronos-schema dataclasses; we only fill them in): one mesh whose
base shape is the reference time, one morph target per time holding that time's position and normal offsets,
``COLOR_0`` vertex colours (converted to glTF's linear space), and an animation sampling the morph weights
``LINEAR``-ly with a one-hot weight vector per time, so players interpolate positions between the times. With a
baked texture (:mod:`e4d.mesh.texture`) the vertices are split on the atlas's seams, ``TEXCOORD_0`` and an embedded
PNG base-colour texture replace ``COLOR_0``. Axes are
converted to glTF's +Y up (``(x, y, z) -> (x, z, -y)``, a rotation: the winding stays counter-clockwise). Per-time
files are written by ``trimesh`` in the same +Y-up axes for GLB, and in our +Z-up world for PLY / OBJ.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from ..atomic import atomic_dir, atomic_path
from .extract import MeshSequence
from .surface import vertex_normals

PathLike = Union[str, os.PathLike]
SEQUENCE_FORMATS = ("glb", "ply", "obj")
FLOAT, UINT8, UINT32 = 5126, 5121, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
LINEAR, LINEAR_MIPMAP_LINEAR, CLAMP = 9729, 9987, 33071


def to_y_up(points: np.ndarray) -> np.ndarray:
    """Our +Z-up world ``[..., 3]`` to glTF's +Y up: ``(x, y, z) -> (x, z, -y)``."""
    return np.stack([points[..., 0], points[..., 2], -points[..., 1]], -1)


def from_y_up(points: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_y_up`."""
    return np.stack([points[..., 0], -points[..., 2], points[..., 1]], -1)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB colour in [0, 1] to linear (glTF vertex colours are linear)."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


class _Blob:
    """The binary chunk being built: aligned buffer views and their accessors."""

    def __init__(self, gltf) -> None:
        self.gltf, self.data = gltf, bytearray()

    def add(self, array: np.ndarray, component: int, kind: str, target: Optional[int] = None,
            normalized: bool = False, bounds: bool = False) -> int:
        import pygltflib as G

        self.data.extend(b"\0" * (-len(self.data) % 4))
        offset = len(self.data)
        raw = np.ascontiguousarray(array).tobytes()
        self.data.extend(raw)
        self.gltf.bufferViews.append(G.BufferView(buffer=0, byteOffset=offset, byteLength=len(raw), target=target))
        flat = array.reshape(array.shape[0], -1)
        acc = G.Accessor(bufferView=len(self.gltf.bufferViews) - 1, componentType=component, count=int(array.shape[0]),
                         type=kind, normalized=normalized or None)
        if bounds:
            acc.min, acc.max = flat.min(0).astype(float).tolist(), flat.max(0).astype(float).tolist()
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1


def _png(image) -> bytes:
    """PNG bytes of an sRGB ``[H, W, 3]`` image in [0, 1]."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(image.numpy() * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_animated_glb(seq: MeshSequence, path: PathLike, fps: float = 8.0, name: str = "efficient4d") -> Path:
    """Write ``seq`` (fixed topology) as one animated GLB at ``path``; returns the path.

    Args:
        seq: a fixed-topology :class:`MeshSequence` (same vertices and faces at every time).
        path: output file (``.glb``); written atomically.
        fps: time steps per second of the animation (the clip lasts ``(T - 1) / fps`` seconds).
        name: mesh and animation name.
    """
    try:
        import pygltflib as G
    except ImportError as e:
        raise ImportError("the animated GLB needs pygltflib: pip install pygltflib") from e
    if not seq.fixed_topology:
        raise ValueError("an animated GLB needs one mesh moved through time; extract with fixed_topology=True (or "
                         "write the independent per-time meshes with write_mesh_sequence)")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    T, ref = len(seq), seq.reference_index
    faces = seq.faces[0]
    pos = np.stack([to_y_up(v.numpy().astype(np.float32)) for v in seq.vertices])  # [T, M, 3]
    nrm = np.stack([to_y_up(vertex_normals(v.double(), faces).float().numpy()) for v in seq.vertices])
    tex = seq.texture
    if tex is not None:  # the atlas splits vertices on seams: every frame is re-indexed the same way
        vm = tex.vmapping.numpy()
        pos, nrm, faces = pos[:, vm], nrm[:, vm], tex.faces

    gltf = G.GLTF2(asset=G.Asset(generator="Efficient4D e4d.mesh", version="2.0"))
    blob = _Blob(gltf)
    attrs = G.Attributes(POSITION=blob.add(pos[ref], FLOAT, "VEC3", ARRAY_BUFFER, bounds=True),
                         NORMAL=blob.add(nrm[ref], FLOAT, "VEC3", ARRAY_BUFFER))
    if tex is None:
        rgb = srgb_to_linear(seq.colors[ref].numpy().astype(np.float64))
        rgba = np.concatenate([np.round(rgb * 255), np.full((rgb.shape[0], 1), 255.0)], 1).astype(np.uint8)
        attrs.COLOR_0 = blob.add(rgba, UINT8, "VEC4", ARRAY_BUFFER, normalized=True)
    else:  # baseColorTexture alone: glTF multiplies it with COLOR_0, so vertex colours would tint it twice
        attrs.TEXCOORD_0 = blob.add(tex.uv.numpy().astype(np.float32), FLOAT, "VEC2", ARRAY_BUFFER)
    prim = G.Primitive(
        attributes=attrs,
        indices=blob.add(faces.numpy().astype(np.uint32).reshape(-1), UINT32, "SCALAR", ELEMENT_ARRAY_BUFFER),
        material=0, mode=4)
    for b in range(T):
        prim.targets.append(G.Attributes(
            POSITION=blob.add((pos[b] - pos[ref]).astype(np.float32), FLOAT, "VEC3", ARRAY_BUFFER, bounds=True),
            NORMAL=blob.add((nrm[b] - nrm[ref]).astype(np.float32), FLOAT, "VEC3", ARRAY_BUFFER)))
    keys = np.arange(T, dtype=np.float32) / np.float32(fps)
    weights = np.eye(T, dtype=np.float32).reshape(-1)  # key k: target k at full weight
    key_acc = blob.add(keys, FLOAT, "SCALAR", bounds=True)
    w_acc = blob.add(weights, FLOAT, "SCALAR")
    pbr = G.PbrMetallicRoughness(baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0, roughnessFactor=1.0)
    if tex is not None:
        png = _png(tex.image)
        blob.data.extend(b"\0" * (-len(blob.data) % 4))
        gltf.bufferViews.append(G.BufferView(buffer=0, byteOffset=len(blob.data), byteLength=len(png)))
        blob.data.extend(png)
        gltf.images.append(G.Image(bufferView=len(gltf.bufferViews) - 1, mimeType="image/png"))
        gltf.samplers.append(G.Sampler(magFilter=LINEAR, minFilter=LINEAR_MIPMAP_LINEAR, wrapS=CLAMP, wrapT=CLAMP))
        gltf.textures.append(G.Texture(sampler=0, source=0))
        pbr.baseColorTexture = G.TextureInfo(index=0)
    gltf.materials.append(G.Material(name=f"{name}_{'texture' if tex is not None else 'vertex_colour'}",
                                     pbrMetallicRoughness=pbr, doubleSided=False))
    target_names = [f"t{b:03d}" for b in range(T)]
    gltf.meshes.append(G.Mesh(name=name, primitives=[prim], weights=[0.0] * T,
                              extras={"targetNames": target_names}))
    gltf.nodes.append(G.Node(name=name, mesh=0))
    gltf.scenes.append(G.Scene(nodes=[0]))
    gltf.scene = 0
    gltf.animations.append(G.Animation(
        name=f"{name}_play", samplers=[G.AnimationSampler(input=key_acc, output=w_acc, interpolation="LINEAR")],
        channels=[G.AnimationChannel(sampler=0, target=G.AnimationChannelTarget(node=0, path="weights"))]))
    gltf.extras = {"times": [float(x) for x in seq.times], "reference_index": int(ref)}
    gltf.buffers.append(G.Buffer(byteLength=len(blob.data)))
    gltf.set_binary_blob(bytes(blob.data))
    path = Path(path)
    with atomic_path(path) as tmp:
        gltf.save_binary(str(tmp))
    return path


@dataclass
class AnimatedMesh:
    """An animated GLB read back: positions per keyframe in our +Z-up world."""

    positions: np.ndarray
    """``[T, M, 3]`` vertex positions at each keyframe (base + target offsets)."""
    faces: np.ndarray
    """``[F, 3]`` triangles."""
    colors: Optional[np.ndarray]
    """``[M, 4]`` COLOR_0 as stored (linear, 0..1); None for a textured mesh."""
    key_times: np.ndarray
    """``[T]`` keyframe times in seconds."""
    uv: Optional[np.ndarray] = None
    """``[M, 2]`` TEXCOORD_0 of a textured mesh (glTF's convention: ``(0, 0)`` = the image's top-left)."""
    texture: Optional[np.ndarray] = None
    """``[H, W, 3]`` uint8 sRGB base-colour texture, decoded from the file's PNG."""


def read_animated_glb(path: PathLike) -> AnimatedMesh:
    """Read a GLB written by :func:`write_animated_glb` (any single-primitive morph-target GLB whose animation
    has one weight key per target) back into arrays, with pygltflib."""
    import pygltflib as G

    gltf = G.GLTF2().load(str(path))
    data = gltf.binary_blob()
    types = {FLOAT: np.float32, UINT8: np.uint8, UINT32: np.uint32}
    widths = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}

    def read(i: int) -> np.ndarray:
        acc = gltf.accessors[i]
        view = gltf.bufferViews[acc.bufferView]
        dt = np.dtype(types[acc.componentType])
        n = acc.count * widths[acc.type]
        arr = np.frombuffer(data, dtype=dt, count=n, offset=(view.byteOffset or 0) + (acc.byteOffset or 0))
        arr = arr.reshape(acc.count, widths[acc.type]) if widths[acc.type] > 1 else arr
        return arr.astype(np.float32) / 255.0 if acc.normalized else arr

    prim = gltf.meshes[0].primitives[0]
    base = read(prim.attributes.POSITION)
    targets = [t if isinstance(t, dict) else t.__dict__ for t in prim.targets]  # pygltflib loads them as dicts
    pos = np.stack([base + read(t["POSITION"]) for t in targets])
    sampler = gltf.animations[0].samplers[0]
    keys = read(sampler.input)
    w = read(sampler.output).reshape(len(keys), len(prim.targets))
    frames = np.einsum("kt,tmc->kmc", w, pos - base[None]) + base[None]
    a = prim.attributes
    colors = read(a.COLOR_0) if a.COLOR_0 is not None else None
    uv = read(a.TEXCOORD_0) if a.TEXCOORD_0 is not None else None
    image = None
    if gltf.images:
        import io

        from PIL import Image

        view = gltf.bufferViews[gltf.images[0].bufferView]
        png = data[view.byteOffset or 0:(view.byteOffset or 0) + view.byteLength]
        image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return AnimatedMesh(from_y_up(frames), read(prim.indices).reshape(-1, 3), colors, keys, uv, image)


def write_mesh_sequence(seq: MeshSequence, folder: PathLike, formats: Sequence[str] = ("glb",),
                        overwrite: bool = False) -> List[Path]:
    """Write one mesh file per time and format into ``folder`` (``mesh_0000.glb`` ...), all or nothing (the folder
    appears complete or not at all). Returns the written paths."""
    try:
        import trimesh
    except ImportError as e:
        raise ImportError("per-time mesh files need trimesh: pip install trimesh") from e
    bad = [f for f in formats if f not in SEQUENCE_FORMATS]
    if bad or not formats:
        raise ValueError(f"mesh sequence formats must be a non-empty subset of {SEQUENCE_FORMATS}, got {list(formats)}")
    folder = Path(folder)
    names: List[str] = []
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        for b in range(len(seq)):
            v = seq.vertices[b].numpy().astype(np.float64)
            col = np.concatenate([np.round(seq.colors[b].numpy() * 255), np.full((v.shape[0], 1), 255)], 1)
            for fmt in formats:
                pts = to_y_up(v) if fmt == "glb" else v
                mesh = trimesh.Trimesh(pts, seq.faces[b].numpy(), vertex_colors=col.astype(np.uint8), process=False)
                name = f"mesh_{b:04d}.{fmt}"
                mesh.export(str(tmp / name), file_type=fmt)  # the folder as a whole is atomic
                names.append(name)
    return [folder / n for n in names]


__all__ = ["write_animated_glb", "read_animated_glb", "AnimatedMesh", "write_mesh_sequence", "to_y_up", "from_y_up",
           "srgb_to_linear", "SEQUENCE_FORMATS"]
