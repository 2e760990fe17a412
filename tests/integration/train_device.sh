#!/usr/bin/env bash
# tests/integration/train_device.sh TRAIN_BINARY SOURCE_DIR
#
# `--device auto|cpu|cuda` (and $LTDI_DEVICE) of the commands that run the
# denoiser: generate, eval's diffusion rows and meta, through the real binary.
#   - auto on a machine without a usable GPU says once why it uses the CPU and
#     gives byte-identical results to cpu; LTDI_DEVICE=cpu does too; the flag
#     wins over the variable;
#   - cuda without a GPU (or without CUDA in the build) fails at once with a
#     message and a non-zero status, before any slow work;
#   - a bad value (flag or variable) is a usage error (status 2).
# On a machine where CUDA works, the "no GPU" checks are replaced by a check
# that cuda runs and says so (its numbers are the GPU tests' business).
set -euo pipefail
train=$1
src=$2
model=$src/models/glyphs-5w1s-lt.safetensors
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
test -f "$model" || fail "no shipped model $model"
unset LTDI_DEVICE

# Inputs: the prototypes of one 5-way task (64-dim, as the shipped model
# wants), a features file of 8 classes x 6 examples, and a tiny trajectories
# file (2-way, 4-dim features, hidden 3: P = 23) for meta. Deterministic.
synth="$(dirname "$0")/lib/synth.py"
python3 - "$tmp" "$(dirname "$synth")" <<'PY'
import random, sys
sys.path.insert(0, sys.argv[2])
from synth import clusters, mlp_trajectories, write
out = sys.argv[1]

rng = random.Random(7)
d = 64
protos = [rng.gauss(0.0, 1.0) for _ in range(5 * d)]
write(out + "/protos.safetensors", {"prototypes": ("F32", [5, d], protos)})

clusters(out + "/features.safetensors", d, 8, 6, rng, absolute=False)
mlp_trajectories(out + "/traj.safetensors", rng)
PY

# The tensors of a safetensors file, without its metadata (meta's model
# records its wall time there).
tensors_of() { python3 "$synth" hash "$1"; }

gen=(generate --model "$model" --prototypes "$tmp/protos.safetensors" --seed 5)

echo "== does this machine run CUDA?"
gpu=0
if "$train" "${gen[@]}" --device cuda --out "$tmp/cuda.safetensors" > "$tmp/cuda.out" 2> "$tmp/cuda.err"; then
  gpu=1
  grep -q ", cuda," "$tmp/cuda.out" || fail "--device cuda ran but does not say cuda: $(cat "$tmp/cuda.out")"
  echo "note: CUDA is usable here; checking that auto picks it"
else
  rc=$?
  cat "$tmp/cuda.err"
  [ "$rc" -ne 0 ] || fail "--device cuda without a GPU exited 0"
  grep -q "device cuda" "$tmp/cuda.err" || fail "--device cuda: the message does not say why"
  test ! -e "$tmp/cuda.safetensors" || fail "--device cuda failed but wrote a head"
  LTDI_DEVICE=cuda "$train" "${gen[@]}" --out "$tmp/cuda2.safetensors" 2> "$tmp/cuda2.err" \
    && fail "LTDI_DEVICE=cuda without a GPU exited 0"
  grep -q "device cuda" "$tmp/cuda2.err" || fail "LTDI_DEVICE=cuda: no reason given"
fi

