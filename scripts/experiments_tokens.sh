#!/usr/bin/env bash
# scripts/experiments_tokens.sh — the paper's Table 1 and Figs 4–6 with the
# class-token generator (linear heads, `prepare --head linear`, one model for
# any N), at small equal budgets, one job at a time, one BLAS thread:
#   Table 1  Lt-Di (L=4) multitask, Lv-Di (--subsample-trajectory 2) multitask,
#            Lt-Di REPTILE at the same number of diffusion samples; meta-test
#            5w1s 5w5s 20w1s 20w5s, nearest_centroid vs lt_di
#   Fig. 4   trajectory length L' ∈ {2,3,4,6} (5w1s+20w1s files prepared with L=6)
#   Fig. 5   diffusion steps T ∈ {5,10,20,50} × L ∈ {2,4} (5w1s+20w1s, L=4 files)
#   Fig. 6   preparation SAM on/off × augmentation on/off (5w1s, from images)
# Usage: scripts/experiments_tokens.sh BODY GLYPHS OUTDIR
#   env STEPS     multitask outer steps (× BATCH samples) of every run [3000]
#       BATCH     diffusion samples per multitask step [32]
#       TASKS     tasks per prepared file [4000]
#       EPISODES  meta-test episodes per (ways, shots) [600]
#       TRAIN     ltdi-train binary [build/ltdi-train]
#       TRAJDIR   where traj_{5w1s,5w5s,20w1s,20w5s}.st already are (else they
#                 are prepared into OUTDIR)
#       FEATDIR   where feat_meta-train.safetensors / feat_meta-test.safetensors
#                 already are (else computed into OUTDIR from BODY and GLYPHS)
#       VIEWS     views of the augmented Fig. 6 preparations [5]
#       VALPOINTS held-out measurements during each run [0]: measurement only
#                 (no model selection), the final one is always made
#       PLAIN_FROM_FEATURES=1  prepare the two Fig. 6 variants without
#                 augmentation from FEATDIR's meta-train features (view 0 of
#                 the same body on the same images) instead of from images
#       ONLY      space-separated subset of: table1 fig4 fig5 fig6 [all]
# Every piece is skipped when its output is complete, so a rerun resumes.
# Writes OUTDIR/results.csv (one row per meta-training run);
# scripts/plot_experiments_tokens.py draws the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
body=$(realpath "$1") glyphs=$(realpath "$2") out=$3
steps=${STEPS:-3000} batch=${BATCH:-32} tasks=${TASKS:-4000} episodes=${EPISODES:-600}
views=${VIEWS:-5} valpoints=${VALPOINTS:-0} only=${ONLY:-"table1 fig4 fig5 fig6"}
train=$(realpath "${TRAIN:-$PWD/build/ltdi-train}")
mkdir -p "$out"
out=$(realpath "$out")
trajdir=$(realpath "${TRAJDIR:-$out}") featdir=$(realpath "${FEATDIR:-$out}")
cd "$out"
want() { [[ " $only " == *" $1 "* ]]; }
say() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# REPTILE draws meta_batch * inner_steps * batch diffusion samples per outer
# step, multitask draws batch: equal samples means outer = STEPS / (mb * k).
reptile_mb=1 reptile_k=5
if (( steps % (reptile_mb * reptile_k) != 0 )); then
  echo "STEPS must be a multiple of $((reptile_mb * reptile_k))" >&2; exit 2
fi
reptile_steps=$(( steps / (reptile_mb * reptile_k) ))

