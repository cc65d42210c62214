"""Checkpoint formats, version detection from the state dict, and clear errors."""
from __future__ import annotations

import pytest
import torch

from e4d.interp import RifeInterpolator, RifeConfig, load_interpolator
from e4d.checkpoints import read_checkpoint
from e4d.rife.loader import build_model, detect_version
from tiny_rife import tiny_rife_state_dict, write_tiny_rife

MANIFESTS = {"3.6hd": "3.6", "4.6": "4.6", "4.7": "4.7", "4.9": "4.7", "4.17": "4.17", "4.22": "4.22",
             "4.22.lite": "4.22.lite", "4.25": "4.25", "4.26": "4.25"}


class _NotATensor:
    """A pickled custom class: loading it would run code, so weights_only=True must refuse the file."""


def _manifest(shared_dir, name):
    rows = (shared_dir / "reference" / "rife" / "keys" / f"keys_rife{name}.tsv").read_text().splitlines()[1:]
    return {k: tuple(int(x) for x in s.split(",")) for k, s, _ in (r.split("\t") for r in rows)}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_detect_every_manifest_and_our_layout_matches_it(shared_dir, name):
    man = _manifest(shared_dir, name)
    ver = detect_version({k: torch.empty(s) for k, s in man.items()})
    assert (ver if isinstance(ver, str) else ver.version) == MANIFESTS[name]
    ours = {k: tuple(v.shape) for k, v in tiny_rife_state_dict(name.replace("hd", "")).items()}
    assert ours == man  # same keys, same shapes, incl. v3.6's unused block_tea


def test_detection_ignores_file_names(tmp_path):
    p = write_tiny_rife(tmp_path, "3.6", fmt="comfy")  # a v3.6 net saved under a 4.x-looking name
    assert p.name == "rife36.pth"
    (tmp_path / "rife49.pth").write_bytes(p.read_bytes())
    it = load_interpolator(tmp_path / "rife49.pth")
    assert it.version == "3.6" and it.midpoint_only and it.name == "rife 3.6 (rife49.pth)"


@pytest.mark.parametrize("version,fmt", [("4.7", "comfy"), ("4.7", "official"), ("3.6", "official"),
                                         ("4.7", "safetensors")])
def test_tiny_checkpoints_load_through_real_loader(tmp_path, version, fmt):
    path = write_tiny_rife(tmp_path, version, fmt=fmt)
    raw = torch.load(path, weights_only=True) if path.suffix != ".safetensors" else None
    if fmt == "official":
        assert raw and all(k.startswith("module.") for k in raw)
    if fmt == "comfy":
        assert raw and not any(k.startswith("module.") for k in raw) and len(raw) == 124
    it = load_interpolator(path)
    assert it.version == version
    x0, x1 = torch.rand(1, 3, 24, 40), torch.rand(1, 3, 24, 40)
    out = it.interpolate(x0, x1, 0.5)
    assert out.shape == x0.shape and out.min() >= 0 and out.max() <= 1
    # the network really ran: the result is not one of the inputs nor their average
    assert (out - x0).abs().max() > 1e-3 and (out - (x0 + x1) / 2).abs().max() > 1e-3


def test_flownet_prefix_and_teacher_keys_are_tolerated():
    sd = tiny_rife_state_dict("4.7")
    wrapped = {f"flownet.{k}": v for k, v in sd.items()}
    wrapped.update({"flownet.teacher.x": torch.zeros(1), "caltime.y": torch.ones(1)})
    net = build_model(wrapped)
    assert all(torch.equal(v, sd[k]) for k, v in net.state_dict().items())


def test_other_versions_run_with_arbitrary_t():
    for version in ("4.6", "4.17", "4.22", "4.22.lite", "4.25"):
        it = RifeInterpolator(build_model(tiny_rife_state_dict(version)), config=RifeConfig(scale=1.0))
        out = it.interpolate(torch.rand(2, 3, 20, 30), torch.rand(2, 3, 20, 30), torch.tensor([0.2, 0.9]))
        assert out.shape == (2, 3, 20, 30) and torch.isfinite(out).all()


