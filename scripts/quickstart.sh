#!/usr/bin/env bash
# scripts/quickstart.sh — the main job on the embedded default: the small
# glyph benchmark (fonts-noto-core) end to end on this machine's CPU.
#   data → body (3-minute budget) → prepare (500 SAM trajectories) → eval
#   (600 meta-test episodes, 5-way 1-shot, every baseline).
# Outputs go to ./work/quickstart (or $1). Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-work/quickstart}
train=build/ltdi-train
test -x "$train" || { echo "quickstart: build/ltdi-train missing — run scripts/setup.sh" >&2; exit 1; }
mkdir -p "$out"

if [ ! -f "$out/glyphs/manifest.json" ]; then
  rm -rf "$out/glyphs"
  "$train" data glyphs --small --out "$out/glyphs"
fi
if [ ! -f "$out/body.safetensors" ]; then
  "$train" body --data "$out/glyphs" --out "$out/body.safetensors" --minutes 3
fi
# prepare resumes by itself if an earlier quickstart was interrupted
"$train" prepare --body "$out/body.safetensors" --data "$out/glyphs" \
  --out "$out/trajectories.safetensors" --tasks 500 --ways 5 --shots 1
"$train" eval --body "$out/body.safetensors" --data "$out/glyphs" --ways 5 --shots 1 \
  --episodes 600 --seed 1 --json "$out/eval_5w1s.json"
echo "quickstart: results in $out/eval_5w1s.json"
