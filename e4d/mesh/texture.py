"""A baked UV colour texture for the fixed-topology mesh (optional; needs ``xatlas``: ``pip install xatlas``).

xatlas (the Python bindings of jpcy/xatlas, MIT) cuts the mesh into charts and packs them into one atlas; vertices on
a seam are split (``vmapping`` says which mesh vertex each atlas vertex is). Every texel inside a chart is then
mapped back to its point on the surface (barycentric coordinates of the triangle covering the texel centre) and
coloured from the reference time's colour renders the same way vertex colours are (:func:`surface_colors`: the
cameras that see the point, weighted by how squarely). The texture holds the renders' detail between vertices,
where vertex colours only interpolate. Texels no camera sees take the interpolated vertex colour; texels outside
every chart are filled from their neighbours (so bilinear filtering and mipmaps do not bleed background in).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .surface import vertex_normals

PointColours = Callable[[Tensor, Tensor], Tuple[Tensor, Tensor]]
"""``(points [P, 3], normals [P, 3]) -> (colours [P, 3], seen [P] bool)``."""


@dataclass
class UVTexture:
    """A mesh's UV atlas and its baked colour texture."""

    vmapping: Tensor
    """``[M2]`` long: the mesh vertex each atlas vertex copies (seams split vertices, so ``M2 >= M``)."""
    faces: Tensor
    """``[F, 3]`` long: the mesh's triangles over the atlas vertices (same order as the mesh's faces)."""
    uv: Tensor
    """``[M2, 2]`` float32 texture coordinates in [0, 1], glTF's convention (``(0, 0)`` = the image's top-left)."""
    image: Tensor
    """``[H, W, 3]`` float32 sRGB colours in [0, 1] (row 0 = top)."""


def uv_atlas(verts: Tensor, faces: Tensor, size: int, padding: int = 2) -> Tuple[Tensor, Tensor, Tensor, int, int]:
    """xatlas's charts of ``verts [M, 3]`` / ``faces [F, 3]`` packed for about ``size`` texels a side.

    Returns ``(vmapping [M2], faces [F, 3], uv [M2, 2], height, width)`` (the atlas may come out a little larger
    or smaller than ``size``)."""
    try:
        import xatlas
    except ImportError as e:
        raise ImportError("a baked UV texture needs xatlas: pip install xatlas (or set texture_size to 0 for "
                          "vertex colours only)") from e
    if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"uv_atlas needs verts [M, 3] and faces [F, 3], got {tuple(verts.shape)}, "
                         f"{tuple(faces.shape)}")
    atlas = xatlas.Atlas()
    atlas.add_mesh(verts.detach().cpu().float().numpy(), faces.cpu().numpy().astype("uint32"))
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding, pack.bilinear = int(size), int(padding), True
    atlas.generate(pack_options=pack)
    vmapping, idx, uv = atlas[0]
    dev = verts.device
    return (torch.from_numpy(vmapping.astype("int64")).to(dev), torch.from_numpy(idx.astype("int64")).to(dev),
            torch.from_numpy(uv).float().to(dev), int(atlas.height), int(atlas.width))