echo "== generate: auto, cpu, LTDI_DEVICE=cpu"
"$train" "${gen[@]}" --out "$tmp/auto.safetensors" > "$tmp/auto.out" 2> "$tmp/auto.err"
"$train" "${gen[@]}" --device cpu --out "$tmp/cpu.safetensors" > "$tmp/cpu.out" 2> "$tmp/cpu.err"
LTDI_DEVICE=cpu "$train" "${gen[@]}" --out "$tmp/env.safetensors" > "$tmp/env.out" 2> "$tmp/env.err"
cat "$tmp/auto.err" "$tmp/auto.out" "$tmp/cpu.out"
grep -q ", cpu," "$tmp/cpu.out" || fail "generate --device cpu does not name its backend"
grep -q ", cpu," "$tmp/env.out" || fail "LTDI_DEVICE=cpu did not run on the CPU"
test ! -s "$tmp/cpu.err" || fail "--device cpu printed a device note: $(cat "$tmp/cpu.err")"
cmp "$tmp/cpu.safetensors" "$tmp/env.safetensors" || fail "LTDI_DEVICE=cpu differs from --device cpu"
if [ "$gpu" = 0 ]; then
  grep -q ", cpu," "$tmp/auto.out" || fail "auto without a GPU did not use the CPU"
  [ "$(grep -c "device auto" "$tmp/auto.err")" = 1 ] || fail "auto: expected one note on stderr"
  grep -q "using the CPU" "$tmp/auto.err" || fail "auto: the note does not say it uses the CPU"
  cmp "$tmp/auto.safetensors" "$tmp/cpu.safetensors" || fail "generate: auto and cpu differ"
  "$train" "${gen[@]}" --format json --out "$tmp/auto.json" 2> /dev/null > /dev/null
  "$train" "${gen[@]}" --format json --device cpu --out "$tmp/cpu.json" > /dev/null
  cmp "$tmp/auto.json" "$tmp/cpu.json" || fail "generate JSON: auto and cpu differ"
else
  grep -q ", cuda," "$tmp/auto.out" || fail "auto with a usable GPU did not pick it"
fi

echo "== bad values"
set +e
"$train" "${gen[@]}" --device tpu --out "$tmp/bad.safetensors" 2> "$tmp/bad.err"
rc=$?
set -e
[ "$rc" = 2 ] || fail "--device tpu: status $rc, expected 2"
grep -q "tpu" "$tmp/bad.err" || fail "--device tpu: the message does not name the value"
test ! -e "$tmp/bad.safetensors" || fail "--device tpu wrote a head"
set +e
LTDI_DEVICE=tpu "$train" "${gen[@]}" --out "$tmp/bad.safetensors" 2> "$tmp/bad.err"
rc=$?
set -e
[ "$rc" = 2 ] || fail "LTDI_DEVICE=tpu: status $rc, expected 2"
grep -q "LTDI_DEVICE" "$tmp/bad.err" || fail "LTDI_DEVICE=tpu: the message does not name the variable"
# The flag wins: a bad variable does not matter when --device is given.
LTDI_DEVICE=tpu "$train" "${gen[@]}" --device cpu --out "$tmp/flag.safetensors" > /dev/null
cmp "$tmp/flag.safetensors" "$tmp/cpu.safetensors" || fail "--device cpu under LTDI_DEVICE=tpu differs"
bad_meta=(meta --trajectories "$tmp/traj.safetensors" --out "$tmp/bad.safetensors" --outer-steps 1)
bad_eval=(eval --features "$tmp/features.safetensors" --model "$model" --episodes 1)
for cmd in meta eval; do
  args="bad_$cmd[@]"
  set +e
  "$train" "${!args}" --device tpu > /dev/null 2> "$tmp/bad.err"
  rc=$?
  set -e
  [ "$rc" = 2 ] || fail "$cmd --device tpu: status $rc, expected 2"
  grep -q "'tpu'" "$tmp/bad.err" || fail "$cmd --device tpu: the message does not name the value"
done
test ! -e "$tmp/bad.safetensors" || fail "meta --device tpu wrote a model"

echo "== eval: the diffusion rows, auto vs cpu"
ev=(eval --features "$tmp/features.safetensors" --model "$model" --ways 5 --shots 1
    --queries 2 --episodes 4 --samples 2 --refine-steps 2 --threads 2
    --methods nearest_centroid,lt_di,lt_di_refine,lt_di_best_of_n)
"$train" "${ev[@]}" --device cpu --json "$tmp/eval_cpu.json" > "$tmp/eval_cpu.out" 2> "$tmp/eval_cpu.err"
cat "$tmp/eval_cpu.err" "$tmp/eval_cpu.out"
grep -q "heads generated on cpu" "$tmp/eval_cpu.err" || fail "eval does not name the generation device"
grep -q "^generation: .*(cpu)" "$tmp/eval_cpu.out" || fail "eval's timing line does not name the device"
LTDI_DEVICE=cpu "$train" "${ev[@]}" --threads 1 --json "$tmp/eval_env.json" > /dev/null 2>&1
# Accuracies and weight MSE (not the timing) must be identical.
methods_of() { python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["methods"], sort_keys=True))' "$1"; }
[ "$(methods_of "$tmp/eval_cpu.json")" = "$(methods_of "$tmp/eval_env.json")" ] \
  || fail "eval: LTDI_DEVICE=cpu (1 thread) differs from --device cpu (2 threads)"