# ---- inputs ------------------------------------------------------------------
features() { # split -> path of its features file
  local f="$featdir/feat_$1.safetensors"
  [ -f "$f" ] && { echo "$f"; return; }
  f="$out/feat_$1.safetensors"
  if [ ! -f "$f" ]; then
    say "features $1"
    "$train" features --body "$body" --data "$glyphs/$1" --out "$f.tmp" --threads 1 \
      > "features_$1.log" 2>&1
    mv "$f.tmp" "$f"
  fi
  echo "$f"
}
prep() { # file name, prepare options (the default linear recipe plus these)
  local name=$1; shift
  [ -f "$name" ] && grep -q "prepare: wrote" "prep_${name%.st}.log" 2>/dev/null && return 0
  say "prepare $name $*"
  "$train" prepare --out "$name" --tasks "$tasks" --threads 1 --quiet "$@" \
    > "prep_${name%.st}.log" 2>&1
}
default_traj() { # 5w1s -> path of the default-recipe L=4 file
  local f="$trajdir/traj_$1.st"
  [ -f "$f" ] && { echo "$f"; return; }
  local w=${1%w*} s=${1#*w}; s=${s%s}
  prep "traj_$1.st" --features "$(features meta-train)" --ways "$w" --shots "$s" >&2
  echo "$out/traj_$1.st"
}

test_feat=$(features meta-test)
jobs=$out/jobs.txt
: > "$jobs"
# One run per line: name | trajectories | eval ways | eval shots | meta options
if want table1; then
  t1=$(default_traj 5w1s),$(default_traj 5w5s),$(default_traj 20w1s),$(default_traj 20w5s)
  echo "t1_lt|$t1|5,20|1,5|--outer-steps $steps" >> "$jobs"
  echo "t1_lv|$t1|5,20|1,5|--outer-steps $steps --subsample-trajectory 2" >> "$jobs"
  echo "t1_reptile|$t1|5,20|1,5|--algo reptile --outer-steps $reptile_steps --meta-batch $reptile_mb --inner-steps $reptile_k" >> "$jobs"
fi
if want fig4; then
  feat_train=$(features meta-train)
  prep traj_L6_5w1s.st --features "$feat_train" --ways 5 --shots 1 --trajectory 6
  prep traj_L6_20w1s.st --features "$feat_train" --ways 20 --shots 1 --trajectory 6
  for L in 2 3 4 6; do
    echo "fig4_L$L|$out/traj_L6_5w1s.st,$out/traj_L6_20w1s.st|5,20|1|--outer-steps $steps --subsample-trajectory $L" >> "$jobs"
  done
fi
if want fig5; then
  t5=$(default_traj 5w1s),$(default_traj 20w1s)
  for T in 5 10 20 50; do
    for L in 2 4; do
      echo "fig5_T${T}_L$L|$t5|5,20|1|--outer-steps $steps --T $T --subsample-trajectory $L" >> "$jobs"
    done
  done
fi
if want fig6; then
  for v in none sam aug samaug; do
    echo "fig6_$v|$out/traj_fig6_$v.st|5|1|--outer-steps $steps" >> "$jobs"
  done
fi

run_job() { # name|trajectories|ways|shots|options
  IFS='|' read -r name traj ways shots opts <<< "$1"
  if ! { [ -f "$name.st" ] && grep -q "meta: wrote" "$name.log" 2>/dev/null; }; then
    say "meta $name ($opts)"
    # shellcheck disable=SC2086
    "$train" meta --trajectories "$traj" --out "$name.st" --batch "$batch" --threads 1 \
      --val-points "$valpoints" --quiet --csv "$name.csv" $opts > "$name.log" 2>&1
  fi
  mkdir -p "eval_$name"
  local missing=0 w s
  for w in ${ways//,/ }; do for s in ${shots//,/ }; do
    [ -f "eval_$name/eval_${w}w${s}s.json" ] || missing=1
  done; done
  if [ "$missing" = 1 ]; then
    say "eval $name (${ways}-way ${shots}-shot)"
    "$train" eval --features "$test_feat" --ways "$ways" --shots "$shots" \
      --episodes "$episodes" --seed 1 --model "$name.st" --methods nearest_centroid,lt_di \
      --threads 1 --json-dir "eval_$name" > "eval_$name.log" 2>&1
  fi
}
export -f run_job say
export train batch test_feat episodes valpoints

# Fig. 6 preparations come last: features from images with augmented views
# are the expensive part. Without --augment prepare uses view 0 only
# (prepare_task.c: views_used = augment ? views : 1), so the plain variants
# are prepared with --views 1 and see exactly the same inputs.
grep -v '^fig6_' "$jobs" | xargs -d '\n' -P 1 -n 1 bash -c 'run_job "$1"' _
if want fig6; then
  if [ "${PLAIN_FROM_FEATURES:-0}" = 1 ]; then plain=(--features "$(features meta-train)")
  else plain=(--body "$body" --data "$glyphs" --views 1); fi
  prep traj_fig6_none.st "${plain[@]}" --ways 5 --shots 1 --sam 0
  prep traj_fig6_sam.st "${plain[@]}" --ways 5 --shots 1 --sam 0.05
  prep traj_fig6_aug.st --body "$body" --data "$glyphs" --ways 5 --shots 1 --views "$views" --augment --sam 0
  prep traj_fig6_samaug.st --body "$body" --data "$glyphs" --ways 5 --shots 1 --views "$views" --augment --sam 0.05
  grep '^fig6_' "$jobs" | xargs -d '\n' -P 1 -n 1 bash -c 'run_job "$1"' _
fi

# ---- results.csv ---------------------------------------------------------------
python3 - "$jobs" > results.csv <<'EOF'
import json, os, re, sys
pairs = ["5w1s", "5w5s", "20w1s", "20w5s"]
cols = ["name", "trajectories", "meta_options", "algo", "outer_steps", "samples", "train_s",
        "mse_subchain", "mse_paper", "mse_nc_baseline", "proto_acc"]
for p in pairs:
    cols += [f"nc_{p}", f"nc_{p}_ci95", f"ltdi_{p}", f"ltdi_{p}_ci95",
             f"vs_nc_{p}", f"vs_nc_{p}_ci95"]
print(",".join(cols))
def num(pattern, text):
    m = re.search(pattern, text)
    return m.group(1) if m else ""
for line in open(sys.argv[1]):
    name, traj, ways, shots, opts = line.rstrip("\n").split("|")
    log = open(name + ".log").read() if os.path.exists(name + ".log") else ""
    row = {"name": name,
           "trajectories": " ".join(os.path.basename(t) for t in traj.split(",")),
           "meta_options": opts,
           "algo": num(r"meta: (\w+) on \w+,", log),
           "outer_steps": num(r"on \w+, (\d+) outer steps", log),
           "samples": num(r"\), (\d+) samples", log),
           "train_s": num(r"samples, ([0-9.]+) s", log),
           "mse_subchain": num(r"held-out weight MSE ([0-9.]+) \(subchain", log),
           "mse_paper": num(r"paper's sampler form: held-out weight MSE ([0-9.]+)", log),
           "mse_nc_baseline": num(r"zero residual\) baseline ([0-9.]+)", log),
           "proto_acc": num(r"prototype accuracy of generated heads ([0-9.]+)", log)}
    for p in pairs:
        f = f"eval_{name}/eval_{p}.json"
        if not os.path.exists(f):
            continue
        m = json.load(open(f))["methods"]
        nc, lt = m["nearest_centroid"], m["lt_di"]
        row.update({f"nc_{p}": nc["acc"], f"nc_{p}_ci95": nc["ci95"],
                    f"ltdi_{p}": lt["acc"], f"ltdi_{p}_ci95": lt["ci95"],
                    f"vs_nc_{p}": lt["paired_vs_nearest_centroid"]["diff"],
                    f"vs_nc_{p}_ci95": lt["paired_vs_nearest_centroid"]["ci95"]})
    print(",".join('"%s"' % row[c] if c in ("trajectories", "meta_options") else str(row.get(c, ""))
                   for c in cols))
EOF
cat results.csv
