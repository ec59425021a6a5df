#!/usr/bin/env bash
# The installed package on its own: build the wheel, install it with its runtime extras into a
# fresh venv, and run the default demo from an empty folder. Fails unless the run exits 0 and
# prints action events, and unless everything it wrote went to the user cache folder (none into
# the venv). Run alone: bash .ci/wheel-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS

# Build from the files git would ship (tracked or new, not ignored): local caches, engines and
# build output cannot leak into the wheel, and the checkout gets no build/ folder.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' file; do [ -e "$file" ] && printf '%s\0' "$file"; done \
  | tar --null -T - -cf - | tar -xf - -C "$work/src"

# The checkout's pip (and its cache) builds the wheel and installs into a venv made without pip.
[ -x .venv/bin/python ] || { echo "wheel-check: needs .venv first (README's install command)" >&2; exit 1; }
pip=(.venv/bin/python -m pip)
python3 -m venv --without-pip "$work/venv"
"${pip[@]}" wheel -q --no-deps "$work/src" -w "$work/dist"
wheel=$(ls "$work"/dist/streamrec-*.whl)
# As README installs, minus dev; --no-compile: byte-compiling torch would take longer than the run.
"${pip[@]}" --python "$work/venv/bin/python" install -q --no-compile "$wheel[torch,onnxruntime]" torch==2.13.0

mkdir "$work/run" "$work/cache"
touch "$work/before-run"
(cd "$work/run" && XDG_CACHE_HOME="$work/cache" "$work/venv/bin/streamrec" --set events.publish=null >events.jsonl) || {
  echo "wheel-check: the installed demo exited with an error" >&2; exit 1; }

events=$(grep -c '"type":"action_start"' "$work/run/events.jsonl" || true)
written_in_venv=$(find "$work/venv" -newer "$work/before-run" -type f -not -path '*/__pycache__/*' | head -5)
if [ "$events" -eq 0 ]; then
  echo "wheel-check: the installed demo printed no action_start event" >&2; exit 1
elif [ -n "$written_in_venv" ]; then
  echo "wheel-check: the installed demo wrote into the venv: $written_in_venv" >&2; exit 1
elif ! ls "$work"/cache/streamrec/videos/demo_*.mp4 >/dev/null 2>&1; then
  echo "wheel-check: no demo video in \$XDG_CACHE_HOME/streamrec/videos" >&2; exit 1
fi
echo "wheel-check: $(basename "$wheel") installed and ran the demo from another folder ($events action events, $((SECONDS - start)) s)"
