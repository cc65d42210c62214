// Efficient4D animated-mesh player: plays the animated GLB that e4d/mesh/glb.py writes (one mesh, one morph target
// per time, an animation of the morph weights) with three.js's GLTFLoader, AnimationMixer and WebGLRenderer.
//
// No side effects on import (ComfyUI imports every .js under WEB_DIRECTORY). three.js (../lib/three_gltf.js, the
// bundle tools/web_build/ makes) is imported on the first load(): player.html parses it only for a mesh (in ComfyUI it is
// one of the .js files imported at start-up anyway, and has no side effect either).
// Camera conventions are the 4D player's (e4d/cameras.py: world +Z up, azimuth 0 = +X), converted to glTF's +Y up
// the way the exporter converts the mesh: (x, y, z) -> (x, z, -y).
import { bindViewGestures, el, injectStyle } from "./e4d_player.js";

const DEG = Math.PI / 180;
const BACKGROUNDS = { white: 0xffffff, black: 0x000000, grey: 0x808080 };

let threePromise = null;
function loadThree() {
  threePromise ??= import("../lib/three_gltf.js");
  return threePromise;
}

/** Our +Z-up world to glTF's +Y up (e4d/mesh/glb.py to_y_up). */
function toYUp(p) { return [p[0], p[2], -p[1]]; }

/**
 * Interactive player of an animated GLB inside `container`.
 * Options: background ("white"|"black"|"grey"), autoplay (bool), loop (bool), fov (vertical, degrees),
 * controls (bool: show the control bar). Time is normalized: 0 = the animation's first key, 1 = its last.
 */
export class E4DMeshPlayer {
  constructor(container, options = {}) {
    injectStyle();
    this.opts = Object.assign({ background: "white", autoplay: true, loop: true, fov: 49.1, controls: true,
                                maxPixelRatio: 2 }, options);
    this.root = el("div", { className: "e4d-player" }, container);
    this.view = el("div", { className: "e4d-view" }, this.root);
    this.msg = el("div", { className: "e4d-msg", textContent: "no mesh loaded" }, this.view);
    this.background = this.opts.background in BACKGROUNDS ? this.opts.background : "white";
    this.time = 0; this.playing = false; this.speed = 1; this.loop = !!this.opts.loop;
    this.frames = 0; this.vertices = 0; this.duration = 0;
    this.mesh = null; this.mixer = null; this.action = null;
    this._cam = { az: 0, el: 15, r: 1.8, target: [0, 0, 0] };
    this._home = { ...this._cam, target: [0, 0, 0] };
    this._raf = 0; this._lastTs = 0;
    this.ui = {};
    if (this.opts.controls) this._buildControls();
  }

  /** Fetch and show an animated GLB; resolves to {frames, vertices, duration} once the first frame is drawn. */
  async load(url, options = {}) {
    for (const [k, v] of Object.entries(options)) if (v !== undefined && v !== null) this.opts[k] = v;
    if (options.background in BACKGROUNDS) this.background = options.background;
    this.msg.textContent = "loading mesh…";
    try {
      const THREE = await loadThree();
      this._init(THREE);
      const gltf = await new THREE.GLTFLoader().loadAsync(url);
      this._setScene(THREE, gltf);
    } catch (e) {
      this.msg.textContent = `could not show ${url}: ${e.message || e}`;
      throw e;
    }
    this.renderNow();
    if (this.opts.autoplay && this.frames > 1) this.play();
    return { frames: this.frames, vertices: this.vertices, duration: this.duration };
  }

  _init(THREE) {
    if (this.renderer) return;
    this.THREE = THREE;
    this.renderer = new THREE.WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;
    this.canvas = this.renderer.domElement;
    this.view.insertBefore(this.canvas, this.msg);
    this.camera = new THREE.PerspectiveCamera(this.opts.fov, 1, 0.01, 100);
    this.scene = new THREE.Scene();
    // A head light (it follows the camera) over an ambient term: every side the user orbits to is lit.
    this.scene.add(new THREE.AmbientLight(0xffffff, 1.2));
    this.light = new THREE.DirectionalLight(0xffffff, 1.8);
    this.camera.add(this.light);
    this.scene.add(this.camera);
    this._bindPointer();
    this._ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(() => this._markDirty()) : null;
    if (this._ro) this._ro.observe(this.view);
  }

