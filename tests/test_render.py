"""Pure-torch reference rasterizer sanity (CPU) and the render API's checks."""
import math

import pytest
import torch

from e4d.cameras import Cameras, intrinsics, look_at, orbit_cameras, project, syncdreamer16
from e4d.gaussians4d import Gaussians4D, init_random
from e4d.render import make_backgrounds, render, render_cameras, render_pairs, render_sliced, resolve_backend
from e4d.render.reference import composite
from e4d.sh import SH_C0, eval_sh, rgb_to_sh0
from e4d.slicing import Gaussians3D

F64 = torch.float64


def one_gaussian(xyz, sigma=0.01, opacity=0.8, rgb=(1.0, 0.0, 0.0), sh_degree=0, dtype=F64):
    """A single static, isotropic 4D Gaussian (huge time scale, so it is visible at every time)."""
    means = torch.tensor([[*xyz, 0.5]], dtype=dtype)
    log_scales = torch.tensor([[math.log(sigma)] * 3 + [math.log(100.0)]], dtype=dtype)
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype)
    sh = torch.zeros(1, 1, (sh_degree + 1) ** 2, 3, dtype=dtype)
    sh[0, 0, 0] = rgb_to_sh0(torch.tensor(rgb, dtype=dtype))
    logit = torch.tensor([math.log(opacity / (1 - opacity))], dtype=dtype)
    return Gaussians4D(means, log_scales, q.clone(), q.clone(), logit, sh, sh_degree)


def unproject(cam: Cameras, u: float, v: float, depth: float):
    K, w2c = cam.K[0].double(), cam.w2c[0].double()
    x_c = torch.tensor([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], dtype=F64)
    R, t = w2c[:3, :3], w2c[:3, 3]
    return (R.T @ (x_c - t)).tolist()


def test_single_gaussian_lands_where_project_says():
    cam = orbit_cameras([40.0], 20.0, 1.5, size=32).to(dtype=F64)
    xyz = unproject(cam, 20.5, 11.5, depth=1.4)  # exactly on the centre of pixel (20, 11)
    uv, _ = project(torch.tensor([xyz], dtype=F64), cam)
    torch.testing.assert_close(uv[0, 0], torch.tensor([20.5, 11.5], dtype=F64))
    g = one_gaussian(xyz, sigma=0.004, opacity=0.8)
    out = render_cameras(g, 0.5, cam, backend="reference")
    alpha = out.alpha[0, 0, ..., 0]
    assert divmod(int(alpha.argmax()), 32) == (11, 20)
    # the pixel centre coincides with the mean: alpha = opacity exactly; red over white there
    assert abs(alpha[11, 20].item() - 0.8) < 1e-9
    torch.testing.assert_close(out.rgb[0, 0, 11, 20], torch.tensor([1.0, 0.2, 0.2], dtype=F64))
    # empty corners are pure background
    assert alpha[0, 0] == 0 and alpha[31, 0] == 0
    torch.testing.assert_close(out.rgb[0, 0, 0, 0], torch.ones(3, dtype=F64))
    # EWA footprint: isotropic sigma at depth z on the optical axis -> var2d = (f sigma / z)^2 + 0.3 px^2
    f = cam.K[0, 0, 0].item()
    var2d = (f * 0.004 / 1.4) ** 2 + 0.3
    expect = 0.8 * math.exp(-0.5 * 1.0 / var2d)
    assert abs(alpha[11, 21].item() - expect) < 0.02 * expect  # off-axis Jacobian makes it only approximate


