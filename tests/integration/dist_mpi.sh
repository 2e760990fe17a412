#!/usr/bin/env bash
# tests/integration/dist_mpi.sh TRAIN_BINARY SOURCE_DIR
#
# ltdi-train under mpirun (docs/DISTRIBUTED.md), 1, 2 and 3 ranks on
# loopback, against the same commands run as one plain process:
#   - prepare: the trajectories file is byte-identical for every rank count;
#   - meta, multi-task with fixed --grad-groups, and REPTILE, on the U-Net
#     and on the class-token denoiser: the model's tensors are bit-identical
#     for every rank count (REPTILE: to the one-process loop itself);
#     without --grad-groups the groups follow the rank count;
#   - eval: the JSON's methods (accuracies, CIs, weight MSE, paired
#     differences) equal the one-process run's;
#   - a command that does not run distributed is refused under mpirun.
# Exits 77 (skipped) when ltdi-train was built without MPI.
set -euo pipefail
train=$1
src=$2
. "$(dirname "$0")/lib/dist_setup.sh"
model=$src/models/glyphs-5w1s-lt.safetensors
test -f "$model" || fail "no shipped model $model"

# Inputs, deterministic (lib/synth.py dist): 16-dim features of 12 classes
# x 8 (prepare), 64-dim features of 8 classes x 6 (eval with the shipped
# 64-dim model), and a tiny mlp-head trajectories file (P = 23) for the U-Net.
synth="$(dirname "$0")/lib/synth.py"
python3 "$synth" dist "$tmp"

# The tensors of a safetensors file without its metadata (meta's model
# records its wall time there).
tensors_of() { python3 "$synth" hash "$1"; }
# Runs ltdi-train with the given rank count (0: a plain process).
on() {
  local n=$1
  shift
  if [ "$n" = 0 ]; then "$train" "$@"; else "${mpi[@]}" -np "$n" "$train" "$@"; fi
}

echo "== prepare: 1 process, 1, 2 and 3 ranks"
prep=(prepare --features "$tmp/f16.safetensors" --tasks 300 --ways 5 --threads 1 --quiet)
for n in 0 1 2 3; do
  on "$n" "${prep[@]}" --out "$tmp/prep$n.safetensors" > "$tmp/prep$n.out"
  cat "$tmp/prep$n.out"
  test -s "$tmp/prep$n.safetensors" || fail "prepare on $n ranks wrote nothing"
  ls "$tmp" | grep -q "prep$n.safetensors.journal" && fail "prepare on $n ranks left a journal"
  cmp "$tmp/prep0.safetensors" "$tmp/prep$n.safetensors" ||
    fail "prepare on $n ranks differs from one process"
done
[ "$(grep -c . "$tmp/prep3.out")" = 1 ] || fail "prepare on 3 ranks reported more than once"
grep -q "x 3 ranks" "$tmp/prep3.out" || fail "prepare does not say it ran on 3 ranks"

echo "== meta, multi-task on the U-Net: --grad-groups 6 on 1 process, 2 and 3 ranks"
unet=(meta --trajectories "$tmp/mlp_traj.safetensors" --outer-steps 6 --batch 6 --T 4 --base-ch 8
      --val-tasks 2 --val-points 1 --device cpu --quiet --restart)
for n in 0 2 3; do
  on "$n" "${unet[@]}" --grad-groups 6 --out "$tmp/mt$n.safetensors" > "$tmp/mt$n.out" 2>&1 ||
    { cat "$tmp/mt$n.out"; fail "meta multitask on $n ranks failed"; }
done
ref=$(tensors_of "$tmp/mt0.safetensors")
for n in 2 3; do
  [ "$(tensors_of "$tmp/mt$n.safetensors")" = "$ref" ] ||
    fail "multitask --grad-groups 6 on $n ranks differs from one process"
done
test ! -e "$tmp/mt2.safetensors.ckpt" || fail "the checkpoint outlived a finished run"
grep -q "^meta: multitask on cpu x 3 ranks" "$tmp/mt3.out" || fail "meta does not say it ran on 3 ranks"
[ "$(grep -c "^meta: wrote" "$tmp/mt3.out")" = 1 ] || fail "meta on 3 ranks reported more than once"
# The groups are real: one group (the whole batch) rounds differently ...
on 0 "${unet[@]}" --out "$tmp/mt_one.safetensors" > /dev/null 2>&1
[ "$(tensors_of "$tmp/mt_one.safetensors")" != "$ref" ] ||
  fail "6 gradient groups gave the bits of one: the comparison above proves nothing"
