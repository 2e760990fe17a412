#!/usr/bin/env bash
# scripts/experiments.sh — the paper's ablations on the glyph benchmark, at
# equal training compute, two runs at a time (one BLAS thread each):
#   Fig. 4  trajectory length L ∈ {2,3,4,6} vs held-out weight MSE
#   Fig. 5  diffusion steps T ∈ {5,10,20,50} vs MSE, trajectory (L=4) vs vanilla (L=2)
#   Fig. 6  SAM and augmentation in weight preparation vs meta-test accuracy
# Usage: scripts/experiments.sh BODY GLYPHS OUTDIR    (env STEPS, TASKS, EPISODES)
# Writes OUTDIR/results.csv; scripts/plot_experiments.py draws the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
body=$1 glyphs=$2 out=$3
steps=${STEPS:-2000} tasks=${TASKS:-2000} episodes=${EPISODES:-600}
train=${TRAIN:-$PWD/build/ltdi-train}
mkdir -p "$out"
cd "$out"

prep() { # name, extra prepare options
  local name=$1; shift
  [ -f "traj_$name.safetensors" ] ||
    "$train" prepare --body "$body" --data "$glyphs" --out "traj_$name.safetensors" \
      --head mlp --ways 5 --shots 1 --tasks "$tasks" --quiet "$@" > "prepare_$name.log"
}
prep L6 --trajectory 6
prep L4
prep nosam --sam 0
prep none --sam 0 --no-augment
[ -f feat_meta_test.safetensors ] ||
  "$train" features --body "$body" --data "$glyphs/meta-test" --out feat_meta_test.safetensors

# One meta-training run per line: name, trajectories, options.
jobs=jobs.txt
: > "$jobs"
for L in 2 3 4 6; do echo "fig4_L$L traj_L6 --subsample-trajectory $L" >> "$jobs"; done
for T in 5 10 20 50; do
  for L in 2 4; do echo "fig5_T${T}_L$L traj_L4 --T $T --subsample-trajectory $L" >> "$jobs"; done
done
for v in none nosam L4; do echo "fig6_$v traj_$v" >> "$jobs"; done

run_job() {
  local name=$1 traj=$2; shift 2
  [ -f "$name.log" ] && grep -q "meta: wrote" "$name.log" && return 0
  "$train" meta --trajectories "$traj.safetensors" --out "$name.safetensors" \
    --outer-steps "$steps" --threads 1 --quiet --restart "$@" > "$name.log" 2>&1
}
export -f run_job
export train steps
xargs -P 2 -L 1 bash -c 'run_job "$@"' _ < "$jobs"

# Fig. 6 needs accuracy on meta-test episodes: the generated head, nothing else.
for v in none nosam L4; do
  [ -f "eval_fig6_$v.json" ] ||
    "$train" eval --features feat_meta_test.safetensors --ways 5 --shots 1 --episodes "$episodes" \
      --seed 1 --model "fig6_$v.safetensors" --methods lt_di --json "eval_fig6_$v.json" > /dev/null
done

# results.csv: name, held-out MSE (subchain), MSE (paper form), mean-optimum
# baseline, prototype accuracy, meta-test accuracy (Fig. 6 only).
{
  echo "name,mse_subchain,mse_paper,mse_mean_baseline,proto_acc,test_acc,test_ci95"
  while read -r name _; do
    line=$(grep "held-out weight MSE" "$name.log" | head -1)
    mse=$(sed -n 's/.*held-out weight MSE \([0-9.]*\) (subchain.*/\1/p' <<< "$line")
    base=$(sed -n 's/.*mean-optimum baseline \([0-9.]*\).*/\1/p' <<< "$line")
    proto=$(sed -n 's/.*prototype accuracy of generated heads \([0-9.]*\).*/\1/p' <<< "$line")
    paper=$(sed -n "s/.*paper's sampler form: held-out weight MSE \([0-9.]*\).*/\1/p" "$name.log")
    acc= ci=
    if [ -f "eval_$name.json" ]; then
      acc=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['methods']['lt_di']['acc'])" "eval_$name.json")
      ci=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['methods']['lt_di']['ci95'])" "eval_$name.json")
    fi
    echo "$name,$mse,$paper,$base,$proto,$acc,$ci"
  done < "$jobs"
} > results.csv
cat results.csv
