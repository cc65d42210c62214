"""Triton backend against the reference renderer: images and gradients on small scenes.

On a CPU machine the kernels run in Triton's interpreter: ``TRITON_INTERPRET=1`` is set here, at collection,
before the kernels module is first imported (the backend imports it lazily on the first render, and Triton reads
the variable when it decorates the kernels). On a CUDA machine the same tests run the compiled kernels.
"""
import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

from e4d.cameras import orbit_cameras  # noqa: E402
from e4d.gaussians4d import Gaussians4D, init_random  # noqa: E402
from e4d.render import render  # noqa: E402
from e4d.render import triton_backend  # noqa: E402
from e4d.render.triton_backend import bin_tiles  # noqa: E402

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
W, H = 40, 24  # non-square, not a multiple of the 16 px tile


def psnr(a, b):
    return float(10 * torch.log10(1.0 / (a.detach().double() - b.detach().double()).square().mean().clamp_min(1e-30)))


def rig(times=2):
    """Two cameras per time, principal point in the image centre of a 40 x 24 image."""
    cams = orbit_cameras([20.0, 130.0], [25.0, -10.0], 1.5, size=32)
    K = cams.K.clone()
    K[:, 0, 2], K[:, 1, 2] = W / 2, H / 2
    return cams.w2c[None].expand(times, -1, -1, -1).to(DEV), K[None].expand(times, -1, -1, -1).to(DEV)


def scene(seed=0):
    """Random anisotropic Gaussians, plus an opaque stack on a tile corner (early stop), one far off-screen
    and one behind the first camera."""
    gen = torch.Generator().manual_seed(seed)
    g = init_random(48, radius=0.35, seed=seed, sigma_t=0.4, scale=0.05, opacity=0.5, sh_degree=1, time_degree=1)
    g.rot_l = g.rot_l + 0.5 * torch.randn(48, 4, generator=gen)
    g.rot_r = g.rot_r + 0.5 * torch.randn(48, 4, generator=gen)
    g.log_scales = g.log_scales + 0.4 * torch.randn(48, 4, generator=gen)
    g.opacity_logit = 1.5 * torch.randn(48, generator=gen)
    g.sh = g.sh + 0.3 * torch.randn(g.sh.shape, generator=gen)
    extra = init_random(8, radius=0.05, seed=seed + 1, sigma_t=5.0, scale=0.08, opacity=0.99, sh_degree=1,
                        time_degree=1)
    w2c, K = rig()
    # the stack sits on the world point seen at the (16, 16) tile corner by camera 0
    x_c = torch.tensor([(16 - W / 2) / K[0, 0, 0, 0].item() * 1.4, (16 - H / 2) / K[0, 0, 1, 1].item() * 1.4, 1.4])
    R, t = w2c[0, 0, :3, :3].cpu(), w2c[0, 0, :3, 3].cpu()
    corner = R.T @ (x_c - t)
    extra.means = extra.means.clone()
    extra.means[:, :3] = corner + 0.02 * torch.randn(8, 3, generator=gen)
    extra.means[0, :3] = torch.tensor([3.0, 0.0, 0.0])  # far off to the side of both views
    cam_pos = -R.T @ t
    extra.means[1, :3] = cam_pos + 0.3 * cam_pos / cam_pos.norm()  # behind camera 0
    return Gaussians4D.cat([g, extra])


def run(g, backend, dtype, weight, times, background):
    w2c, K = rig(len(times))
    gg = g.to(device=DEV, dtype=dtype).requires_grad_()
    out = render(gg, torch.tensor(times, device=DEV, dtype=dtype), w2c.to(dtype), K.to(dtype), W, H,
                 background=background, backend=backend)
    ((out.rgb * weight.to(dtype)).sum() + 0.5 * out.alpha.sum()).backward()
    return out, {k: p.grad.double() for k, p in gg.parameters_dict().items()}


@pytest.mark.parametrize("seed,warps,chunk", [(0, 4, 2), (1, 1, 3)])
def test_triton_matches_reference_images_and_gradients(seed, warps, chunk, monkeypatch):
    """Two pixel layouts of the forward (4 warps, 2 pixels per thread; 1 warp, 8) and two unroll depths, one not
    dividing the tile lists, against the reference."""
    if not torch.cuda.is_available():  # in the interpreter a fixed launch shape is used: pick each variant
        monkeypatch.setattr(triton_backend, "DEFAULT_LAUNCH", triton_backend.TritonLaunch(chunk, warps, chunk))
    g = scene(seed)
    times = [0.3, 0.7]
    weight = torch.rand(2, 2, H, W, 3, generator=torch.Generator().manual_seed(seed)).to(DEV)
    bg = torch.tensor([0.2, 0.5, 0.9], device=DEV)
    ref, g_ref = run(g, "reference", torch.float64, weight, times, bg)
    tri, g_tri = run(g, "triton", torch.float32, weight, times, bg)
    assert tri.rgb.shape == ref.rgb.shape == (2, 2, H, W, 3) and tri.alpha.shape == (2, 2, H, W, 1)
    assert tri.rgb.dtype == torch.float32
    assert ref.alpha.mean() > 0.05 and ref.alpha.max() > 0.99  # the scene covers the images, the stack is opaque
    assert psnr(tri.rgb, ref.rgb) > 40 and psnr(tri.alpha, ref.alpha) > 40
    for name, a in g_ref.items():
        b = g_tri[name]
        assert torch.isfinite(b).all() and b.abs().sum() > 0, name
        cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
        assert cos > 0.99, f"{name}: gradient cosine {cos:.4f}"


