#!/usr/bin/env bash
# tests/bench/bench_dist.sh TRAIN_BINARY [RANKS]
#
# Strong scaling of the distributed commands (docs/DISTRIBUTED.md): the same
# job on one process and on RANKS (default 2) ranks of one thread each, on
# loopback. Not run by ctest. Prints one line per job: the command's own
# time (prepare: the task loop; meta: the training loop) and the wall time
# of the whole launch, each the least of REPEAT (default 3) runs, since a
# shared machine only ever adds time; and checks that the outputs are
# identical.
#   prepare  linear head, 5-way 1-shot, 16000 tasks over 64-dim features
#   meta     the shipped U-Net's size (P = 2245, 5 x 64-dim condition, base
#            channels 32), batch 32: multi-task with --grad-groups 2 (the
#            one-process baseline also as one group, today's path), and
#            REPTILE with 2 tasks of 5 inner steps per outer step
set -euo pipefail
train=$1
ranks=${2:-2}
repeat=${REPEAT:-3}
# BTL=tcp (the default, as the tests: loopback TCP) or BTL=sm (Open MPI's
# own choice within a node: shared memory).
mpi=(mpirun --allow-run-as-root --oversubscribe)
case ${BTL:-tcp} in
  tcp) mpi+=(--mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo) ;;
  sm) ;;
  *) echo "bench_dist.sh: BTL must be tcp or sm" >&2; exit 2 ;;
esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

synth="$(dirname "$0")/../integration/lib/synth.py"
python3 "$synth" bench "$tmp"
tensors_of() { python3 "$synth" hash "$1"; }

# run LABEL N ARGS...: N = 0 a plain process, else N ranks. Prints the
# label, the command's own seconds and the wall seconds (least of $repeat).
run() {
  local label=$1 n=$2
  shift 2
  local t0 t1 own wall best_own=999999 best_wall=999999
  for _ in $(seq 1 "$repeat"); do
    t0=$(date +%s.%N)
    if [ "$n" = 0 ]; then "$train" "$@" > "$tmp/out" 2>&1; else "${mpi[@]}" -np "$n" "$train" "$@" > "$tmp/out" 2>&1; fi
    t1=$(date +%s.%N)
    own=$(sed -n 's/^prepare: wrote [^:]*: [0-9]* tasks ([0-9]* resumed), \([0-9.]*\) s,.*/\1/p; s/^meta: .* samples, \([0-9.]*\) s$/\1/p' "$tmp/out" | head -n 1)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    best_own=$(awk -v a="${own:-999999}" -v b="$best_own" 'BEGIN { print (a < b ? a : b) }')
    best_wall=$(awk -v a="$wall" -v b="$best_wall" 'BEGIN { print (a < b ? a : b) }')
  done
  printf '%-44s own %7.2f s   wall %7.2f s\n' "$label" "$best_own" "$best_wall"
}

echo "btl ${BTL:-tcp}; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
prep=(prepare --features "$tmp/f64.safetensors" --tasks 16000 --ways 5 --shots 1 --quiet)
run "prepare, 1 process, 1 thread" 0 "${prep[@]}" --threads 1 --out "$tmp/p0.st"
run "prepare, 1 process, $ranks threads" 0 "${prep[@]}" --threads "$ranks" --out "$tmp/pt.st"
run "prepare, $ranks ranks x 1 thread" "$ranks" "${prep[@]}" --threads 1 --out "$tmp/pn.st"
cmp "$tmp/p0.st" "$tmp/pn.st" || echo "WARNING: prepare outputs differ"

mt=(meta --trajectories "$tmp/traj.safetensors" --outer-steps 60 --batch 32 --T 20 --threads 1
    --val-tasks 2 --val-points 0 --checkpoint-every 1000 --device cpu --quiet --restart)
run "meta multitask, 1 process, 1 group" 0 "${mt[@]}" --grad-groups 1 --out "$tmp/m1.st"
run "meta multitask, 1 process, --grad-groups $ranks" 0 "${mt[@]}" --grad-groups "$ranks" --out "$tmp/m0.st"
run "meta multitask, $ranks ranks, --grad-groups $ranks" "$ranks" "${mt[@]}" --grad-groups "$ranks" --out "$tmp/mn.st"
[ "$(tensors_of "$tmp/m0.st")" = "$(tensors_of "$tmp/mn.st")" ] || echo "WARNING: meta multitask models differ"
rp=("${mt[@]}" --algo reptile --meta-batch "$ranks" --inner-steps 5 --outer-steps 10)
run "meta reptile, 1 process" 0 "${rp[@]}" --out "$tmp/r0.st"
run "meta reptile, $ranks ranks" "$ranks" "${rp[@]}" --out "$tmp/rn.st"
[ "$(tensors_of "$tmp/r0.st")" = "$(tensors_of "$tmp/rn.st")" ] || echo "WARNING: meta reptile models differ"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