if [ "$gpu" = 0 ]; then
  "$train" "${ev[@]}" --json "$tmp/eval_auto.json" > /dev/null 2> "$tmp/eval_auto.err"
  [ "$(grep -c "device auto" "$tmp/eval_auto.err")" = 1 ] || fail "eval auto: expected one note"
  [ "$(methods_of "$tmp/eval_cpu.json")" = "$(methods_of "$tmp/eval_auto.json")" ] \
    || fail "eval: auto and cpu differ"
  set +e
  "$train" "${ev[@]}" --device cuda > /dev/null 2> "$tmp/eval_cuda.err"
  rc=$?
  set -e
  cat "$tmp/eval_cuda.err"
  [ "$rc" -ne 0 ] || fail "eval --device cuda without a GPU exited 0"
  grep -q "device cuda" "$tmp/eval_cuda.err" || fail "eval --device cuda: no reason given"
  ! grep -q "loading" "$tmp/eval_cuda.err" || fail "eval --device cuda failed only after loading the features"
fi
# Without a model nothing generates: the device is not needed.
"$train" eval --features "$tmp/features.safetensors" --ways 5 --queries 2 --episodes 2 \
  --methods nearest_centroid --device cuda > /dev/null 2>&1 \
  || fail "eval without a model failed on --device cuda"

echo "== meta: auto vs cpu"
mt=(meta --trajectories "$tmp/traj.safetensors" --outer-steps 4 --batch 4 --T 4 --base-ch 8
    --val-tasks 2 --val-points 1 --quiet --restart)
"$train" "${mt[@]}" --device cpu --out "$tmp/meta_cpu.safetensors" > "$tmp/meta_cpu.out" 2> "$tmp/meta_cpu.err"
cat "$tmp/meta_cpu.out"
grep -q "^meta: multitask on cpu," "$tmp/meta_cpu.out" || fail "meta does not name its backend"
grep -q "paper's sampler form" "$tmp/meta_cpu.out" || fail "meta: the reload for the paper's sampler failed"
LTDI_DEVICE=cpu "$train" "${mt[@]}" --algo reptile --inner-steps 2 --out "$tmp/meta_rep_env.safetensors" > /dev/null 2>&1
"$train" "${mt[@]}" --algo reptile --inner-steps 2 --device cpu --out "$tmp/meta_rep_cpu.safetensors" > /dev/null 2>&1
[ "$(tensors_of "$tmp/meta_rep_env.safetensors")" = "$(tensors_of "$tmp/meta_rep_cpu.safetensors")" ] \
  || fail "meta --algo reptile: LTDI_DEVICE=cpu and --device cpu differ"
if [ "$gpu" = 0 ]; then
  "$train" "${mt[@]}" --out "$tmp/meta_auto.safetensors" > "$tmp/meta_auto.out" 2> "$tmp/meta_auto.err"
  [ "$(grep -c "device auto" "$tmp/meta_auto.err")" = 1 ] || fail "meta auto: expected one note"
  grep -q "^meta: multitask on cpu," "$tmp/meta_auto.out" || fail "meta auto did not use the CPU"
  [ "$(tensors_of "$tmp/meta_auto.safetensors")" = "$(tensors_of "$tmp/meta_cpu.safetensors")" ] \
    || fail "meta: auto and cpu trained different models"
  set +e
  "$train" "${mt[@]}" --device cuda --out "$tmp/meta_cuda.safetensors" > /dev/null 2> "$tmp/meta_cuda.err"
  rc=$?
  set -e
  cat "$tmp/meta_cuda.err"
  [ "$rc" -ne 0 ] || fail "meta --device cuda without a GPU exited 0"
  grep -q "device cuda" "$tmp/meta_cuda.err" || fail "meta --device cuda: no reason given"
  test ! -e "$tmp/meta_cuda.safetensors" || fail "meta --device cuda wrote a model"
fi
echo "train_device: OK"
