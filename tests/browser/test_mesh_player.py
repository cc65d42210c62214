"""The animated GLB (e4d/mesh/glb.py) played by three.js in headless Chromium (web/js/e4d_mesh_player.js: GLTFLoader +
AnimationMixer + WebGLRenderer from the committed bundle web/lib/three_gltf.js) on the standalone page web/player.html.

The fixture is a real extraction of the analytic moving sphere (tests/mesh_scene.py) written by our exporter. Checks:
three.js sees the file's frames and key times, the vertex positions it shows at two animation times (one on a key,
one between keys) are the file's morph targets blended as glTF says, the drawn sphere sits where the camera model
projects the file's mesh at two times, and play / orbit work. With xatlas (CI), the UV-textured export too: its
embedded texture loads and is drawn.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from e4d_images import foreground, png_to_array
from mesh_scene import moving_sphere

pytestmark = pytest.mark.browser

FOV = 49.1
TIMES = 5
FPS = 4.0


def _has_xatlas() -> bool:
    try:
        import xatlas  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def extracted():
    """One extraction; with xatlas (CI has it) also the baked texture, written as a second GLB below."""
    from e4d.mesh import MeshConfig, extract_mesh_4d

    cfg = MeshConfig(resolution=32, views=8, view_size=40, decimate_faces=0,
                     texture_size=128 if _has_xatlas() else 0)
    return extract_mesh_4d(moving_sphere(), torch.linspace(0, 1, TIMES), cfg, backend="reference")


@pytest.fixture(scope="module")
def glb(site, extracted):
    """The vertex-coloured animated GLB (the default export), read back with pygltflib."""
    import dataclasses

    from e4d.mesh import read_animated_glb, write_animated_glb

    root, _ = site
    path = write_animated_glb(dataclasses.replace(extracted, texture=None), root / "sphere.glb", fps=FPS)
    return read_animated_glb(path)


@pytest.fixture(scope="module")
def page(browser, site, glb):
    _, url = site
    browser.goto(f"{url}/web/player.html?file=/sphere.glb&autoplay=0")
    ready = browser.evaluate("window.e4dReady", timeout=60)
    assert ready and ready.get("ok"), f"mesh player failed to load: {ready}; console: {browser.console[-10:]}"
    assert ready["mode"] == "mesh"
    return browser


def _y_up(p: np.ndarray) -> np.ndarray:
    from e4d.mesh.glb import to_y_up

    return to_y_up(p)


def test_three_sees_the_files_frames_and_key_times(page, glb):
    T, M = glb.positions.shape[:2]
    assert T == TIMES
    got = page.evaluate("({frames: e4dPlayer.frames, vertices: e4dPlayer.vertices, duration: e4dPlayer.duration,"
                        " keys: e4dPlayer.keyTimes, influences: e4dPlayer.mesh.morphTargetInfluences.length,"
                        " relative: e4dPlayer.mesh.geometry.morphTargetsRelative})")
    assert got["frames"] == got["influences"] == T, got
    assert got["vertices"] == M, got
    assert got["relative"] is True, "glTF morph targets are offsets from the base shape"
    np.testing.assert_allclose(got["keys"], glb.key_times, atol=1e-6)
    assert got["duration"] == pytest.approx((T - 1) / FPS)


@pytest.mark.parametrize("t", [0.25, 0.625])
def test_vertex_positions_match_the_files_morph_targets(page, glb, t):
    """At t = 0.25 (key 1) and t = 0.625 (halfway between keys 2 and 3: LINEAR weights) the positions three.js shows
    equal the file's positions blended the same way (read back with pygltflib, independent of three.js)."""
    T, M = glb.positions.shape[:2]
    page.evaluate(f"e4dPlayer.pause(); e4dPlayer.setTime({t})")
    shown = np.asarray(page.evaluate("Array.from(e4dPlayer.vertexPositions())"), dtype=np.float64).reshape(M, 3)
    f = t * (T - 1)
    k = min(int(math.floor(f)), T - 2)
    a = f - k
    expected = _y_up((1 - a) * glb.positions[k].astype(np.float64) + a * glb.positions[k + 1].astype(np.float64))
    err = np.abs(shown - expected).max()
    assert err < 1e-5, f"t={t}: three.js shows vertices up to {err:.2e} away from the file's morph targets"
    moved = np.abs(shown - _y_up(glb.positions[0].astype(np.float64))).max()
    assert moved > 0.02, f"t={t}: the mesh did not move from the first frame (max {moved:.4f}); weights not applied?"


