"""E4D_Preview4D (nodes/preview.py) called directly: schema, the temp file it writes, the UI output the
frontend extension (web/js/e4d_preview.js) reads, and the web folder the pack exposes."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from comfy_env import comfy, comfy_dirs  # noqa: F401  (fixtures)
from e4d.export.compact4d import read_compact4d
from e4d.gaussians4d import init_random

REPO = Path(__file__).resolve().parents[1]


def _node():
    from comfy_env import require_comfy

    require_comfy()
    from nodes.preview import UI_KEY, Preview4D

    return Preview4D, UI_KEY


def test_schema_is_an_output_node(comfy):
    Preview4D, _ = _node()
    s = Preview4D.GET_SCHEMA()
    assert s.node_id == "E4D_Preview4D" and s.is_output_node and s.category.startswith("Efficient4D/")
    names = [i.id for i in s.inputs]
    assert names == ["gaussians", "background", "autoplay", "duration_s", "max_gaussians"]
    assert all(i.tooltip for i in s.inputs) and s.description


def test_execute_writes_temp_file_and_ui_entry(comfy_dirs):
    Preview4D, UI_KEY = _node()
    g = init_random(500, seed=1)
    out = Preview4D.execute(g, background="black", autoplay=False, duration_s=2.5, max_gaussians=0)
    entry = out.ui[UI_KEY][0]
    assert entry["type"] == "temp" and entry["subfolder"] == "efficient4d" and entry["count"] == 500
    assert re.fullmatch(r"e4d_preview_[0-9a-f]{12}\.e4dc", entry["filename"])
    path = comfy_dirs["temp"] / entry["subfolder"] / entry["filename"]
    c = read_compact4d(path)
    assert c.header["count"] == 500 and c.header["background"] == "black" and c.header["autoplay"] is False
    assert c.header["duration"] == 2.5
    torch.testing.assert_close(torch.from_numpy(c.means.copy()), g.means)
    # The frontend builds /view?filename=..&type=temp&subfolder=..: ComfyUI resolves it to this very file.
    import folder_paths

    assert Path(folder_paths.get_directory_by_type(entry["type"])) / entry["subfolder"] / entry["filename"] == path


def test_max_gaussians_keeps_the_most_opaque(comfy_dirs):
    Preview4D, UI_KEY = _node()
    g = init_random(300, seed=2)
    g.opacity_logit = torch.linspace(-3, 3, 300)
    out = Preview4D.execute(g, max_gaussians=100)
    entry = out.ui[UI_KEY][0]
    c = read_compact4d(comfy_dirs["temp"] / entry["subfolder"] / entry["filename"])
    assert entry["count"] == 100 and c.means.shape == (100, 4)
    torch.testing.assert_close(torch.from_numpy(c.means.copy()), g.means[200:])
    with pytest.raises(ValueError, match="background"):
        Preview4D.execute(g, background="pink")


def test_web_extension_files():
    """ComfyUI imports every .js under WEB_DIRECTORY: only the entry registers; nothing loads from a CDN."""
    import ast

    tree = ast.parse((REPO / "__init__.py").read_text())
    web_dir = [n.value.value for n in tree.body if isinstance(n, ast.Assign)
               and any(getattr(t, "id", None) == "WEB_DIRECTORY" for t in n.targets)]
    assert web_dir == ["./web"]
    js = {p.name: p.read_text() for p in (REPO / "web").rglob("*.js")}
    assert "e4d_preview.js" in js and "e4d_player.js" in js
    registering = [n for n, src in js.items() if "registerExtension" in src]
    assert registering == ["e4d_preview.js"]
    assert 'name: "efficient4d.preview"' in js["e4d_preview.js"] and '"E4D_Preview4D"' in js["e4d_preview.js"]
    for name, src in js.items():  # W3C namespace names (the three.js bundle's createElementNS) are not addresses
        src = re.sub(r"http://www\.w3\.org/(1999/xhtml|2000/svg)\b", "", src.replace("http://127.0.0.1", ""))
        assert not re.search(r"https?://", src), f"{name} references a remote URL"


def test_web_build_check_passes():
    """web/build.mjs: every .js parses as an ES module, no remote URL, one registering entry (needs node)."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed (only needed for this syntax check)")
    r = subprocess.run([node, str(REPO / "web" / "build.mjs")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