def test_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="models/rife"):
        load_interpolator(tmp_path / "missing.pth")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a RIFE state dict"):
        load_interpolator(tmp_path / "other.pth")
    with pytest.raises(ValueError, match="FILM"):
        build_model({"extract.extract_sublevels.convs.0.0.conv.weight": torch.zeros(1)})
    sd = tiny_rife_state_dict("4.7")
    sd40 = {k.replace("lastconv.0.", "lastconv."): v for k, v in sd.items()}
    with pytest.raises(ValueError, match="4.0-4.4"):
        build_model(sd40)
    truncated = {k: v for k, v in sd.items() if not k.startswith("block3.")}
    with pytest.raises(ValueError, match="missing"):
        build_model({**truncated, "block3.conv0.0.0.weight": sd["block3.conv0.0.0.weight"]})

    torch.save({"x": _NotATensor()}, tmp_path / "evil.pth")  # arbitrary pickled object: weights_only refuses
    with pytest.raises(ValueError, match="weights_only"):
        read_checkpoint(tmp_path / "evil.pth")


def test_option_and_input_errors():
    net = build_model(tiny_rife_state_dict("4.7"))
    with pytest.raises(ValueError, match="multiples of 32"):
        RifeInterpolator(net, config=RifeConfig(pad_multiple=16)).pad_multiple()
    assert RifeInterpolator(net, config=RifeConfig(scale=0.25)).pad_multiple() == 128
    with pytest.raises(ValueError, match="no ensemble"):
        RifeInterpolator(build_model(tiny_rife_state_dict("4.22.lite")), config=RifeConfig(ensemble=True))
    it = RifeInterpolator(net)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        it.interpolate(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), 1.5)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        it.interpolate(torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8), 0.5)
    with pytest.raises(ValueError, match="t must be"):
        it.interpolate(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), torch.tensor([0.1, 0.2, 0.3]))


def test_extra_channels_follow_the_colour():
    """Alpha carried with interpolate_with_extra equals the colour result when fed the same content."""
    net = build_model(tiny_rife_state_dict("4.7"))
    it = RifeInterpolator(net)
    x0, x1 = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    out, ex = it.interpolate_with_extra(x0, x1, 0.3, x0, x1)
    torch.testing.assert_close(ex, out, atol=1e-5, rtol=0)
    it36 = RifeInterpolator(build_model(tiny_rife_state_dict("3.6")))
    out, ex = it36.interpolate_with_extra(x0, x1, 0.25, x0[:, :1], x1[:, :1])
    torch.testing.assert_close(ex, out[:, :1], atol=1e-5, rtol=0)


def test_midpoint_only_bisection_for_non_dyadic_t():
    it = RifeInterpolator(build_model(tiny_rife_state_dict("3.6")), config=RifeConfig(max_depth=2))
    x0, x1 = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    # with depth 2, t=0.3 lands on the nearest reachable midpoint 0.25
    torch.testing.assert_close(it.interpolate(x0, x1, 0.3), it.interpolate(x0, x1, 0.25))
    torch.testing.assert_close(it.interpolate(x0, x1, 0.0), x0)
    torch.testing.assert_close(it.interpolate(x0, x1, 1.0), x1)


@pytest.mark.gpu
def test_cuda_fp16_close_to_fp32():
    net = build_model(tiny_rife_state_dict("4.7"))
    x0, x1 = torch.rand(4, 3, 256, 256, device="cuda"), torch.rand(4, 3, 256, 256, device="cuda")
    ref = RifeInterpolator(net).to("cuda").interpolate(x0, x1, 0.5)
    import copy

    half = RifeInterpolator(copy.deepcopy(net)).to("cuda", torch.float16).interpolate(x0, x1, 0.5)
    assert half.dtype == torch.float32 and (half - ref).abs().mean() < 2e-2
