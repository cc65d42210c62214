// Builds web/lib/three_gltf.js (npm ci && npm run build here), then runs web/build.mjs's checks on web/.
// esbuild bundles only what three_gltf.js exports, minified; the banner names three.js's version and licence.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const three = JSON.parse(readFileSync(join(here, "node_modules", "three", "package.json"), "utf8")).version;

// three.js announces itself on import (window.__THREE__, and a warning when it is already set). ComfyUI imports
// every .js under web/ at start-up and its frontend has a three.js of its own, so that block would warn in every
// session: the bundle leaves it out and has no side effect on import. The text must match exactly, so a three.js
// upgrade that changes it fails the build instead of silently keeping the block.
const SELF_REGISTRATION = `if ( typeof window !== 'undefined' ) {

	if ( window.__THREE__ ) {

		warn( 'WARNING: Multiple instances of Three.js being imported.' );

	} else {

		window.__THREE__ = REVISION;

	}

}`;

const noSelfRegistration = {
  name: "three-no-self-registration",
  setup(build) {
    build.onLoad({ filter: /three[\\/]build[\\/]three\.core\.js$/ }, (args) => {
      const src = readFileSync(args.path, "utf8");
      if (!src.includes(SELF_REGISTRATION)) throw new Error(`${args.path}: three.js's self-registration block changed`);
      return { contents: src.replace(SELF_REGISTRATION, ""), loader: "js" };
    });
  },
};

await esbuild.build({
  absWorkingDir: here, entryPoints: ["three_gltf.js"], outfile: join("..", "..", "web", "lib", "three_gltf.js"),
  bundle: true, format: "esm", minify: true, target: "es2020", legalComments: "none", logLevel: "warning",
  plugins: [noSelfRegistration],
  banner: { js: `/* three.js npm three@${three}, MIT licence, Copyright 2010-2026 three.js authors. Only the parts ` +
                `tools/web_build/three_gltf.js exports, bundled by tools/web_build/bundle.mjs; see web/LICENSES.md. */` },
});
execFileSync(process.execPath, [join(here, "..", "..", "web", "build.mjs")], { stdio: "inherit" });
