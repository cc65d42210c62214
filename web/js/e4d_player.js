// Efficient4D 4D Gaussian player: WebGL2, slices the 4D Gaussians at time t in the vertex shader
// (Yang et al. 2024, eq. 4-6) and depth-sorts in a Web Worker (16-bit counting sort).
//
// This module has NO side effects on import: ComfyUI imports every .js file under WEB_DIRECTORY as an
// extension, so only e4d_preview.js registers anything. The sort worker is built from a function's source
// (a Blob URL) for the same reason: a separate worker file would be imported into the page as a module.
//
// File format: see e4d/export/compact4d.py ("E4DC" v1). Camera conventions follow e4d/cameras.py:
// world +Z up, OpenCV camera axes (x right, y down, z forward), azimuth 0 = +X, counter-clockwise from +Z.

const MAGIC = "E4DC";
const SPLATS_PER_ROW = 1024; // texture row = 1024 splats x 4 RGBA32UI texels
const DEG = Math.PI / 180;

/** Parse an "E4DC" ArrayBuffer into { header, count, means: Float32Array[N*4], cov: Float32Array[N*10], rgba: Uint8Array[N*4] }. */
export function parseCompact4D(buffer) {
  const u8 = new Uint8Array(buffer);
  const magic = String.fromCharCode(u8[0], u8[1], u8[2], u8[3]);
  if (magic !== MAGIC) throw new Error(`not an Efficient4D compact file (magic "${magic}", expected "${MAGIC}")`);
  const dv = new DataView(buffer);
  const version = dv.getUint32(4, true), count = dv.getUint32(8, true), jlen = dv.getUint32(12, true);
  if (version !== 1) throw new Error(`compact 4D version ${version} is not supported by this player (knows 1)`);
  const header = JSON.parse(new TextDecoder().decode(u8.subarray(16, 16 + jlen)));
  const out = { header, count }, base = 16 + jlen; // field offsets count from the end of the header
  for (const f of header.fields) {
    const n = f.shape.reduce((a, b) => a * b, 1), o = base + f.offset;
    const bytes = f.dtype === "float32" ? 4 * n : n;
    if (o + bytes > buffer.byteLength) throw new Error(`compact 4D file is truncated (field ${f.name})`);
    out[f.name] = f.dtype === "float32" ? new Float32Array(buffer.slice(o, o + bytes)) : new Uint8Array(buffer.slice(o, o + bytes));
  }
  if (!out.means || !out.cov || !out.rgba) throw new Error("compact 4D file lacks means/cov/rgba arrays");
  return out;
}

// ------------------------------------------------------------------------------------------ sort worker
// Runs in the worker. Holds sliced-mean inputs (mean xyz t, velocity, temporal variance) and answers
// {view: camera z row of w2c, time, cull, isStatic} with the back-to-front order of the Gaussians alive at t.
function sortWorkerMain(self) {
  let n = 0, mean = null, vel = null, vt = null;
  let pending = null, busy = false;
  function sortNow(req) {
    const t0 = performance.now();
    const { view, time, isStatic } = req;
    const maxD2 = -2 * Math.log(req.cull); // marginal > cull  <=>  dt^2 / var_t < -2 ln(cull)
    const depth = new Float32Array(n);
    const alive = new Uint32Array(n);
    let m = 0, lo = Infinity, hi = -Infinity;
    for (let i = 0; i < n; i++) {
      let x = mean[4 * i], y = mean[4 * i + 1], z = mean[4 * i + 2];
      if (!isStatic) {
        const dt = time - mean[4 * i + 3];
        if (dt * dt >= maxD2 * vt[i]) continue;
        x += vel[3 * i] * dt; y += vel[3 * i + 1] * dt; z += vel[3 * i + 2] * dt;
      }
      const d = view[0] * x + view[1] * y + view[2] * z + view[3];
      depth[m] = d; alive[m] = i; m++;
      if (d < lo) lo = d;
      if (d > hi) hi = d;
    }
    // 16-bit counting sort, far to near (the shader blends back to front).
    const B = 65536, counts = new Uint32Array(B), key = new Uint16Array(m);
    const scale = hi > lo ? (B - 1) / (hi - lo) : 0;
    for (let k = 0; k < m; k++) { const b = ((hi - depth[k]) * scale) | 0; key[k] = b; counts[b]++; }
    let acc = 0;
    for (let b = 0; b < B; b++) { const c = counts[b]; counts[b] = acc; acc += c; }
    const order = new Uint32Array(Math.max(m, 1));
    for (let k = 0; k < m; k++) order[counts[key[k]]++] = alive[k];
    self.postMessage({ order, visible: m, id: req.id, sortMs: performance.now() - t0 }, [order.buffer]);
  }
  function pump() {
    if (busy || !pending) return;
    busy = true;
    const req = pending; pending = null;
    try { sortNow(req); } finally { busy = false; }
    if (pending) setTimeout(pump, 0);
  }
  self.onmessage = (e) => {
    const d = e.data;
    if (d.init) { n = d.n; mean = d.mean; vel = d.vel; vt = d.vt; return; }
    pending = d; // only the newest request matters
    setTimeout(pump, 0);
  };
}