def test_triton_empty_and_culled_scene_is_background():
    g = scene(0)
    g.opacity_logit = torch.full_like(g.opacity_logit, -20.0)  # every opacity below 1/255: nothing drawn
    out = render(g.to(DEV), [0.5], *rig(1), W, H, background=0.25, backend="triton")
    torch.testing.assert_close(out.rgb, torch.full_like(out.rgb, 0.25))
    assert out.alpha.abs().max() == 0


def test_bin_tiles_lists_every_overlapping_tile_in_depth_order():
    # 2 images x 3 Gaussians = 6 pairs on a 3 x 2 tile grid; boxes are tile ranges [x0, x1) x [y0, y1)
    box = torch.tensor([[0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 0, 0], [0, 1, 3, 2], [1, 0, 2, 1], [1, 0, 2, 2]],
                       dtype=torch.int32, device=DEV)
    hits = torch.tensor([0b1111, 1, 0, 0b111, 1, 0b11], dtype=torch.int32, device=DEV)
    hits[0] = 0b1101  # pair 0 does not reach the second tile of its box, (1, 0)
    count = torch.tensor([3, 1, 0, 3, 1, 2], dtype=torch.int32, device=DEV)
    depth = torch.tensor([2.0, 1.0, 1.0, 0.5, 3.0, 1.0], device=DEV)
    ids, offsets = bin_tiles(box, count, hits, depth, 3, 6, 3)
    tiles = [ids[offsets[t]:offsets[t + 1]].tolist() for t in range(offsets.numel() - 1)]
    assert tiles[:6] == [[1, 0], [], [], [0], [0], []]  # image 0: pair 0 covers 3 tiles of its box, behind pair 1
    assert tiles[6:] == [[], [5, 4], [], [3], [3, 5], [3]]  # image 1: depth order inside each tile
    assert int(offsets[-1]) == ids.numel() == 10


def test_thin_tilted_gaussian_reaches_only_the_diagonal_tiles():
    """A needle along the image diagonal: its axis-aligned box holds 4 x 4 tiles, the ellipse reaches the 4 on the
    diagonal and the 6 beside them it grazes (pixel centres within its extent), not the far corners."""
    from e4d.render import triton_projection as pk

    S, f = 64, 64.0
    R = torch.tensor([[1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 2 ** 0.5]]) / 2 ** 0.5
    cov = R @ torch.diag(torch.tensor([0.2, 1e-4, 1e-4])) @ R.T  # long along x = y in the camera plane
    means = torch.tensor([[[0.0, 0.0, 2.0]]], device=DEV)
    w2c = torch.eye(4, device=DEV)[None]
    K = torch.tensor([[[f, 0.0, S / 2], [0.0, f, S / 2], [0.0, 0.0, 1.0]]], device=DEV)
    out = {name: torch.empty(shape, dtype=dt, device=DEV) for name, shape, dt in (
        ("feat", (1, 9), torch.float32), ("depth", (1,), torch.float32), ("box", (1, 4), torch.int32),
        ("count", (1,), torch.int32), ("hits", (1,), torch.int32))}
    pk.project_forward[(1,)](means, cov[None, None].to(DEV).contiguous(), torch.ones(1, 1, device=DEV),
                             torch.ones(1, 1, 3, device=DEV), w2c, K, out["feat"], out["depth"], out["box"],
                             out["count"], out["hits"], 1, 1, 1, 1, S, S, 4, 4, 0.01, 100.0, 0.3, BLOCK=32, TS=16)
    assert out["box"][0].tolist() == [0, 0, 4, 4]
    reached = [i for i in range(16) if (int(out["hits"][0]) >> i) & 1]
    assert reached == [0, 1, 4, 5, 6, 9, 10, 11, 14, 15] and int(out["count"][0]) == 10


def test_triton_batched_equals_single_calls():
    g = scene(2).to(DEV)
    w2c, K = rig(2)
    batched = render(g, [0.2, 0.8], w2c, K, W, H, backend="triton")
    for b in range(2):
        for c in range(2):
            single = render(g, [[0.2, 0.8][b]], w2c[b:b + 1, c:c + 1], K[b:b + 1, c:c + 1], W, H, backend="triton")
            torch.testing.assert_close(batched.rgb[b, c], single.rgb[0, 0])
    assert math.isfinite(float(batched.rgb.sum()))
