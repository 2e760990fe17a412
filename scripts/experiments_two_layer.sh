#!/usr/bin/env bash
# scripts/experiments_two_layer.sh — the two-layer head as class tokens (fc1
# one task-level token, fc2 one token per class) against the linear head at
# equal data and budget (docs/RESULTS.md "The two-layer head as class
# tokens"): the same meta-train tasks prepared for both heads with 20-shot
# targets, one multi-task model each, then meta-val at residual scales 1
# and 0.5 (the only choice), and the meta-test once at the chosen scale.
# Usage: scripts/experiments_two_layer.sh FEATDIR OUTDIR
#   FEATDIR holds feat_meta-train / feat_meta-val / feat_meta-test
#   .safetensors (`ltdi-train features` of the glyph splits with
#   models/glyphs-body.safetensors).
#   env STEPS     multitask outer steps of each model [6000]
#       TASKS5    tasks per 5-way file [2000]
#       TASKS20   tasks per 20-way file [1000]
#       SCALE     residual scale of the meta-test run [chosen on meta-val]
#       TRAIN     ltdi-train binary [build/ltdi-train]
#       THREADS   threads of every step [2]
# Every piece is skipped when its output exists, so a rerun resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
feat=$(realpath "$1") out=$2
steps=${STEPS:-6000} t5=${TASKS5:-2000} t20=${TASKS20:-1000} threads=${THREADS:-2}
train=$(realpath "${TRAIN:-$PWD/build/ltdi-train}")
mkdir -p "$out"
cd "$out"
say() { echo "[$(date +%H:%M:%S)] $*" >&2; }

for head in two_layer linear; do
  for ws in "5 1 $t5" "5 5 $t5" "20 1 $t20" "20 5 $t20"; do
    set -- $ws
    f=${head}_${1}w${2}s.st
    [ -f "$f" ] && continue
    say "prepare $f"
    "$train" prepare --features "$feat/feat_meta-train.safetensors" --head "$head" --out "$f" \
      --ways "$1" --shots "$2" --train-shots 20 --tasks "$3" --threads "$threads" --quiet
  done
  m=model_${head}.st
  if [ ! -f "$m" ]; then
    say "meta $m"
    "$train" meta --trajectories "${head}_5w1s.st,${head}_5w5s.st,${head}_20w1s.st,${head}_20w5s.st" \
      --out "$m" --outer-steps "$steps" --threads "$threads" > "meta_${head}.log" 2>&1
  fi
done

evaluate() { # split scale dir
  mkdir -p "$3"
  [ -f "$3/eval_20w5s.json" ] && return
  say "eval $1 a=$2"
  "$train" eval --features "$feat/feat_$1.safetensors" --ways 5,20 --shots 1,5 \
    --model model_two_layer.st --model-lv model_linear.st \
    --methods nearest_centroid,lv_di,lt_di,lt_di_refine --episodes 600 --seed 1 \
    --threads "$threads" --residual-scale "$2" --json-dir "$3" > "$3.txt" 2>&1
}
for a in 1 0.5; do evaluate meta-val "$a" "val_a$a"; done
# The scale with the best mean paired difference of lt_di over the four
# settings on meta-val, unless SCALE says otherwise.
scale=${SCALE:-$(python3 - <<'EOF'
import json
best = None
for a in ("1", "0.5"):
    diffs = []
    for s in ("5w1s", "5w5s", "20w1s", "20w5s"):
        rows = json.load(open(f"val_a{a}/eval_{s}.json"))["methods"]
        diffs.append(rows["lt_di"]["paired_vs_nearest_centroid"]["diff"])
    mean = sum(diffs) / 4
    if best is None or mean > best[0]:
        best = (mean, a)
print(best[1])
EOF
)}
evaluate meta-test "$scale" "test_a$scale"
say "done: meta-test at residual scale $scale in $out/test_a$scale.txt"