  _setScene(THREE, gltf) {
    this._disposeScene(); // a node that runs again loads its new GLB into the same player
    this.root3 = gltf.scene;
    this.scene.add(this.root3);
    this.mesh = null;
    this.root3.traverse((o) => { if (o.isMesh && !this.mesh) this.mesh = o; });
    if (!this.mesh) throw new Error("the GLB holds no mesh");
    const clip = gltf.animations[0];
    this.mixer = new THREE.AnimationMixer(this.root3);
    this.action = null; this.duration = 0;
    this.frames = this.mesh.morphTargetInfluences ? this.mesh.morphTargetInfluences.length : 1;
    if (clip) {
      this.action = this.mixer.clipAction(clip);
      this.action.setLoop(THREE.LoopRepeat, Infinity);
      this.action.play();
      this.duration = clip.duration;
      this.keyTimes = Array.from(clip.tracks[0].times);
    }
    this.vertices = this.mesh.geometry.attributes.position.count;
    // Frame the object the way the 4D player does: its bounding sphere (over the first and last keys: the motion
    // stays in view) fits the view.
    this.setTime(1);
    const box = new THREE.Box3().setFromObject(this.root3, true);
    this.setTime(0);
    box.union(new THREE.Box3().setFromObject(this.root3, true));
    const c = box.getCenter(new THREE.Vector3()), rad = 0.5 * box.getSize(new THREE.Vector3()).length();
    const r = Math.max(rad / Math.sin(0.5 * this.opts.fov * DEG) * 1.1, 0.1);
    this._home = { az: 0, el: 15, r, target: [c.x, -c.z, c.y] }; // back to our +Z-up world
    this.resetView();
    this.msg.textContent = "";
  }

  _disposeScene() {
    if (!this.root3) return;
    this.mixer?.stopAllAction();
    this.scene.remove(this.root3);
    this.root3.traverse((o) => {
      if (!o.isMesh) return;
      o.geometry.dispose();
      for (const m of [].concat(o.material)) { m.map?.dispose(); m.dispose(); }
    });
    this.root3 = null;
  }

  // ------------------------------------------------------------------------------ time / playback
  /** Show normalized time t in [0, 1] (clamped): the animation at t * duration seconds. */
  setTime(t) {
    this.time = Math.min(Math.max(t, 0), 1);
    if (this.action) {
      this.action.time = this.time * this.duration;
      this.mixer.update(0); // applies the morph weights at action.time without advancing it
    }
    this._syncControls();
    this._markDirty();
  }

  play() { if (!this.action) return; this.playing = true; this._lastTs = 0; this._syncControls(); this._markDirty(); }
  pause() { this.playing = false; this._syncControls(); }
  toggle() { this.playing ? this.pause() : this.play(); }
  setBackground(name) { if (name in BACKGROUNDS) { this.background = name; this._syncControls(); this._markDirty(); } }
  cycleBackground() {
    const names = Object.keys(BACKGROUNDS);
    this.setBackground(names[(names.indexOf(this.background) + 1) % names.length]);
  }

  /** Vertex positions three.js shows now ([M*3] floats, glTF +Y up, world space): the base shape plus the weighted
   * morph targets, computed by three's own CPU path of the shader's blend (Mesh.getVertexPosition). */
  vertexPositions() {
    const v = new this.THREE.Vector3(), out = new Float32Array(3 * this.vertices);
    this.root3.updateMatrixWorld(true);
    for (let i = 0; i < this.vertices; i++) {
      this.mesh.getVertexPosition(i, v).applyMatrix4(this.mesh.matrixWorld);
      out[3 * i] = v.x; out[3 * i + 1] = v.y; out[3 * i + 2] = v.z;
    }
    return out;
  }

  // ------------------------------------------------------------------------------ camera (our +Z-up world)
  setCamera({ az, el: elev, r, target }) {
    if (target !== undefined) this._cam.target = target.slice();
    if (az !== undefined) this._cam.az = az;
    if (elev !== undefined) this._cam.el = elev;
    if (r !== undefined) this._cam.r = r;
    this._markDirty();
  }