# ... and without --grad-groups there is one group per rank.
on 2 "${unet[@]}" --out "$tmp/mt_default2.safetensors" > /dev/null 2>&1
on 0 "${unet[@]}" --grad-groups 2 --out "$tmp/mt_g2.safetensors" > /dev/null 2>&1
[ "$(tensors_of "$tmp/mt_default2.safetensors")" = "$(tensors_of "$tmp/mt_g2.safetensors")" ] ||
  fail "2 ranks without --grad-groups differ from one process with --grad-groups 2"
set +e
on 0 "${unet[@]}" --grad-groups 4 --out "$tmp/bad.safetensors" > /dev/null 2> "$tmp/bad.err"
rc=$?
set -e
[ "$rc" = 1 ] || fail "--grad-groups 4 with --batch 6: status $rc, expected 1"
grep -q "not a multiple" "$tmp/bad.err" || fail "--grad-groups 4 with --batch 6: no reason given"

echo "== meta, REPTILE on the U-Net: 1 process, 2 and 3 ranks"
for n in 0 2 3; do
  on "$n" "${unet[@]}" --algo reptile --meta-batch 3 --inner-steps 2 \
    --out "$tmp/rep$n.safetensors" > /dev/null 2>&1 || fail "meta reptile on $n ranks failed"
done
ref=$(tensors_of "$tmp/rep0.safetensors")
for n in 2 3; do
  [ "$(tensors_of "$tmp/rep$n.safetensors")" = "$ref" ] ||
    fail "reptile on $n ranks differs from one process"
done

echo "== meta on the class-token denoiser (prepare's linear-head file)"
tok=(meta --trajectories "$tmp/prep0.safetensors" --outer-steps 4 --batch 4 --T 10 --val-tasks 4
     --val-points 1 --device cpu --quiet --restart)
on 0 "${tok[@]}" --grad-groups 4 --out "$tmp/tok0.safetensors" > /dev/null 2>&1
on 3 "${tok[@]}" --grad-groups 4 --out "$tmp/tok3.safetensors" > /dev/null 2>&1
[ "$(tensors_of "$tmp/tok0.safetensors")" = "$(tensors_of "$tmp/tok3.safetensors")" ] ||
  fail "class tokens, multitask --grad-groups 4: 3 ranks differ from one process"
on 0 "${tok[@]}" --algo reptile --meta-batch 2 --inner-steps 2 --out "$tmp/tokr0.safetensors" > /dev/null 2>&1
on 2 "${tok[@]}" --algo reptile --meta-batch 2 --inner-steps 2 --out "$tmp/tokr2.safetensors" > /dev/null 2>&1
[ "$(tensors_of "$tmp/tokr0.safetensors")" = "$(tensors_of "$tmp/tokr2.safetensors")" ] ||
  fail "class tokens, reptile: 2 ranks differ from one process"

echo "== eval: 1 process, 2 and 3 ranks (7 episodes: uneven shares)"
ev=(eval --features "$tmp/f64.safetensors" --model "$model" --ways 5 --shots 1 --queries 2
    --episodes 7 --samples 2 --refine-steps 2 --threads 1 --device cpu
    --methods nearest_centroid,finetune,lt_di,lt_di_best_of_n)
methods_of() { python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["methods"], sort_keys=True))' "$1"; }
for n in 0 2 3; do
  on "$n" "${ev[@]}" --json "$tmp/eval$n.json" > "$tmp/eval$n.out" 2> "$tmp/eval$n.err" ||
    { cat "$tmp/eval$n.err"; fail "eval on $n ranks failed"; }
  [ "$(methods_of "$tmp/eval0.json")" = "$(methods_of "$tmp/eval$n.json")" ] ||
    fail "eval on $n ranks: the JSON's methods differ from one process"
done
cat "$tmp/eval3.out"
[ "$(grep -c "^nearest_centroid" "$tmp/eval3.out")" = 1 ] || fail "eval on 3 ranks printed its table more than once"
python3 - "$tmp/eval0.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["episodes"] == 7 and set(r["methods"]) == {"nearest_centroid", "finetune", "lt_di", "lt_di_best_of_n"}, r
assert "weight_mse" in r["methods"]["lt_di"], r["methods"]["lt_di"]
PY

echo "== a command that does not run distributed"
set +e
on 2 data glyphs --small --out "$tmp/glyphs" --quiet > /dev/null 2> "$tmp/data.err"
rc=$?
set -e
[ "$rc" != 0 ] || fail "data under mpirun -np 2 exited 0"
grep -q "does not run distributed" "$tmp/data.err" || fail "data under mpirun: no reason given"
test ! -e "$tmp/glyphs" || fail "data under mpirun wrote output"
echo "PASS"