def test_background_and_depth_order():
    cam = orbit_cameras([0.0], 0.0, 1.5, size=24).to(dtype=F64)
    g_far = one_gaussian([-0.2, 0.0, 0.0], sigma=0.05, opacity=0.9, rgb=(0.0, 0.0, 1.0))
    g_near = one_gaussian([0.3, 0.0, 0.0], sigma=0.05, opacity=0.9, rgb=(1.0, 0.0, 0.0))
    for order in ([g_far, g_near], [g_near, g_far]):
        out = render_cameras(Gaussians4D.cat(order), 0.5, cam, background=(0.0, 1.0, 0.0), backend="reference")
        c = out.rgb[0, 0, 12, 12]
        # both means sit on the optical axis, so the EWA footprint is exact: var = (f sigma / z)^2 + 0.3 and the
        # pixel centre (12.5, 12.5) is 0.5 px off in x and y. The near red one (camera on +X) is in front.
        f = cam.K[0, 0, 0].item()
        a_near, a_far = (0.9 * math.exp(-0.25 / ((f * 0.05 / z) ** 2 + 0.3)) for z in (1.2, 1.7))
        expect = [a_near, (1 - a_near) * (1 - a_far), (1 - a_near) * a_far]
        torch.testing.assert_close(c, torch.tensor(expect, dtype=F64), atol=1e-9, rtol=0)
        torch.testing.assert_close(out.rgb[0, 0, 0, 0], torch.tensor([0.0, 1.0, 0.0], dtype=F64))


def test_composite_stops_like_gsplat():
    # gsplat stops *before* the Gaussian that would bring transmittance to <= 1e-4
    alpha = torch.tensor([[0.99, 0.99, 0.99, 0.5]], dtype=F64)
    colors = torch.eye(4, 3, dtype=F64)
    rgb, acc = composite(alpha, colors, torch.zeros(3, dtype=F64))
    torch.testing.assert_close(acc, torch.tensor([[1 - 0.01 ** 2]], dtype=F64))
    torch.testing.assert_close(rgb, torch.tensor([[0.99, 0.0099, 0.0]], dtype=F64))


def test_view_dependent_colour_follows_sh():
    cams = orbit_cameras([0.0, 90.0, 200.0], [10.0, 30.0, -20.0], 1.5, size=16).to(dtype=F64)
    g = one_gaussian([0.0, 0.0, 0.0], sigma=0.002, opacity=0.99, sh_degree=2)
    g.sh[0, 0, 1:] = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=F64) * 0.2
    out = render_cameras(g, 0.5, cams, background=0.0, backend="reference")
    centres = cams.centers().double()
    for v in range(3):
        expect = torch.clamp_min(eval_sh(2, g.sh[0, 0], -centres[v]) + 0.5, 0)
        a = out.alpha[0, v, 8, 8]
        assert a > 0.1
        torch.testing.assert_close(out.rgb[0, v, 8, 8] / a, expect)  # background 0: rgb = colour * alpha
    assert (out.rgb[0, 0, 8, 8] - out.rgb[0, 1, 8, 8]).abs().max() > 1e-2


def test_gradients_reach_all_4d_parameters_through_the_reference():
    g = init_random(60, radius=0.3, seed=0, sigma_t=0.5, time_degree=1, sh_degree=1, opacity=0.5,
                    scale=0.05, dtype=F64)
    gen = torch.Generator().manual_seed(1)
    g.rot_l = g.rot_l + 0.1 * torch.randn(60, 4, generator=gen, dtype=F64)
    g.rot_r = g.rot_r + 0.1 * torch.randn(60, 4, generator=gen, dtype=F64)
    g.sh = g.sh + 0.1 * torch.randn(g.sh.shape, generator=gen, dtype=F64)
    g.requires_grad_()
    cams = syncdreamer16(24).to(dtype=F64)[[0, 5]]
    w2c = cams.w2c[None].expand(2, 2, 4, 4)
    K = cams.K[None].expand(2, 2, 3, 3)
    out = render(g, [0.3, 0.7], w2c, K, 24, 24, backend="reference")
    assert out.rgb.shape == (2, 2, 24, 24, 3) and out.alpha.shape == (2, 2, 24, 24, 1)
    (out.rgb.square().mean() + out.alpha.mean()).backward()
    for name, p in g.parameters_dict().items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_reference_matches_finite_differences():
    g = init_random(6, radius=0.2, seed=3, sigma_t=0.5, opacity=0.6, scale=0.08, dtype=F64)
    g.rot_l = g.rot_l + 0.2 * torch.randn(6, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    cam = orbit_cameras([30.0], 10.0, 1.5, size=12).to(dtype=F64)

    def f(means, log_scales, rot_l, opacity_logit):
        gg = Gaussians4D(means, log_scales, rot_l, g.rot_r, opacity_logit, g.sh)
        return render_cameras(gg, 0.45, cam, backend="reference").rgb.sum()

    args = tuple(x.clone().requires_grad_() for x in (g.means, g.log_scales, g.rot_l, g.opacity_logit))
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-4)