// ------------------------------------------------------------------------------------------ shaders
const VERT = `#version 300 es
precision highp float;
precision highp int;
precision highp usampler2D;
uniform usampler2D u_data;   // 4 texels per Gaussian: mean xyzt | xx xy xz xt | yy yz yt zz | zt tt rgba -
uniform mat4 u_view;         // world -> camera, OpenCV axes
uniform vec2 u_focal;        // fx, fy in pixels
uniform vec2 u_viewport;     // width, height in pixels
uniform float u_time;
uniform float u_cull;        // temporal-marginal cull threshold (paper: 0.05)
uniform int u_static;        // 1 = draw the 4D Gaussians as static 3D ones (benchmark baseline)
in vec2 a_corner;            // quad corner, in standard deviations
in uint a_index;             // Gaussian index, back-to-front order (instanced)
out vec4 v_color;
out vec2 v_pos;

void main() {
  gl_Position = vec4(0.0, 0.0, 2.0, 1.0);  // culled unless we reach the end
  ivec2 base = ivec2(int((a_index & 1023u) << 2), int(a_index >> 10));
  vec4 m = uintBitsToFloat(texelFetch(u_data, base, 0));
  vec4 c0 = uintBitsToFloat(texelFetch(u_data, base + ivec2(1, 0), 0));
  vec4 c1 = uintBitsToFloat(texelFetch(u_data, base + ivec2(2, 0), 0));
  uvec4 d3 = texelFetch(u_data, base + ivec2(3, 0), 0);
  vec2 c2 = uintBitsToFloat(d3.xy);
  // Sigma (4x4): xx xy xz xt / yy yz yt / zz zt / tt
  mat3 S = mat3(c0.x, c0.y, c0.z,  c0.y, c1.x, c1.y,  c0.z, c1.y, c1.w);
  vec3 mu = m.xyz;
  float marginal = 1.0;
  if (u_static == 0) {
    // eq. 6: temporal marginal; eq. 5: conditional mean and covariance of (x, y, z) given t.
    float tt = max(c2.y, 1e-20);
    float dt = u_time - m.w;
    marginal = exp(-0.5 * dt * dt / tt);
    if (marginal <= u_cull) return;
    vec3 cross = vec3(c0.w, c1.z, c2.x);
    mu += cross * (dt / tt);
    S -= outerProduct(cross, cross) / tt;
  }
  vec4 cam = u_view * vec4(mu, 1.0);
  if (cam.z < 0.02) return;
  vec2 px = u_focal * cam.xy / cam.z;  // pixels from the image centre, y down
  vec2 lim = 0.65 * u_viewport + 64.0;
  if (abs(px.x) > lim.x || abs(px.y) > lim.y) return;
  float iz = 1.0 / cam.z;
  // Jacobian of the pinhole projection (rows: u, v), stored as a mat3 with a zero third row.
  mat3 J = mat3(u_focal.x * iz, 0.0, 0.0,
                0.0, u_focal.y * iz, 0.0,
                -u_focal.x * cam.x * iz * iz, -u_focal.y * cam.y * iz * iz, 0.0);
  mat3 T = J * mat3(u_view);
  mat3 C = T * S * transpose(T);
  float a = C[0][0] + 0.3, b = C[0][1], d = C[1][1] + 0.3;  // +0.3 px^2: the usual anti-aliasing dilation
  float mid = 0.5 * (a + d), rad = length(vec2(0.5 * (a - d), b));
  float l1 = mid + rad, l2 = mid - rad;
  if (l2 <= 0.0) return;
  vec2 e1 = abs(b) > 1e-12 ? normalize(vec2(b, l1 - a)) : (a >= d ? vec2(1.0, 0.0) : vec2(0.0, 1.0));
  vec2 e2 = vec2(-e1.y, e1.x);
  uint rgba = d3.z;
  v_color = vec4(float(rgba & 255u), float((rgba >> 8) & 255u), float((rgba >> 16) & 255u), float(rgba >> 24)) / 255.0;
  v_color.a *= marginal;
  if (v_color.a < 1.0 / 255.0) return;
  // Quad half-size in standard deviations: where alpha * exp(-r^2/2) falls below 1/255, at most 3.
  // Faint Gaussians get smaller quads, which saves fragments (the cost that dominates).
  float ext = min(3.0, sqrt(2.0 * log(255.0 * v_color.a)));
  vec2 corner = a_corner * (ext / 3.0);
  vec2 p = px + corner.x * min(sqrt(l1), 2048.0) * e1 + corner.y * min(sqrt(l2), 2048.0) * e2;
  v_pos = corner;
  gl_Position = vec4(2.0 * p.x / u_viewport.x, -2.0 * p.y / u_viewport.y, 0.0, 1.0);
}`;

