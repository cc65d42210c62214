// Checks what ComfyUI loads from this folder (`node build.mjs`, or `npm run check`; needs nothing installed):
//  * every .js parses as an ES module (ComfyUI imports each .js under WEB_DIRECTORY as a module),
//  * nothing points at a remote URL (the players must work offline: no CDN); the three.js bundle may hold W3C
//    namespace names (createElementNS), which are identifiers, not addresses,
//  * only e4d_preview.js registers a ComfyUI extension,
//  * the committed bundle lib/three_gltf.js is the three.js version tools/web_build/package.json pins, is small, and has
//    no side effect on import.
// The bundle itself is built by ../tools/web_build (npm ci && npm run build there), outside this folder because ComfyUI
// would import every .js of a node_modules/ here.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const BUNDLE = "lib/three_gltf.js";
const BUNDLE_MAX_BYTES = 700_000; // three r187's WebGLRenderer + GLTFLoader + AnimationMixer: about 640 kB minified
const NAMESPACES = /^http:\/\/www\.w3\.org\/(1999\/xhtml|2000\/svg)$/;
const buildPkg = join(root, "..", "tools", "web_build", "package.json"); // absent where only web/ is installed
const THREE_PIN = existsSync(buildPkg) ? JSON.parse(readFileSync(buildPkg, "utf8")).devDependencies.three : null;

const files = [];
(function walk(d) {
  for (const n of readdirSync(d)) {
    const p = join(d, n);
    if (n === "node_modules") continue;
    if (statSync(p).isDirectory()) walk(p);
    else if (n.endsWith(".js")) files.push(p);
  }
})(root);

let bad = 0;
for (const f of files) {
  const rel = relative(root, f).split("\\").join("/");
  try {
    execFileSync(process.execPath, ["--check", f], { stdio: "pipe" });
  } catch (e) {
    bad++;
    console.error(`${rel}: does not parse\n${e.stderr}`);
  }
  const src = readFileSync(f, "utf8");
  const urls = [...src.matchAll(/https?:\/\/[^\s"'`)]+/g)].map((m) => m[0]).filter((u) => !NAMESPACES.test(u));
  if (urls.length) { bad++; console.error(`${rel}: references ${urls[0]} (bundle it instead; users are often offline)`); }
  if (/registerExtension/.test(src) && !rel.endsWith("e4d_preview.js")) {
    bad++; console.error(`${rel}: only js/e4d_preview.js may register a ComfyUI extension`);
  }
  if (rel === BUNDLE) {
    if (THREE_PIN && !src.startsWith(`/* three.js npm three@${THREE_PIN},`)) {
      bad++; console.error(`${rel}: not built from three@${THREE_PIN} (tools/web_build/package.json); run npm ci && ` +
                           `npm run build in tools/web_build/`);
    }
    if (src.length > BUNDLE_MAX_BYTES) {
      bad++; console.error(`${rel}: ${src.length} bytes > ${BUNDLE_MAX_BYTES}; export less from tools/web_build/three_gltf.js`);
    }
    if (/__THREE__\s*=/.test(src)) { bad++; console.error(`${rel}: still sets window.__THREE__ on import`); }
  }
  console.log(`${rel}: ${src.length} bytes`);
}
if (!files.some((f) => relative(root, f).split("\\").join("/") === BUNDLE)) {
  bad++; console.error(`${BUNDLE} is missing: run npm ci && npm run build in tools/web_build/`);
}
if (bad) { console.error(`${bad} problem(s)`); process.exit(1); }
console.log(`ok: ${files.length} files`);