def _shot(b, artifacts: Path, name: str) -> np.ndarray:
    b.evaluate("e4dPlayer.renderNow()")
    r = b.evaluate("(() => { const r = e4dPlayer.canvas.getBoundingClientRect();"
                   " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
    return png_to_array(b.screenshot(artifacts / f"{name}.png", clip=r))


def _expected_pixel(b, centre: np.ndarray, az: float, el: float, r: float) -> tuple[float, float]:
    """Where the Python camera model (e4d.cameras, +Z-up world) projects ``centre`` in the player's canvas."""
    from e4d.cameras import look_at

    w, h = b.evaluate("[e4dPlayer.canvas.width, e4dPlayer.canvas.height]")
    f = 0.5 * h / math.tan(math.radians(FOV) / 2)
    w2c = look_at(az, el, r)[0].double()
    p = w2c[:3, :3] @ torch.tensor(centre, dtype=torch.float64) + w2c[:3, 3]
    return float(f * p[0] / p[2] + w / 2), float(f * p[1] / p[2] + h / 2)


def test_drawn_mesh_follows_the_animation(page, glb, artifacts_dir):
    """The WebGL render (morphing on the GPU) puts the sphere where the file's frame is, at the first and last key."""
    az, el, r = 90.0, 10.0, 1.6  # camera on +Y: the sphere's motion along x is sideways on screen
    page.evaluate(f"e4dPlayer.pause(); e4dPlayer.setCamera({{az: {az}, el: {el}, r: {r}, target: [0, 0, 0]}})")
    xs = []
    for t, k in ((0.0, 0), (1.0, TIMES - 1)):
        page.evaluate(f"e4dPlayer.setTime({t})")
        fg = foreground(_shot(page, artifacts_dir, f"mesh_t{k}"))
        assert 0.02 < fg.mean() < 0.6, f"t={t}: {fg.mean():.2%} of the canvas drawn; console: {page.console[-10:]}"
        ys, xpix = np.nonzero(fg)
        cx, cy = float(xpix.mean()) + 0.5, float(ys.mean()) + 0.5
        ex, ey = _expected_pixel(page, glb.positions[k].mean(0), az, el, r)
        assert abs(cx - ex) < 6 and abs(cy - ey) < 6, \
            f"t={t}: drawn at ({cx:.1f}, {cy:.1f}), expected ({ex:.1f}, {ey:.1f})"
        xs.append(cx)
    assert abs(xs[1] - xs[0]) > 30, f"the drawn sphere did not move between the first and last key: {xs}"


def test_play_and_orbit(page):
    page.evaluate("e4dPlayer.setTime(0); e4dPlayer.ui.play.click()")
    page.wait_for("e4dPlayer.time > 0.05", timeout=20)
    page.evaluate("e4dPlayer.ui.play.click()")
    assert page.evaluate("e4dPlayer.playing") is False
    az0 = page.evaluate("e4dPlayer._cam.az")
    r = page.evaluate("(() => { const r = e4dPlayer.canvas.getBoundingClientRect(); return [r.x + r.width / 2,"
                      " r.y + r.height / 2]; })()")
    page.drag(r[0], r[1], r[0] + 120, r[1])
    assert abs(page.evaluate("e4dPlayer._cam.az") - az0) > 20, "dragging did not orbit the camera"
    page.evaluate("e4dPlayer.ui.reset.click()")
    assert page.evaluate("[e4dPlayer._cam.az, e4dPlayer._cam.el]") == [0, 15]


def test_textured_glb_shows_its_baked_texture(page, site, extracted, artifacts_dir):
    """The UV-textured export (xatlas bake): three.js loads the embedded PNG, shows the split vertices where the
    file has them, and draws the sphere red on top and blue below as the analytic scene is coloured."""
    from e4d.mesh import read_animated_glb, write_animated_glb
    from e4d.mesh.glb import to_y_up

    if extracted.texture is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("xatlas missing in CI (tests/requirements-ci.txt installs it)")
        pytest.skip("xatlas not installed")
    root, _ = site
    back = read_animated_glb(write_animated_glb(extracted, root / "sphere_tex.glb", fps=FPS))
    got = page.evaluate("e4dPlayer.load('/sphere_tex.glb', {autoplay: false}).then((h) => ({...h,"
                        " map: e4dPlayer.mesh.material.map ? [e4dPlayer.mesh.material.map.image.width,"
                        " e4dPlayer.mesh.material.map.image.height] : null,"
                        " colours: !!e4dPlayer.mesh.geometry.attributes.color}))", timeout=60)
    h, w = back.texture.shape[:2]
    assert got["map"] == [w, h] and got["colours"] is False, got
    assert got["frames"] == TIMES and got["vertices"] == back.positions.shape[1], got
    page.evaluate("e4dPlayer.pause(); e4dPlayer.setTime(0.5)")
    shown = np.asarray(page.evaluate("Array.from(e4dPlayer.vertexPositions())")).reshape(-1, 3)
    assert np.abs(shown - to_y_up(back.positions[2].astype(np.float64))).max() < 1e-5
    page.evaluate("e4dPlayer.setCamera({az: 0, el: 0, r: 1.4, target: [0, 0, 0]})")
    img = _shot(page, artifacts_dir, "mesh_textured")
    fg = foreground(img)
    ys = np.nonzero(fg.any(1))[0]
    top, bottom = img[ys[0]:ys[0] + (ys[-1] - ys[0]) // 4], img[ys[-1] - (ys[-1] - ys[0]) // 4:ys[-1]]
    tm, bm = top[foreground(top)].mean(0), bottom[foreground(bottom)].mean(0)
    assert tm[0] > tm[2] + 40 and bm[2] > bm[0] + 40, f"top {tm}, bottom {bm}: the texture's red/blue is not drawn"