const FRAG = `#version 300 es
precision highp float;
in vec4 v_color;
in vec2 v_pos;
out vec4 o_color;
void main() {
  float r2 = dot(v_pos, v_pos);
  if (r2 > 9.0) discard;
  float alpha = min(0.99, v_color.a * exp(-0.5 * r2));
  if (alpha < 1.0 / 255.0) discard;
  o_color = vec4(v_color.rgb * alpha, alpha);  // premultiplied, blended back to front
}`;

const BACKGROUNDS = { white: [1, 1, 1], black: [0, 0, 0], grey: [0.5, 0.5, 0.5] };

let styleInjected = false;
export function injectStyle() {
  if (styleInjected || typeof document === "undefined") return;
  styleInjected = true;
  const s = document.createElement("style");
  s.textContent = `
.e4d-player{display:flex;flex-direction:column;width:100%;height:100%;min-height:200px;font:12px sans-serif;color:#ddd;background:#222;box-sizing:border-box;user-select:none}
.e4d-view{position:relative;flex:1 1 auto;min-height:120px;overflow:hidden;outline:none}
.e4d-view canvas{position:absolute;inset:0;width:100%;height:100%;display:block;touch-action:none;cursor:grab}
.e4d-msg{position:absolute;left:6px;top:4px;pointer-events:none;color:#888;text-shadow:0 0 2px #000}
.e4d-bar{display:flex;align-items:center;gap:4px;padding:3px 4px;flex:0 0 auto;flex-wrap:wrap}
.e4d-bar button,.e4d-bar select{background:#333;color:#ddd;border:1px solid #555;border-radius:3px;padding:1px 6px;font:inherit;cursor:pointer}
.e4d-bar input[type=range]{flex:1 1 80px;min-width:60px}
.e4d-bar label{display:flex;align-items:center;gap:2px}
.e4d-time{min-width:5.5em;text-align:right;font-variant-numeric:tabular-nums}`;
  document.head.appendChild(s);
}

export function el(tag, props = {}, parent = null) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  if (parent) parent.appendChild(e);
  return e;
}

function compile(gl, type, src) {
  const sh = gl.createShader(type);
  gl.shaderSource(sh, src);
  gl.compileShader(sh);
  if (!gl.getShaderParameter(sh, gl.COMPILE_STATUS)) throw new Error("shader: " + gl.getShaderInfoLog(sh));
  return sh;
}

/**
 * Interactive 4D Gaussian player inside `container`.
 * Options: background ("white"|"black"|"grey"), autoplay (bool), duration (seconds for the whole clip at speed 1),
 * loop (bool), fov (vertical, degrees), controls (bool: show the control bar).
 */
/** Pointer gestures on a player's canvas, shared by the 4D and the mesh player: drag orbits (right or middle button,
 * Shift or Ctrl pan where ``view`` can pan), the wheel zooms, a double click resets the view. Every event stops
 * here, so ComfyUI's graph canvas underneath does not also drag or zoom. */