def rasterize_uv(uv: Tensor, faces: Tensor, height: int, width: int) -> Tuple[Tensor, Tensor]:
    """Which triangle covers each texel centre of an ``height x width`` image, and where.

    Args:
        uv: ``[M2, 2]`` texture coordinates in [0, 1].
        faces: ``[F, 3]`` triangles over them.
    Returns:
        ``face [H*W]`` long (-1: no triangle) and ``bary [H*W, 3]`` barycentric coordinates (zeros where none).
    """
    dev = uv.device
    px = uv.double() * torch.tensor([width, height], dtype=torch.float64, device=dev)  # texel units
    tri = px[faces]  # [F, 3, 2]
    lo = (tri.amin(1) - 0.5).ceil().long().clamp_min(0)  # texel centres x + 0.5 inside the box
    hi = (tri.amax(1) - 0.5).floor().long()
    hi = torch.minimum(hi, torch.tensor([width - 1, height - 1], device=dev))
    span = (hi - lo + 1).clamp_min(0)
    counts = span[:, 0] * span[:, 1]
    fid = torch.repeat_interleave(torch.arange(faces.shape[0], device=dev), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(int(counts.sum()), device=dev) - start[fid]
    x = lo[fid, 0] + local % span[fid, 0]
    y = lo[fid, 1] + local // span[fid, 0]
    p = torch.stack([x, y], -1).double() + 0.5
    a, b, c = tri[fid, 0], tri[fid, 1], tri[fid, 2]
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    ok = den.abs() > 1e-12
    den = torch.where(ok, den, torch.ones_like(den))
    w1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    w2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    bary = torch.stack([1 - w1 - w2, w1, w2], -1)
    inside = ok & (bary >= -1e-9).all(-1)
    texel = (y * width + x)[inside]
    face = torch.full((height * width,), -1, dtype=torch.long, device=dev)
    out = torch.zeros(height * width, 3, dtype=torch.float64, device=dev)
    face[texel] = fid[inside]  # a texel centre on a shared edge keeps one of its triangles: either is right
    out[texel] = bary[inside]
    return face, out.float()


def _fill_empty(image: Tensor, covered: Tensor, rounds: int = 8) -> Tensor:
    """Grow ``image [H, W, 3]`` from ``covered [H, W]`` texels into the rest (mean of covered 3x3 neighbours,
    ``rounds`` times); what is still empty takes the mean colour."""
    img = image.permute(2, 0, 1)[None] * covered[None, None]
    m = covered[None, None].to(image.dtype)
    k = torch.ones(1, 1, 3, 3, dtype=image.dtype, device=image.device)
    for _ in range(rounds):
        s = F.conv2d(img, k.expand(3, 1, 3, 3), padding=1, groups=3)
        n = F.conv2d(m, k, padding=1)
        grow = (m == 0) & (n > 0)
        img = torch.where(grow, s / n.clamp_min(1), img)
        m = torch.where(grow, torch.ones_like(m), m)
    mean = (image * covered[..., None]).sum((0, 1)) / covered.sum().clamp_min(1)
    out = torch.where(m[0, 0, ..., None] > 0, img[0].permute(1, 2, 0), mean)
    return out


def bake_texture(verts: Tensor, faces: Tensor, vertex_colours: Tensor, colour_at: PointColours, size: int,
                 chunk: int = 65536) -> UVTexture:
    """Bake the colour of the surface ``verts [M, 3]`` / ``faces [F, 3]`` into a UV texture of about ``size``
    texels a side.

    Args:
        vertex_colours: ``[M, 3]`` colours used where no camera sees a texel's point.
        colour_at: colours of surface points from the renders (:func:`e4d.mesh.extract.surface_colors` bound to
            the reference time's renders).
        chunk: points coloured per call (bounds the memory of sampling every view at once).
    """
    if vertex_colours.shape != verts.shape:
        raise ValueError(f"vertex_colours must be [M, 3] like verts {tuple(verts.shape)}, got "
                         f"{tuple(vertex_colours.shape)}")
    if not size >= 16:
        raise ValueError(f"texture size must be >= 16 texels, got {size}")
    vmapping, tfaces, uv, h, w = uv_atlas(verts, faces, size)
    face, bary = rasterize_uv(uv, tfaces, h, w)
    hit = face >= 0
    corners = vmapping[tfaces[face[hit]]]  # [P, 3] mesh vertices of each covered texel's triangle
    b = bary[hit].to(verts.dtype)[..., None]
    points = (verts[corners] * b).sum(1)
    normals = F.normalize((vertex_normals(verts, faces)[corners] * b).sum(1), dim=-1)
    fallback = (vertex_colours.to(verts.dtype)[corners] * b).sum(1)
    cols = []
    for s in range(0, points.shape[0], chunk):
        c, seen = colour_at(points[s:s + chunk], normals[s:s + chunk])
        cols.append(torch.where(seen[:, None], c.to(verts.dtype), fallback[s:s + chunk]))
    image = torch.zeros(h * w, 3, dtype=verts.dtype, device=verts.device)
    if cols:
        image[hit] = torch.cat(cols)
    image = _fill_empty(image.view(h, w, 3), hit.view(h, w))
    return UVTexture(vmapping.cpu(), tfaces.cpu(), uv.cpu(), image.clamp(0, 1).float().cpu())


__all__ = ["UVTexture", "uv_atlas", "rasterize_uv", "bake_texture"]
