"""No code from model files: every loader meets a crafted payload (a pickle ``__reduce__`` that writes a marker file,
a TorchScript archive carrying one, a diffusers folder naming its own module) and the payload must not run."""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from e4d.checkpoints import read_checkpoint


class Payload:
    """Unpickling this runs ``exec``: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PWNED"


def _evil_checkpoint(path: Path, tensors: dict, marker: Path, wrap: str = "state_dict") -> Path:
    torch.save({wrap: tensors, "callbacks": Payload(marker), "epoch": 3}, path)
    return path


def test_the_payload_is_live(tmp_path, marker):
    """Guard of every test below: a plain unpickler does run the payload (so 'no marker' means something)."""
    p = _evil_checkpoint(tmp_path / "evil.ckpt", {"w": torch.ones(2)}, marker)
    torch.load(p, weights_only=False)
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_checkpoint_reader_keeps_tensors_and_never_runs_the_payload(tmp_path, marker, suffix):
    w = torch.randn(3, 4)
    p = _evil_checkpoint(tmp_path / f"evil{suffix}", {"layer.weight": w}, marker)
    out = read_checkpoint(p)
    assert set(out) == {"layer.weight"} and torch.equal(out["layer.weight"], w)
    assert not marker.exists()


def test_legacy_raw_pickle_payload_is_refused(tmp_path, marker):
    p = tmp_path / "flownet.pkl"
    p.write_bytes(pickle.dumps({"w": Payload(marker)}))
    with pytest.raises(ValueError):
        read_checkpoint(p)
    assert not marker.exists()


def _torchscript_with_payload(path: Path, tensors: dict, marker: Path) -> Path:
    """A TorchScript archive (code/, constants.pkl) whose data.pkl also pickles a payload next to the tensors."""
    ts = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(ts, str(path.with_suffix(".ts")))
    inner = path.parent / "inner.pt"
    torch.save({**tensors, "evil": Payload(marker)}, inner)
    with zipfile.ZipFile(path, "w") as out:
        with zipfile.ZipFile(path.with_suffix(".ts")) as src:
            for n in src.namelist():
                if n.startswith("ts/code/") or n.endswith(("constants.pkl", "version", "byteorder")):
                    out.writestr("archive/" + n.split("/", 1)[1], src.read(n))
        with zipfile.ZipFile(inner) as src:
            for n in src.namelist():
                rest = n.split("/", 1)[1]
                if rest == "data.pkl" or rest.startswith("data/"):
                    out.writestr("archive/" + rest, src.read(n))
    return path


def test_torchscript_archive_is_read_as_tensors_without_torchscript(tmp_path, marker, monkeypatch):
    def no_jit(*a, **k):
        raise AssertionError("torch.jit.load must never be called on a user's file")

    monkeypatch.setattr(torch.jit, "load", no_jit)
    w = torch.randn(5, 3)
    p = _torchscript_with_payload(tmp_path / "ViT-L-14.pt", {"visual.proj": w}, marker)
    out = read_checkpoint(p)
    assert torch.equal(out["visual.proj"], w)
    assert not marker.exists()


def test_syncdreamer_loader_and_clip_override(tmp_path, marker, monkeypatch):
    from tiny_syncdreamer import tiny_state_dict

    from e4d.syncdreamer.loader import load_syncdreamer

    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load called"))
    sd = tiny_state_dict()
    ckpt = _evil_checkpoint(tmp_path / "syncdreamer-pretrain.ckpt", sd, marker)
    m = load_syncdreamer(ckpt, dtype=torch.float32)
    torch.testing.assert_close(m.cc_projection.bias, sd["cc_projection.bias"])
    vis = {k[len("clip_image_encoder.model."):]: v + 1 for k, v in sd.items()
           if k.startswith("clip_image_encoder.model.visual.")}
    clip = _torchscript_with_payload(tmp_path / "ViT-L-14.pt", vis, marker)
    m = load_syncdreamer(ckpt, dtype=torch.float32, clip_override=clip)
    torch.testing.assert_close(m.clip_image_encoder.model.visual.conv1.weight, vis["visual.conv1.weight"])
    assert not marker.exists()


def test_rife_loader(tmp_path, marker):
    from tiny_rife import tiny_rife_state_dict

    from e4d.rife.loader import load_rife_model

    sd = tiny_rife_state_dict("4.7")
    model = load_rife_model(_evil_checkpoint(tmp_path / "rife47.pth", sd, marker, wrap="model"))
    assert sum(p.numel() for p in model.parameters()) > 0
    assert not marker.exists()


def test_zero123_single_file_and_folder_with_pickled_weights(tmp_path, marker):
    from tiny_zero123 import write_tiny_zero123, write_tiny_zero123_single_file

    from e4d.guidance.loader import load_zero123

    single = write_tiny_zero123_single_file(tmp_path / "stable_zero123.ckpt")
    sd = torch.load(single, weights_only=True)
    _evil_checkpoint(single, sd["state_dict"] if "state_dict" in sd else sd, marker)
    load_zero123(single)
    folder = write_tiny_zero123(tmp_path / "zero123-xl-diffusers")
    unet = folder / "unet"
    for f in unet.glob("*.safetensors"):  # the weights as a pickled .bin carrying the payload
        from safetensors.torch import load_file

        _evil_checkpoint(unet / "diffusion_pytorch_model.bin", load_file(str(f)), marker, wrap="unused")
        f.unlink()
    with pytest.raises((ValueError, OSError, RuntimeError, pickle.UnpicklingError)):
        load_zero123(folder)  # diffusers reads .bin with weights_only=True: refused, not run
    assert not marker.exists()


EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("pwned")
from diffusers import UNetSpatioTemporalConditionModel as EvilUNet
"""


def test_svd_folder_naming_its_own_module_does_not_run_it(tmp_path, marker):
    from tiny_svd import write_tiny_svd

    from e4d.svd.pipeline import load_svd

    folder = write_tiny_svd(tmp_path / "stable-video-diffusion-img2vid-xt")
    (folder / "unet" / "evil_unet.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    index = json.loads((folder / "model_index.json").read_text())
    index["unet"] = ["evil_unet", "EvilUNet"]  # what a crafted folder does: diffusers < 0.38 imports unet/evil_unet.py
    (folder / "model_index.json").write_text(json.dumps(index))
    pipe = load_svd(folder)
    assert type(pipe.unet).__name__ == "UNetSpatioTemporalConditionModel"
    assert not marker.exists()


def test_svd_folder_with_pickled_weights_is_refused(tmp_path, marker):
    from safetensors.torch import load_file
    from tiny_svd import write_tiny_svd

    from e4d.svd.pipeline import load_svd

    folder = write_tiny_svd(tmp_path / "svd")
    for f in (folder / "unet").glob("*.safetensors"):
        _evil_checkpoint(folder / "unet" / "diffusion_pytorch_model.bin", load_file(str(f)), marker, wrap="unused")
        f.unlink()
    with pytest.raises(FileNotFoundError, match="safetensors weights are required"):
        load_svd(folder)
    assert not marker.exists()


def test_native_file_is_safetensors_only(tmp_path, marker):
    from e4d.export import load_native

    p = _evil_checkpoint(tmp_path / "model.e4d.safetensors", {"means": torch.zeros(2, 3)}, marker)
    with pytest.raises(ValueError):
        load_native(p)
    assert not marker.exists()