export function bindViewGestures(c, view) {
  let drag = null;
  c.style.touchAction = "none";
  c.addEventListener("contextmenu", (e) => e.preventDefault());
  c.addEventListener("pointerdown", (e) => {
    e.preventDefault(); e.stopPropagation();
    const pan = typeof view.pan === "function" && (e.button === 2 || e.button === 1 || e.shiftKey || e.ctrlKey);
    drag = { x: e.clientX, y: e.clientY, pan };
    c.setPointerCapture?.(e.pointerId);
    c.style.cursor = "grabbing";
  });
  c.addEventListener("pointermove", (e) => {
    if (!drag) return;
    e.preventDefault(); e.stopPropagation();
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    drag.x = e.clientX; drag.y = e.clientY;
    if (drag.pan) view.pan(dx, dy); else view.orbit(-0.4 * dx, 0.4 * dy);
  });
  const end = (e) => { drag = null; c.style.cursor = ""; c.releasePointerCapture?.(e.pointerId); };
  c.addEventListener("pointerup", end);
  c.addEventListener("pointercancel", end);
  c.addEventListener("wheel", (e) => {
    e.preventDefault(); e.stopPropagation();
    view.zoom(Math.exp(Math.max(-100, Math.min(100, e.deltaY)) * 0.002));
  }, { passive: false });
  c.addEventListener("dblclick", (e) => { e.stopPropagation(); view.resetView(); });
}

export class E4DPlayer {
  constructor(container, options = {}) {
    injectStyle();
    this.opts = Object.assign({ background: "white", autoplay: true, duration: 3, loop: true, fov: 49.1,
                                controls: true, maxPixelRatio: 2 }, options);
    this.container = container;
    this.root = el("div", { className: "e4d-player" }, container);
    this.view = el("div", { className: "e4d-view" }, this.root);
    this.canvas = el("canvas", {}, this.view);
    this.msg = el("div", { className: "e4d-msg", textContent: "no 4D Gaussians loaded" }, this.view);
    this.time = 0; this.t0 = 0; this.t1 = 1;
    this.playing = false; this.speed = 1; this.loop = !!this.opts.loop;
    this.background = this.opts.background in BACKGROUNDS ? this.opts.background : "white";
    this.isStatic = false; // true: ignore time (benchmark baseline = a static 3DGS of the same count)
    this.count = 0; this.visible = 0;
    this.stats = { sortMs: 0, drawMs: 0, sorts: 0, frames: 0 };
    this._dirty = true; this._raf = 0; this._lastTs = 0; this._sortId = 0; this._sortedId = -1;
    this._sortWaiters = [];
    this._cam = { az: 0, el: 15, r: 1.8, target: [0, 0, 0] };
    this._home = { ...this._cam, target: [0, 0, 0] };
    this._initGL();
    if (this.opts.controls) this._buildControls();
    this._bindPointer();
    this._ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(() => this._markDirty()) : null;
    if (this._ro) this._ro.observe(this.view);
    this._markDirty();
  }

