"""The 4D player (web/js/e4d_player.js) in headless Chromium on the standalone page web/player.html.

The fixture is :func:`e4d_scene.moving_blob`, a coloured ellipsoid sliding along +Y. Checks: it draws where the
Python camera model projects it, moving the time slider moves it the way the core's slicing (e4d.slicing) says,
orbiting by mouse drag changes the view, and the controls (play, background, reset) work.
Screenshots land in $E4D_ARTIFACTS/browser (or a pytest temp folder).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from e4d_images import foreground, png_to_array
from e4d.cameras import look_at
from e4d.export.compact4d import write_compact4d
from e4d_scene import blob_centre, moving_blob

pytestmark = pytest.mark.browser

FOV = 49.1


@pytest.fixture(scope="module")
def page(browser, site):
    root, url = site
    write_compact4d(moving_blob(4000), root / "blob.e4dc", extras={"background": "white"})
    browser.goto(f"{url}/web/player.html?file=/blob.e4dc&autoplay=0")
    ready = browser.evaluate("window.e4dReady", timeout=60)
    assert ready and ready.get("ok"), f"player failed to load: {ready}; console: {browser.console[-10:]}"
    assert ready["count"] == 4000
    return browser


def _canvas_rect(b) -> dict:
    return b.evaluate("(() => { const r = e4dPlayer.canvas.getBoundingClientRect();"
                      " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")


def _shot(b, artifacts, name: str) -> np.ndarray:
    b.evaluate("(async () => { await e4dPlayer.whenSorted(); e4dPlayer.renderNow({finish: true}); })()")
    rect = _canvas_rect(b)
    return png_to_array(b.screenshot(artifacts / f"{name}.png", clip=rect))


def _set_view(b, t: float, az: float = 0.0, el: float = 15.0, r: float = 1.6) -> None:
    b.evaluate(f"e4dPlayer.pause(); e4dPlayer.setCamera({{az: {az}, el: {el}, r: {r}, target: [0, 0, 0]}});"
               f" e4dPlayer.setTime({t});")


def _expected_pixel(b, t: float, az: float, el: float, r: float) -> tuple[float, float]:
    """Where the Python camera model (e4d.cameras) projects the blob centre in the player's canvas."""
    w, h = b.evaluate("[e4dPlayer.canvas.width, e4dPlayer.canvas.height]")
    f = 0.5 * h / math.tan(math.radians(FOV) / 2)
    w2c = look_at(az, el, r)[0].double()
    p = w2c[:3, :3] @ torch.tensor(blob_centre(t), dtype=torch.float64) + w2c[:3, 3]
    return float(f * p[0] / p[2] + w / 2), float(f * p[1] / p[2] + h / 2)


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5


def test_draws_object_where_the_camera_model_puts_it(page, artifacts_dir):
    _set_view(page, 0.5)
    img = _shot(page, artifacts_dir, "standalone_t050")
    fg = foreground(img)
    assert fg.mean() > 0.01, f"only {fg.mean():.4%} of the canvas is drawn; console: {page.console[-10:]}"
    assert not fg[:5].any() and not fg[-5:].any(), "the object should not touch the top/bottom edges"
    cx, cy = _centroid(fg)
    ex, ey = _expected_pixel(page, 0.5, 0.0, 15.0, 1.6)
    assert abs(cx - ex) < 8 and abs(cy - ey) < 12, f"drawn at ({cx:.1f}, {cy:.1f}), camera model says ({ex:.1f}, {ey:.1f})"
    assert page.evaluate("e4dPlayer.visible") < 4000, "temporal culling (marginal <= 0.05) should drop some Gaussians"


def test_time_slider_moves_the_object_as_the_core_slicing_says(page, artifacts_dir):
    _set_view(page, 0.5)
    centres = {}
    for t in (0.1, 0.9):
        # Drive the real <input type=range> the way a user does (value + input event).
        page.evaluate(f"(() => {{ const s = e4dPlayer.ui.slider; s.value = '{round(t * 1000)}';"
                      f" s.dispatchEvent(new Event('input')); }})()")
        assert abs(page.evaluate("e4dPlayer.time") - t) < 1e-6
        img = _shot(page, artifacts_dir, f"standalone_slider_t{round(t * 100):03d}")
        fg = foreground(img)
        assert fg.mean() > 0.005, f"nothing drawn at t={t}"
        centres[t] = _centroid(fg)
        ex, _ = _expected_pixel(page, t, 0.0, 15.0, 1.6)
        # The blob moves at the conditional-mean velocity (0.475 here), the camera model uses 0.5: allow 10 px.
        assert abs(centres[t][0] - ex) < 10, f"t={t}: drawn at x={centres[t][0]:.1f}, expected about {ex:.1f}"
    # +Y is screen-right for a camera at azimuth 0 (e4d/cameras.py), and the blob moves along +Y.
    assert centres[0.9][0] - centres[0.1][0] > 60, f"time slider did not move the object: {centres}"


