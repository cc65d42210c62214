// The player is hand-written WebGL2 with no third-party code, so there is nothing to bundle: `npm run build`
// (or `node web/build.mjs`) only checks what ComfyUI will load from this folder.
//  * every .js parses as an ES module (ComfyUI imports each .js under WEB_DIRECTORY as a module),
//  * nothing points at a remote URL (the player must work offline: no CDN),
//  * only e4d_preview.js registers a ComfyUI extension.
// If a library is ever added, build it into web/lib/ here and record its licence in web/LICENSES.md.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
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
  const rel = relative(root, f);
  try {
    execFileSync(process.execPath, ["--check", f], { stdio: "pipe" });
  } catch (e) {
    bad++;
    console.error(`${rel}: does not parse\n${e.stderr}`);
  }
  const src = readFileSync(f, "utf8");
  const url = src.match(/https?:\/\/[^\s"'`)]+/);
  if (url) { bad++; console.error(`${rel}: references ${url[0]} (bundle it instead; users are often offline)`); }
  if (/registerExtension/.test(src) && !rel.endsWith("e4d_preview.js")) {
    bad++; console.error(`${rel}: only js/e4d_preview.js may register a ComfyUI extension`);
  }
  console.log(`${rel}: ${src.length} bytes`);
}
if (bad) { console.error(`${bad} problem(s)`); process.exit(1); }
console.log(`ok: ${files.length} files`);
