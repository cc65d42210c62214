"""Node inputs resolve only inside ComfyUI's folders: absolute paths, '..' and symlink escapes are refused for every
path-taking node, with one message for missing and forbidden files; output prefixes are checked; dataset folders
cannot point outside themselves."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from comfy_env import comfy, comfy_dirs, require_comfy  # noqa: F401  (fixtures)

require_comfy()

from nodes import _paths as P  # noqa: E402
from nodes.export import Load4DGaussians  # noqa: E402
from nodes.video import LoadVideo  # noqa: E402
from nodes.viewmatrix import LoadViewMatrix  # noqa: E402


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file and a folder outside ComfyUI's folders that a prompt must not reach."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.mp4").write_bytes(b"not for you")
    (d / "secret.e4d.safetensors").write_bytes(b"not for you")
    (d / "cameras.json").write_text("{}")
    return d


def _escapes(dirs, secret: Path, name: str) -> list[str]:
    """Absolute, '..', annotated-absolute and symlink spellings of ``secret/name`` as seen from input/."""
    link = dirs["input"] / f"link_{name or 'dir'}"
    os.symlink(secret / name if name else secret, link)
    rel = os.path.relpath(secret / name, dirs["input"]) if name else os.path.relpath(secret, dirs["input"])
    return [str(secret / name) if name else str(secret), rel, f"{secret / name if name else secret} [output]",
            os.path.relpath(secret / name if name else secret, dirs["output"]) + " [output]", link.name]


# (node, how to call validate_inputs / execute with a name, the file name under `secret`)
NODES = [
    ("LoadVideo", lambda n: LoadVideo.validate_inputs(video=n), lambda n: LoadVideo.execute(video=n), "secret.mp4"),
    ("Load4DGaussians.file", lambda n: Load4DGaussians.validate_inputs(file=n),
     lambda n: Load4DGaussians.execute(file=n), "secret.e4d.safetensors"),
    ("Load4DGaussians.path_override", lambda n: Load4DGaussians.validate_inputs(file=None, path_override=n),
     lambda n: Load4DGaussians.execute(file=None, path_override=n), "secret.e4d.safetensors"),
    ("LoadViewMatrix", None, lambda n: LoadViewMatrix.execute(folder=n), ""),
]


@pytest.mark.parametrize("node", NODES, ids=[n[0] for n in NODES])
def test_every_path_node_refuses_escapes_with_the_missing_file_message(comfy_dirs, secret, node, monkeypatch):
    monkeypatch.delenv(P.ALLOW_ABSOLUTE_ENV, raising=False)
    _, validate, execute, fname = node
    missing_name = "does_not_exist" + (Path(fname).suffix if fname else "")

    def message(call, name):
        if call is validate:
            out = call(name)
            assert out is not True, f"{name!r} was accepted"
            return out
        with pytest.raises(FileNotFoundError) as e:
            call(name)
        return str(e.value)

    for call in [c for c in (validate, execute) if c is not None]:
        expected = message(call, missing_name).replace(repr(missing_name), "<NAME>")
        for name in _escapes(comfy_dirs, secret, fname) if call is execute else [str(secret / fname)]:
            got = message(call, name)
            # identical to the missing-file message: a prompt cannot probe which files exist
            assert got.replace(repr(name), "<NAME>") == expected, name
            assert "not for you" not in got


def test_absolute_paths_only_behind_the_opt_in(comfy_dirs, secret, monkeypatch):
    monkeypatch.delenv(P.ALLOW_ABSOLUTE_ENV, raising=False)
    with pytest.raises(P.NodePathError):
        P.input_path(str(secret / "secret.mp4"), "file", "video")
    monkeypatch.setenv(P.ALLOW_ABSOLUTE_ENV, "1")
    assert P.input_path(str(secret / "secret.mp4"), "file", "video") == Path(os.path.realpath(secret / "secret.mp4"))
    with pytest.raises(P.NodePathError):  # the opt-in is about absolute paths, not about kinds or '..'
        P.input_path(str(secret / "secret.mp4"), "dir", "folder")


def test_inside_names_resolve_and_links_inside_are_fine(comfy_dirs):
    (comfy_dirs["input"] / "clip.mp4").write_bytes(b"x")
    (comfy_dirs["output"] / "run").mkdir()
    (comfy_dirs["output"] / "run" / "m.e4d.safetensors").write_bytes(b"x")
    os.symlink(comfy_dirs["input"] / "clip.mp4", comfy_dirs["input"] / "alias.mp4")
    assert P.input_path("clip.mp4", "file").name == "clip.mp4"
    assert P.input_path("alias.mp4", "file").name == "clip.mp4"  # the real path is returned
    assert P.input_path("run/m.e4d.safetensors [output]", "file").parent.name == "run"
    with pytest.raises(P.NodePathError):
        P.input_path("clip.mp4", "dir")
    with pytest.raises(P.NodePathError):
        P.input_path("", "file")


def test_listing_hides_links_that_leave_the_input_folder(comfy_dirs, secret):
    (comfy_dirs["input"] / "ok.mp4").write_bytes(b"x")
    os.symlink(secret / "secret.mp4", comfy_dirs["input"] / "evil.mp4")
    os.symlink(secret, comfy_dirs["input"] / "evil_dir")
    names = P.input_files([".mp4"], with_dirs=True)
    assert names == ["ok.mp4"]


@pytest.mark.parametrize("prefix,rule", [
    ("", "empty"), ("   ", "empty"), (".hidden", "hidden"), ("sub/.x", "hidden"), ("sub/", "no file name"),
    ("a" * 300, "bytes"), ("x/" * 600, "characters"), ("../escape", "leaves"), ("/abs/name", "absolute"),
])
def test_output_prefix_rules(comfy_dirs, prefix, rule):
    with pytest.raises(ValueError, match=rule):
        P.output_target(prefix)


def test_output_prefix_through_a_link_out_of_output_is_refused(comfy_dirs, secret):
    os.symlink(secret, comfy_dirs["output"] / "linked")
    with pytest.raises(ValueError, match="link"):
        P.output_target("linked/obj")
    folder, name, counter, sub = P.output_target("e4d/obj")
    assert folder == comfy_dirs["output"] / "e4d" and name == "obj" and counter == 1


def test_dataset_view_dirs_stay_inside_the_dataset(tmp_path, secret):
    from e4d.viewmatrix import load_view_matrix

    ds = tmp_path / "ds"
    (ds / "views" / "v00").mkdir(parents=True)
    eye = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]
    for bad in (str(secret), "../outside", "views/../../outside"):
        (ds / "cameras.json").write_text(json.dumps({"width": 4, "height": 4, "fx": 4,
                                                     "views": [{"w2c": eye, "dir": bad}]}))
        with pytest.raises(ValueError, match="leaves the dataset folder"):
            load_view_matrix(ds)
    os.symlink(secret, ds / "views" / "v01")
    (ds / "cameras.json").write_text(json.dumps({"width": 4, "height": 4, "fx": 4,
                                                 "views": [{"w2c": eye, "dir": "views/v00"},
                                                           {"w2c": eye, "dir": "views/v01"}]}))
    with pytest.raises(ValueError, match="leaves the dataset folder"):
        load_view_matrix(ds)


def test_todays_comfyui_invalid_file_path_becomes_the_actionable_message(comfy_dirs, monkeypatch):
    import folder_paths

    (comfy_dirs["input"] / "clip.mp4").write_bytes(b"x")

    def refuse(name, default_dir=None):  # what ComfyUI >= 0.30 raises for names whose real path leaves input/
        raise ValueError("Invalid file path")

    monkeypatch.setattr(folder_paths, "get_annotated_filepath", refuse)
    with pytest.raises(P.NodePathError, match=r"not found: it must be a file .*input folder.*E4D_ALLOW_ABSOLUTE_PATHS"):
        P.input_path("clip.mp4", "file", "video")
    assert "Invalid file path" not in LoadVideo.validate_inputs(video="clip.mp4")