def test_orbit_drag_changes_the_view(page, artifacts_dir):
    _set_view(page, 0.5)
    before = _shot(page, artifacts_dir, "standalone_orbit_before")
    az0 = page.evaluate("e4dPlayer._cam.az")
    rect = _canvas_rect(page)
    cx, cy = rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2
    page.drag(cx, cy, cx + 150, cy + 40)
    az1, el1 = page.evaluate("[e4dPlayer._cam.az, e4dPlayer._cam.el]")
    assert abs(az1 - az0) > 20 and el1 > 15, f"drag did not orbit: az {az0} -> {az1}, el -> {el1}"
    after = _shot(page, artifacts_dir, "standalone_orbit_after")
    changed = (np.abs(after - before) > 40).any(-1).mean()
    assert changed > 0.01, f"orbiting changed only {changed:.4%} of the pixels"
    page.evaluate("e4dPlayer.ui.reset.click()")
    home = page.evaluate("[e4dPlayer._cam.az, e4dPlayer._cam.el, e4dPlayer._home.az, e4dPlayer._home.el]")
    assert home[:2] == home[2:], f"reset view did not restore the home camera: {home}"


def test_play_background_and_zoom_controls(page, artifacts_dir):
    _set_view(page, 0.0)
    page.evaluate("e4dPlayer.ui.play.click()")
    page.wait_for("e4dPlayer.time > 0.05", timeout=20)
    page.evaluate("e4dPlayer.ui.play.click()")
    assert page.evaluate("e4dPlayer.playing") is False
    page.evaluate("e4dPlayer.setBackground('white')")
    page.evaluate("e4dPlayer.ui.bg.click()")
    assert page.evaluate("e4dPlayer.background") == "black"
    img = _shot(page, artifacts_dir, "standalone_black_background")
    assert (img[2, 2] < 10).all(), f"background toggle: corner pixel is {img[2, 2]}"
    page.evaluate("e4dPlayer.setBackground('white')")
    r0 = page.evaluate("e4dPlayer._cam.r")
    rect = _canvas_rect(page)
    page.send("Input.dispatchMouseEvent", {"type": "mouseWheel", "x": rect["x"] + 50, "y": rect["y"] + 50,
                                           "deltaX": 0, "deltaY": 100}, session=True)
    page.wait_for(f"e4dPlayer._cam.r > {r0 * 1.05}", timeout=5)


def test_gpu_render_matches_the_core_reference_renderer(page, artifacts_dir):
    """Pixel parity of the WebGL player (slicing in the vertex shader) with e4d.render's pure-torch reference."""
    from PIL import Image

    from e4d.render import render

    page.evaluate("document.getElementById('player').style.cssText = 'position:absolute;left:0;top:0;"
                  "width:200px;height:250px'")
    try:
        t, az, el, r = 0.3, 30.0, 20.0, 0.9
        _set_view(page, t, az, el, r)
        img = _shot(page, artifacts_dir, "parity_player")
        h, w = img.shape[:2]
        assert (w, h) == tuple(page.evaluate("[e4dPlayer.canvas.width, e4dPlayer.canvas.height]"))
        f = 0.5 * h / math.tan(math.radians(FOV) / 2)
        K = torch.tensor([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], dtype=torch.float64)
        g = moving_blob(4000).to(dtype=torch.float64)
        out = render(g, [t], look_at(az, el, r).double()[None], K[None, None], w, h, background=1.0,
                     backend="reference")
        ref = (out.rgb[0, 0].clamp(0, 1) * 255).round().numpy()
        Image.fromarray(ref.astype(np.uint8)).save(artifacts_dir / "parity_reference.png")
        diff = np.abs(img.astype(np.float64) - ref)
        obj = foreground(ref.astype(np.int16))
        assert obj.mean() > 0.02, "reference render is empty; the test scene or camera is wrong"
        # u8 colours in the file, 0.99 vs 0.999 alpha cap and a 16-bit depth sort: small differences only
        # (measured here: mean 0.23, max 8 grey levels at 200 x 200)
        assert diff.mean() < 1.0 and np.percentile(diff[obj], 99) < 12, \
            f"player differs from the reference: mean {diff.mean():.2f}, p99 on the object {np.percentile(diff[obj], 99):.1f}"
    finally:
        page.evaluate("document.getElementById('player').style.cssText = ''")