  // ------------------------------------------------------------------------------ GL setup
  _initGL() {
    const gl = this.canvas.getContext("webgl2", { antialias: false, premultipliedAlpha: true, alpha: false,
                                                  preserveDrawingBuffer: true });
    if (!gl) { this.msg.textContent = "WebGL2 is not available in this browser"; this.gl = null; return; }
    this.gl = gl;
    const prog = gl.createProgram();
    gl.attachShader(prog, compile(gl, gl.VERTEX_SHADER, VERT));
    gl.attachShader(prog, compile(gl, gl.FRAGMENT_SHADER, FRAG));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error("link: " + gl.getProgramInfoLog(prog));
    this.prog = prog;
    gl.useProgram(prog);
    this.u = {};
    for (const k of ["u_data", "u_view", "u_focal", "u_viewport", "u_time", "u_cull", "u_static"])
      this.u[k] = gl.getUniformLocation(prog, k);
    this.vao = gl.createVertexArray();
    gl.bindVertexArray(this.vao);
    const quad = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, quad);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-3, -3, 3, -3, -3, 3, 3, 3]), gl.STATIC_DRAW); // strip
    const aCorner = gl.getAttribLocation(prog, "a_corner");
    gl.enableVertexAttribArray(aCorner);
    gl.vertexAttribPointer(aCorner, 2, gl.FLOAT, false, 0, 0);
    this.indexBuf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, this.indexBuf);
    const aIndex = gl.getAttribLocation(prog, "a_index");
    gl.enableVertexAttribArray(aIndex);
    gl.vertexAttribIPointer(aIndex, 1, gl.UNSIGNED_INT, 0, 0);
    gl.vertexAttribDivisor(aIndex, 1);
    this.tex = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, this.tex);
    for (const [k, v] of [[gl.TEXTURE_MIN_FILTER, gl.NEAREST], [gl.TEXTURE_MAG_FILTER, gl.NEAREST],
                          [gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE], [gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE]])
      gl.texParameteri(gl.TEXTURE_2D, k, v);
    gl.uniform1i(this.u.u_data, 0);
    gl.disable(gl.DEPTH_TEST);
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
  }

  _startWorker() {
    if (this.worker) this.worker.terminate();
    const src = `(${sortWorkerMain.toString()})(self);`;
    this._workerUrl = URL.createObjectURL(new Blob([src], { type: "application/javascript" }));
    this.worker = new Worker(this._workerUrl);
    this.worker.onmessage = (e) => this._onSorted(e.data);
  }

  // ------------------------------------------------------------------------------ loading
  /** Fetch and show a compact 4D file; resolves once the first sorted frame is drawn. */
  async load(url, options = {}) {
    this.msg.textContent = "loading 4D Gaussians…";
    const res = await fetch(url);
    if (!res.ok) { this.msg.textContent = `could not load ${url}: HTTP ${res.status}`; throw new Error(this.msg.textContent); }
    return this.loadBuffer(await res.arrayBuffer(), options);
  }

  /** Show an "E4DC" ArrayBuffer (see parseCompact4D). */
  async loadBuffer(buffer, options = {}) {
    const data = parseCompact4D(buffer);
    for (const [k, v] of Object.entries(options)) if (v !== undefined && v !== null) this.opts[k] = v;
    if (options.background && options.background in BACKGROUNDS) this.background = options.background;
    this._setData(data); // requests the first sort
    await this.whenSorted();
    this.renderNow();
    if (this.opts.autoplay) this.play();
    return data.header;
  }

  _setData(data) {
    const gl = this.gl, n = data.count;
    this.count = n; this.header = data.header;
    const tr = data.header.time_range || [0, 1];
    this.t0 = tr[0]; this.t1 = tr[1];
    this.cull = data.header.cull_threshold ?? 0.05;
    this.time = Math.min(Math.max(this.time, this.t0), this.t1);
    // Texture: 4 RGBA32UI texels (16 words) per Gaussian; floats are stored bit-exact.
    const rows = Math.ceil(n / SPLATS_PER_ROW);
    const words = new Uint32Array(SPLATS_PER_ROW * 4 * rows * 4);
    const f = new Float32Array(words.buffer);
    const rgba32 = new Uint32Array(data.rgba.buffer, data.rgba.byteOffset, n);
    const mean = data.means, cov = data.cov;
    const vel = new Float32Array(3 * n), vt = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const o = 16 * i, c = 10 * i;
      f[o] = mean[4 * i]; f[o + 1] = mean[4 * i + 1]; f[o + 2] = mean[4 * i + 2]; f[o + 3] = mean[4 * i + 3];
      for (let k = 0; k < 10; k++) f[o + 4 + k] = cov[c + k];
      words[o + 14] = rgba32[i];
      const tt = Math.max(cov[c + 9], 1e-20);
      vt[i] = tt; vel[3 * i] = cov[c + 3] / tt; vel[3 * i + 1] = cov[c + 6] / tt; vel[3 * i + 2] = cov[c + 8] / tt;
    }
    if (gl) {
      gl.bindTexture(gl.TEXTURE_2D, this.tex);
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA32UI, SPLATS_PER_ROW * 4, rows, 0, gl.RGBA_INTEGER, gl.UNSIGNED_INT, words);
    }
    this._startWorker();
    this.worker.postMessage({ init: true, n, mean: mean.slice(), vel, vt });
    // Frame the object: orbit its centre at a radius that fits its bounding sphere in the field of view.
    const c = data.header.center || [0, 0, 0], rad = data.header.radius || 0.5;
    const r = Math.max(rad / Math.sin(0.5 * this.opts.fov * DEG) * 1.25, 0.1);
    this._home = { az: this.opts.azimuth ?? 0, el: this.opts.elevation ?? 15, r, target: c.slice() };
    this.resetView();
    this.msg.textContent = "";
    this._syncControls();
  }

  // ------------------------------------------------------------------------------ camera
  /** Camera state as e4d/cameras.py: position r*(cos el cos az, cos el sin az, sin el) + target, looking at target. */
  cameraMatrices() {
    const { az, el, r, target } = this._cam;
    const a = az * DEG, e = el * DEG;
    const eye = [target[0] + r * Math.cos(e) * Math.cos(a), target[1] + r * Math.cos(e) * Math.sin(a),
                 target[2] + r * Math.sin(e)];
    const fwd = norm3([target[0] - eye[0], target[1] - eye[1], target[2] - eye[2]]);
    const right = norm3(cross3(fwd, [0, 0, 1]));
    const down = cross3(fwd, right);
    const R = [right, down, fwd];
    const t = R.map((row) => -(row[0] * eye[0] + row[1] * eye[1] + row[2] * eye[2]));
    // column-major 4x4 of w2c
    const view = new Float32Array([R[0][0], R[1][0], R[2][0], 0, R[0][1], R[1][1], R[2][1], 0,
                                   R[0][2], R[1][2], R[2][2], 0, t[0], t[1], t[2], 1]);
    return { view, zrow: [R[2][0], R[2][1], R[2][2], t[2]], right, down, eye };
  }

  orbit(dAzDeg, dElDeg) {
    this._cam.az += dAzDeg;
    this._cam.el = Math.max(-89, Math.min(89, this._cam.el + dElDeg));
    this._viewChanged();
  }

  pan(dxPx, dyPx) {
    const { right, down } = this.cameraMatrices();
    const h = Math.max(this.canvas.clientHeight, 1);
    const k = (2 * this._cam.r * Math.tan(0.5 * this.opts.fov * DEG)) / h; // world units per pixel at the target
    for (let i = 0; i < 3; i++) this._cam.target[i] -= k * (dxPx * right[i] + dyPx * down[i]);
    this._viewChanged();
  }

  zoom(factor) {
    this._cam.r = Math.max(0.05, Math.min(100, this._cam.r * factor));
    this._viewChanged();
  }

  resetView() {
    this._cam = { ...this._home, target: this._home.target.slice() };
    this._viewChanged();
  }

  /** Set any of azimuth / elevation (degrees), radius and target (world xyz). */
  setCamera({ az, el, r, target }) {
    if (target !== undefined) this._cam.target = target.slice();
    if (az !== undefined) this._cam.az = az;
    if (el !== undefined) this._cam.el = el;
    if (r !== undefined) this._cam.r = r;
    this._viewChanged();
  }

  _viewChanged() { this._requestSort(); this._markDirty(); }

  // ------------------------------------------------------------------------------ time / playback
  setTime(t) {
    this.time = Math.min(Math.max(t, this.t0), this.t1);
    this._requestSort();
    this._markDirty();
    this._syncControls();
  }

  play() { if (!this.count) return; this.playing = true; this._lastTs = 0; this._syncControls(); this._markDirty(); }
  pause() { this.playing = false; this._syncControls(); }
  toggle() { this.playing ? this.pause() : this.play(); }
  setSpeed(s) { this.speed = s; this._syncControls(); }
  setLoop(v) { this.loop = !!v; this._syncControls(); }
  setBackground(name) { if (name in BACKGROUNDS) { this.background = name; this._markDirty(); this._syncControls(); } }
  cycleBackground() {
    const names = Object.keys(BACKGROUNDS);
    this.setBackground(names[(names.indexOf(this.background) + 1) % names.length]);
  }
  setStatic(v) { this.isStatic = !!v; this._requestSort(); this._markDirty(); }

  // ------------------------------------------------------------------------------ sorting
  _requestSort() {
    if (!this.worker || !this.count) return;
    const { zrow } = this.cameraMatrices();
    this._sortId += 1;
    this.worker.postMessage({ view: zrow, time: this.time, cull: this.cull, isStatic: this.isStatic, id: this._sortId });
  }

  _onSorted(d) {
    const gl = this.gl;
    if (gl) {
      gl.bindBuffer(gl.ARRAY_BUFFER, this.indexBuf);
      gl.bufferData(gl.ARRAY_BUFFER, d.order, gl.DYNAMIC_DRAW);
    }
    this.visible = d.visible;
    this._sortedId = d.id;
    this.stats.sortMs = d.sortMs; this.stats.sorts += 1;
    this._markDirty();
    const waiting = this._sortWaiters;
    this._sortWaiters = waiting.filter((w) => d.id < w.id);
    for (const w of waiting) if (d.id >= w.id) w.resolve();
  }

  /** Resolves when the worker has answered the newest sort request made so far (or a later one). */
  whenSorted() {
    const id = this._sortId;
    if (this._sortedId >= id) return Promise.resolve();
    return new Promise((resolve) => this._sortWaiters.push({ id, resolve }));
  }

  // ------------------------------------------------------------------------------ drawing
  _markDirty() {
    this._dirty = true;
    if (!this._raf && typeof requestAnimationFrame !== "undefined")
      this._raf = requestAnimationFrame((ts) => this._frame(ts));
  }

  _frame(ts) {
    this._raf = 0;
    if (this._disposed) return;
    if (!this.canvas.isConnected) { // e.g. another workflow tab is shown: idle, look again later
      this._lastTs = 0;
      setTimeout(() => this._markDirty(), 500);
      return;
    }
    if (this.playing && this.count) {
      if (this._lastTs) {
        const span = this.t1 - this.t0;
        let t = this.time + ((ts - this._lastTs) / 1000) * this.speed * span / Math.max(this.opts.duration, 1e-3);
        if (t > this.t1) { if (this.loop) t = this.t0 + ((t - this.t0) % span); else { t = this.t1; this.playing = false; } }
        this.setTime(t);
      }
      this._lastTs = ts;
    }
    if (this._dirty) this.renderNow();
    if (this.playing) this._markDirty();
  }

  _resize() {
    const dpr = Math.min(window.devicePixelRatio || 1, this.opts.maxPixelRatio);
    const w = Math.max(1, Math.round(this.view.clientWidth * dpr)), h = Math.max(1, Math.round(this.view.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) { this.canvas.width = w; this.canvas.height = h; }
  }

  /** Draw one frame synchronously with the current order. Returns the elapsed CPU time of the draw call (ms). */
  renderNow({ finish = false } = {}) {
    const gl = this.gl;
    if (!gl) return 0;
    this._dirty = false;
    this._resize();
    const t0 = performance.now();
    const W = this.canvas.width, H = this.canvas.height;
    gl.viewport(0, 0, W, H);
    const bg = BACKGROUNDS[this.background];
    gl.clearColor(bg[0], bg[1], bg[2], 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    if (this.count && this.visible) {
      const f = 0.5 * H / Math.tan(0.5 * this.opts.fov * DEG);
      gl.useProgram(this.prog);
      gl.bindVertexArray(this.vao);
      gl.activeTexture(gl.TEXTURE0);
      gl.bindTexture(gl.TEXTURE_2D, this.tex);
      gl.uniformMatrix4fv(this.u.u_view, false, this.cameraMatrices().view);
      gl.uniform2f(this.u.u_focal, f, f);
      gl.uniform2f(this.u.u_viewport, W, H);
      gl.uniform1f(this.u.u_time, this.time);
      gl.uniform1f(this.u.u_cull, this.cull);
      gl.uniform1i(this.u.u_static, this.isStatic ? 1 : 0);
      gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, this.visible);
    }
    if (finish) { const px = new Uint8Array(4); gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px); }
    const ms = performance.now() - t0;
    this.stats.drawMs = ms; this.stats.frames += 1;
    return ms;
  }

  /** Frame-time benchmark: sorts once, then draws `frames` frames to completion. Returns figures in ms. */
  async benchmark({ frames = 20, isStatic = false, time = null } = {}) {
    this.pause();
    this.setStatic(isStatic);
    if (time !== null) this.setTime(time);
    await this.whenSorted();
    this.renderNow({ finish: true }); // warm-up (shader compile, texture upload)
    const ts = [];
    for (let i = 0; i < frames; i++) ts.push(this.renderNow({ finish: true }));
    ts.sort((a, b) => a - b);
    const sortMs = [];
    for (let i = 0; i < 5; i++) { this.orbit(1, 0); await this.whenSorted(); sortMs.push(this.stats.sortMs); }
    sortMs.sort((a, b) => a - b);
    return { frameMsMedian: ts[ts.length >> 1], frameMsMin: ts[0], frameMsMean: ts.reduce((a, b) => a + b, 0) / ts.length,
             sortMsMedian: sortMs[sortMs.length >> 1], visible: this.visible, count: this.count,
             width: this.canvas.width, height: this.canvas.height, isStatic };
  }

  // ------------------------------------------------------------------------------ UI
  _buildControls() {
    const bar = el("div", { className: "e4d-bar" }, this.root);
    this.ui = {};
    this.ui.play = el("button", { textContent: "▶", title: "play / pause (space; arrows step the time)" }, bar);
    this.ui.play.onclick = () => this.toggle();
    this.ui.slider = el("input", { type: "range", min: 0, max: 1000, step: 1, value: 0, title: "time" }, bar);
    this.ui.slider.oninput = () => {
      const t = this.t0 + (this.t1 - this.t0) * Number(this.ui.slider.value) / 1000; // read before pause() re-syncs
      this.pause();
      this.setTime(t);
    };
    this.ui.time = el("span", { className: "e4d-time", textContent: "t=0.000" }, bar);
    const loopLabel = el("label", { title: "loop" }, bar);
    this.ui.loop = el("input", { type: "checkbox", checked: this.loop }, loopLabel);
    loopLabel.appendChild(document.createTextNode("loop"));
    this.ui.loop.onchange = () => this.setLoop(this.ui.loop.checked);
    this.ui.speed = el("select", { title: "playback speed" }, bar);
    for (const s of [0.25, 0.5, 1, 2, 4]) el("option", { value: String(s), textContent: `${s}×`, selected: s === 1 }, this.ui.speed);
    this.ui.speed.onchange = () => this.setSpeed(parseFloat(this.ui.speed.value));
    this.ui.reset = el("button", { textContent: "⟲", title: "reset view" }, bar);
    this.ui.reset.onclick = () => this.resetView();
    this.ui.bg = el("button", { textContent: "bg", title: "background colour" }, bar);
    this.ui.bg.onclick = () => this.cycleBackground();
    for (const c of bar.querySelectorAll("button,select,input"))
      for (const ev of ["pointerdown", "mousedown", "wheel", "keydown"]) c.addEventListener(ev, (e) => e.stopPropagation());
  }

  _syncControls() {
    if (!this.ui) return;
    this.ui.play.textContent = this.playing ? "❚❚" : "▶";
    const span = this.t1 - this.t0 || 1;
    if (document.activeElement !== this.ui.slider) this.ui.slider.value = String(Math.round(1000 * (this.time - this.t0) / span));
    this.ui.time.textContent = `t=${this.time.toFixed(3)}`;
    this.ui.loop.checked = this.loop;
    this.ui.bg.textContent = this.background;
  }

  _bindPointer() {
    bindViewGestures(this.canvas, this);
    // Keyboard, while the view has focus (click it): space play/pause, arrows step time, r reset, b background.
    this.view.tabIndex = 0;
    this.view.addEventListener("pointerdown", () => this.view.focus({ preventScroll: true }));
    this.view.addEventListener("keydown", (e) => {
      const step = 0.01 * (this.t1 - this.t0) * (e.shiftKey ? 10 : 1);
      const act = { " ": () => this.toggle(), ArrowLeft: () => { this.pause(); this.setTime(this.time - step); },
                    ArrowRight: () => { this.pause(); this.setTime(this.time + step); },
                    r: () => this.resetView(), b: () => this.cycleBackground() }[e.key];
      if (!act) return;
      e.preventDefault(); e.stopPropagation(); // keep ComfyUI's global shortcuts out of it
      act();
    });
  }

  dispose() {
    this._disposed = true;
    this.playing = false;
    if (this._raf) cancelAnimationFrame(this._raf);
    if (this._ro) this._ro.disconnect();
    if (this.worker) this.worker.terminate();
    if (this._workerUrl) URL.revokeObjectURL(this._workerUrl);
    const ext = this.gl && this.gl.getExtension("WEBGL_lose_context");
    if (ext) ext.loseContext();
    this.root.remove();
  }
}

function cross3(a, b) { return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]; }
function norm3(v) { const l = Math.hypot(v[0], v[1], v[2]) || 1; return [v[0] / l, v[1] / l, v[2] / l]; }
