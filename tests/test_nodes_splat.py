"""Core ComfyUI's 3D conventions: the SPLAT node (our 4D Gaussians sliced into core's SPLAT batch) and the Export
node's +Y-up preview PLY for core Preview 3D. The conversion (axes, SH rotation, time parsing) and the preview file
are tested in this process on the default lane; the SPLAT node only exists on a ComfyUI with the core SPLAT type, so
a subprocess on the 0.30 tree checks its output against core's conventions and round-trips it through core
``SplatToFile3D`` (.ply) and ``File3DToSplat``."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from comfy_env import comfy, comfy_dirs, require_comfy  # noqa: F401

require_comfy()

from comfy_api.latest import io  # noqa: E402

from nodes import splat as N  # noqa: E402
from test_nodes_memory import run_on_comfy_030  # noqa: E402


def test_registered_only_with_core_splat_type():
    assert N.NODES == ([N.SliceToSplat] if hasattr(io, "Splat") else [])


def test_times_are_checked():
    assert N.parse_times("0, 0.5;1") == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        N.parse_times("0, 1.5")
    with pytest.raises(ValueError, match="at least one"):
        N.parse_times(" ")


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_sh_rotation_keeps_every_colour(degree):
    from e4d.sh import eval_sh, num_sh_bases, rotate_sh

    gen = torch.Generator().manual_seed(1)
    sh = torch.randn(5, num_sh_bases(degree), 3, generator=gen, dtype=torch.float64)
    dirs = torch.nn.functional.normalize(torch.randn(7, 3, generator=gen, dtype=torch.float64), dim=-1)
    rot = N.T.ZUP_TO_YUP
    new = rotate_sh(sh, degree, rot)
    for i in range(sh.shape[0]):  # the colour seen along d before = along R d after the rotation
        before = eval_sh(degree, sh[i].expand(7, -1, -1), dirs)
        after = eval_sh(degree, new[i].expand(7, -1, -1), dirs @ rot.T)
        torch.testing.assert_close(after, before)
    torch.testing.assert_close(rot @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
                               torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))  # our up becomes ComfyUI's up


def _ply_gaussians(cols: dict, degree: int):
    """Means [N, 3], covariances [N, 3, 3], SH [N, K, 3] and opacity logits [N] from 3DGS PLY columns."""
    from e4d.export.factor3d import quaternion_to_rotation

    t = {k: torch.from_numpy(v).double() for k, v in cols.items()}
    means = torch.stack([t["x"], t["y"], t["z"]], -1)
    rot = quaternion_to_rotation(torch.stack([t[f"rot_{i}"] for i in range(4)], -1))
    var = torch.stack([t[f"scale_{i}"] for i in range(3)], -1).exp() ** 2
    covs = rot @ torch.diag_embed(var) @ rot.transpose(1, 2)
    k = (degree + 1) ** 2
    dc = torch.stack([t[f"f_dc_{c}"] for c in range(3)], -1)[:, None]  # [N, 1, 3]
    rest = torch.stack([t[f"f_rest_{i}"] for i in range(3 * (k - 1))], -1).reshape(-1, 3, k - 1).transpose(1, 2)
    return means, covs, torch.cat([dc, rest], 1), t["opacity"]


def test_export_preview_ply_is_y_up_for_core_preview3d(comfy_dirs):
    """The ply_preview file is the sequence's nearest time step turned into ComfyUI's +Y-up world: our +Z axis
    becomes +Y, shapes turn with it, every colour seen along d is seen along R d, opacities are unchanged; the
    sequence itself keeps our +Z-up axes."""
    from e4d.export.ply import read_ply
    from e4d.gaussians4d import init_random
    from e4d.sh import eval_sh
    from nodes.export import Export4D

    degree = 2
    gen = torch.Generator().manual_seed(5)
    g = init_random(200, sigma_t=0.3, sh_degree=degree, seed=5)
    n = g.num
    g = dataclasses.replace(g, log_scales=g.log_scales + 0.5 * torch.randn(n, 4, generator=gen),
                            rot_l=torch.randn(n, 4, generator=gen), rot_r=torch.randn(n, 4, generator=gen),
                            sh=0.3 * torch.randn(g.sh.shape, generator=gen))  # anisotropic, turned, coloured
    out = Export4D.execute(g, "e4d/up", False, True, 3, False, False, 8.0, preview_time=0.6).result
    ply_dir, preview = out[1], out[5]
    assert preview == "e4d/up_00001_preview.ply"  # next to the sequence, relative to the output folder
    assert sorted(os.listdir(ply_dir)) == ["frame_0000.ply", "frame_0001.ply", "frame_0002.ply"]
    zup = _ply_gaussians(read_ply(os.path.join(ply_dir, "frame_0001.ply")), degree)  # time 0.5, nearest to 0.6
    yup = _ply_gaussians(read_ply(comfy_dirs["output"] / preview), degree)
    rot = N.T.ZUP_TO_YUP
    assert zup[0].shape[0] == yup[0].shape[0] > 10
    # a Gaussian at +Z in our world is at +Y in the preview (x stays, our +Y goes to -Z)
    torch.testing.assert_close(yup[0], torch.stack([zup[0][:, 0], zup[0][:, 2], -zup[0][:, 1]], -1))
    torch.testing.assert_close(yup[1], rot @ zup[1] @ rot.T, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(yup[3], zup[3])
    torch.testing.assert_close(yup[2][:, 0], zup[2][:, 0])  # the constant colour does not depend on the view
    dirs = torch.nn.functional.normalize(torch.randn(9, 3, generator=gen, dtype=torch.float64), dim=-1)
    for i in range(0, zup[0].shape[0], 17):
        before = eval_sh(degree, zup[2][i].expand(9, -1, -1), dirs)
        after = eval_sh(degree, yup[2][i].expand(9, -1, -1), dirs @ rot.T)
        torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(yup[2][:, 1:], zup[2][:, 1:], atol=1e-3)  # the view-dependent bands did turn


SCRIPT = """
    from comfy_api.latest import io, Types
    from comfy_extras.nodes_gaussian_splat import File3DToSplat, SplatToFile3D
    from e4d.export.common import export_slice
    from e4d.gaussians4d import init_random
    from nodes._tensors import ZUP_TO_YUP
    from nodes.splat import NODES, UP_AXES, SliceToSplat

    assert NODES == [SliceToSplat]
    g = init_random(300, sigma_t=0.15, sh_degree=1, seed=3)
    (s,) = SliceToSplat.execute(g, "0, 0.5, 1").result
    assert isinstance(s, Types.SPLAT) and s.positions.shape[0] == 3
    B, N = s.positions.shape[:2]
    K = s.sh.shape[2]
    assert K == 4 and s.scales.shape == (B, N, 3) and s.rotations.shape == (B, N, 4)
    assert s.opacities.shape == (B, N, 1) and s.sh.shape == (B, N, 4, 3)
    counts = s.counts if s.counts is not None else torch.full((B,), N)
    for i, t in enumerate((0.0, 0.5, 1.0)):
        n = int(counts[i])
        ref = export_slice(g, t)
        assert n == ref.means.shape[1] < 300  # culled Gaussians dropped, different count per time
        want = (ref.means[0] @ ZUP_TO_YUP.T).float()
        torch.testing.assert_close(s.positions[i, :n], want, atol=1e-5, rtol=1e-5)
        assert (s.scales[i, :n] > 0).all() and (s.opacities[i, :n] >= 0).all() and (s.opacities[i, :n] <= 1).all()
        torch.testing.assert_close(s.rotations[i, :n].norm(dim=-1), torch.ones(n), atol=1e-5, rtol=1e-5)
        assert not s.positions[i, n:].any()  # zero padding
        one = Types.SPLAT(s.positions[i:i + 1, :n], s.scales[i:i + 1, :n], s.rotations[i:i + 1, :n],
                          s.opacities[i:i + 1, :n], s.sh[i:i + 1, :n])
        (f3d,) = SplatToFile3D.execute(one, "ply").result
        (back,) = File3DToSplat.execute(f3d).result
        for name in ("positions", "scales", "sh"):
            torch.testing.assert_close(getattr(back, name), getattr(one, name), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(back.opacities, one.opacities, atol=1e-5, rtol=1e-3)
        dots = (back.rotations * one.rotations).sum(-1).abs()  # q and -q are one rotation
        torch.testing.assert_close(dots, torch.ones_like(dots), atol=1e-4, rtol=1e-4)
    (z,) = SliceToSplat.execute(g, "0.5", UP_AXES[1]).result
    torch.testing.assert_close(z.positions[0, :int(counts[1])], export_slice(g, 0.5).means[0].float())
    print("SPLAT OK", B, [int(c) for c in counts])
"""


def test_splat_output_round_trips_through_core_splat_nodes(tmp_path):
    """On ComfyUI 0.30 (its own interpreter: one ComfyUI per process)."""
    run_on_comfy_030(SCRIPT, tmp_path, "SPLAT OK")