def test_near_plane_and_offscreen_culling():
    cam = orbit_cameras([0.0], 0.0, 1.5, size=16).to(dtype=F64)
    behind = one_gaussian([2.0, 0.0, 0.0], sigma=0.3, opacity=0.9)  # behind the camera at x = 1.5
    out = render_cameras(behind, 0.5, cam, backend="reference")
    assert out.alpha.max() == 0
    faint = one_gaussian([0.0, 0.0, 0.0], sigma=0.3, opacity=0.003)  # below 1/255: dropped like gsplat
    assert render_cameras(faint, 0.5, cam, backend="reference").alpha.max() == 0


def test_render_pairs_and_batched_shapes_agree():
    g = init_random(80, seed=4, opacity=0.5, scale=0.04)
    cams = syncdreamer16(16)
    times = torch.tensor([0.2, 0.6, 0.9])
    pairs = render_pairs(g, times, cams.w2c[[0, 3, 7]], cams.K[[0, 3, 7]], 16, 16, backend="reference")
    assert pairs.rgb.shape == (3, 16, 16, 3)
    for i, v in enumerate([0, 3, 7]):
        single = render_cameras(g, float(times[i]), cams[v], backend="reference")
        torch.testing.assert_close(pairs.rgb[i], single.rgb[0, 0])


def test_api_errors_and_backend_choice():
    g = init_random(10, seed=0)
    cams = syncdreamer16(8)
    assert resolve_backend("auto", torch.device("cpu")) == "reference"
    with pytest.raises(ValueError, match="unknown render backend"):
        resolve_backend("vulkan", torch.device("cpu"))
    with pytest.raises(ValueError, match=r"w2c must be \[B, C, 4, 4\]"):
        render(g, [0.5], cams.w2c, cams.K, 8, 8)
    with pytest.raises(ValueError, match=r"K must be \[B, C, 3, 3\]"):
        render(g, [0.5, 0.6], cams.w2c[None].expand(2, 16, 4, 4), cams.K[None], 8, 8)
    with pytest.raises(ValueError, match="needs CUDA tensors"):  # never reaches gsplat on CPU
        render(g, [0.5], cams.w2c[None, :1], cams.K[None, :1], 8, 8, backend="gsplat")
    with pytest.raises(ValueError, match="background must be"):
        make_backgrounds(torch.ones(5), 1, 2, g.means)
    with pytest.raises(TypeError, match="Gaussians4D"):
        render(None, [0.5], cams.w2c[None, :1], cams.K[None, :1], 8, 8)
    with pytest.raises(ValueError, match=r"covs must be"):
        Gaussians3D(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2), torch.zeros(1, 2, 1, 3))


def test_render_sliced_with_precomputed_slice():
    g = init_random(30, seed=1, opacity=0.5, scale=0.05)
    cams = syncdreamer16(12)[[1, 2]]
    from e4d.slicing import slice_at
    a = render_sliced(slice_at(g, [0.4]), cams.w2c[None], cams.K[None], 12, 12, backend="reference")
    b = render_cameras(g, 0.4, cams, backend="reference")
    torch.testing.assert_close(a.rgb, b.rgb)
    assert SH_C0 > 0 and intrinsics(8, 8, 10.0).shape == (1, 3, 3) and look_at(0.0, 0.0).shape == (1, 4, 4)