  resetView() { this._cam = { ...this._home, target: this._home.target.slice() }; this._markDirty(); }
  orbit(dAz, dEl) { this.setCamera({ az: this._cam.az + dAz, el: Math.max(-89, Math.min(89, this._cam.el + dEl)) }); }
  zoom(f) { this.setCamera({ r: Math.max(0.05, Math.min(100, this._cam.r * f)) }); }

  _placeCamera() {
    const { az, el: elev, r, target } = this._cam;
    const a = az * DEG, e = elev * DEG;
    const eye = [target[0] + r * Math.cos(e) * Math.cos(a), target[1] + r * Math.cos(e) * Math.sin(a),
                 target[2] + r * Math.sin(e)];
    this.camera.position.set(...toYUp(eye));
    this.camera.up.set(0, 1, 0);
    this.camera.lookAt(...toYUp(target));
  }

  // ------------------------------------------------------------------------------ drawing
  _markDirty() {
    if (!this._raf && this.renderer && typeof requestAnimationFrame !== "undefined")
      this._raf = requestAnimationFrame((ts) => this._frame(ts));
  }

  _frame(ts) {
    this._raf = 0;
    if (this._disposed) return;
    if (this.playing && this.duration > 0) {
      const dt = this._lastTs ? Math.min((ts - this._lastTs) / 1000, 0.1) : 0;
      this._lastTs = ts;
      let t = this.time + (dt * this.speed) / this.duration;
      if (t > 1) { if (this.loop) t -= Math.floor(t); else { t = 1; this.playing = false; } }
      this.setTime(t);
    }
    this.renderNow();
    if (this.playing) this._markDirty();
  }

  /** Draw now (resizes the canvas to its box first). */
  renderNow() {
    if (!this.renderer) return;
    const dpr = Math.min(window.devicePixelRatio || 1, this.opts.maxPixelRatio);
    const w = Math.max(this.view.clientWidth, 1), h = Math.max(this.view.clientHeight, 1);
    this.renderer.setPixelRatio(dpr);
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    this._placeCamera();
    this.renderer.setClearColor(BACKGROUNDS[this.background], 1);
    this.renderer.render(this.scene, this.camera);
  }

  // ------------------------------------------------------------------------------ controls
  _buildControls() {
    const bar = el("div", { className: "e4d-bar" }, this.root);
    this.ui.play = el("button", { textContent: "▶", title: "play / pause" }, bar);
    this.ui.play.onclick = () => this.toggle();
    this.ui.slider = el("input", { type: "range", min: 0, max: 1000, step: 1, value: 0, title: "time" }, bar);
    this.ui.slider.oninput = () => { const t = Number(this.ui.slider.value) / 1000; this.pause(); this.setTime(t); };
    this.ui.time = el("span", { className: "e4d-time", textContent: "frame 0" }, bar);
    this.ui.reset = el("button", { textContent: "⟲", title: "reset view" }, bar);
    this.ui.reset.onclick = () => this.resetView();
    this.ui.bg = el("button", { textContent: this.background, title: "background colour" }, bar);
    this.ui.bg.onclick = () => this.cycleBackground();
  }

  _syncControls() {
    if (!this.ui.play) return;
    this.ui.play.textContent = this.playing ? "❚❚" : "▶";
    if (document.activeElement !== this.ui.slider) this.ui.slider.value = String(Math.round(1000 * this.time));
    const f = this.time * Math.max(this.frames - 1, 0);
    this.ui.time.textContent = `frame ${f.toFixed(1)} / ${Math.max(this.frames - 1, 0)}`;
    this.ui.bg.textContent = this.background;
  }

  _bindPointer() {
    bindViewGestures(this.canvas, this);
  }

  dispose() {
    this._disposed = true;
    this.playing = false;
    if (this._raf) cancelAnimationFrame(this._raf);
    if (this._ro) this._ro.disconnect();
    if (this.renderer) { this._disposeScene(); this.renderer.dispose(); this.renderer.forceContextLoss(); }
    this.root.remove();
  }
}
