#!/usr/bin/env bash
# scripts/check_srun.sh [TRAIN_BINARY]   (default build/ltdi-train)
#
# A manual check, not part of ctest or CI (it installs Slurm): ltdi-train
# launched by Slurm's srun on this one machine gives the one-process output,
# as tests/integration/dist_mpi.sh checks for mpirun. It
#   - installs slurmctld, slurmd, slurm-client and munge when missing
#     (Debian; needs root);
#   - starts munged, slurmctld and slurmd with a single-node slurm.conf in a
#     scratch folder (SLURM_CONF points there; free ports, no cgroups, no
#     accounting), and waits until sinfo shows the node idle;
#   - runs under `srun -n 2 --mpi=pmix` the small jobs of dist_mpi.sh and
#     compares them with one plain process: prepare by cmp, meta (multi-task
#     with --grad-groups, REPTILE; the U-Net and the class-token denoiser)
#     by a hash of the tensors without the metadata, eval by the JSON's
#     methods; and checks that `data` is refused;
#   - the same under `--mpi=pmi2` when srun lists it and Open MPI has a PMI-2
#     client (Debian's has none); otherwise checks that `srun --mpi=pmi2`
#     fails in MPI_Init on every task and writes nothing;
#   - checks that `srun -n 2 --mpi=none` is refused by both tasks, that
#     a batch step (`sbatch -n 2`, one process) runs as one process, and that
#     mpirun inside an allocation (`salloc -n 2 mpirun`) gives the same file;
#   - stops the daemons it started and removes the scratch folder.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
train=${1:-build/ltdi-train}
fail() { echo "FAIL: $*" >&2; exit 1; }
test -x "$train" || fail "no ltdi-train at $train"
train=$(cd "$(dirname "$train")" && pwd)/$(basename "$train")
"$train" --help | grep -q "^distributed: MPI" || fail "$train was built without MPI (LTDI_MPI=OFF)"
model=$src/models/glyphs-5w1s-lt.safetensors
test -f "$model" || fail "no shipped model $model"

if ! command -v slurmctld > /dev/null || ! command -v slurmd > /dev/null ||
  ! command -v srun > /dev/null || ! command -v munged > /dev/null; then
  [ "$(id -u)" = 0 ] || fail "Slurm is not installed and installing it needs root"
  echo "== installing Slurm (slurmctld slurmd slurm-client munge)"
  apt-get update -q > /dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    slurmctld slurmd slurm-client munge > /dev/null
fi
[ "$(id -u)" = 0 ] || fail "slurmd runs as root here (SlurmdUser=root): run as root"

tmp=$(mktemp -d)
chmod 0711 "$tmp" # munged wants its socket folder reachable, not writable, by others
pids=()
cleanup() {
  # This cluster's jobs (none are left unless a check failed midway), then
  # only the daemons this script started, by their ids, newest first.
  local i
  if [ ${#pids[@]} -ge 3 ]; then
    timeout 10 scancel -u "$(id -un)" 2> /dev/null || true
    for _ in $(seq 50); do [ -z "$(squeue -h 2> /dev/null)" ] && break; sleep 0.1; done
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2> /dev/null || true; done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    for _ in $(seq 50); do kill -0 "${pids[i]}" 2> /dev/null || break; sleep 0.1; done
    kill -9 "${pids[i]}" 2> /dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap "exit 143" INT TERM
show_logs() {
  for f in munged.out munged.log slurmctld.log slurmd.log; do
    echo "--- $f (last lines)" >&2
    tail -n 20 "$tmp/$f" >&2 2> /dev/null || true
  done
}

# munge: a key of its own, a socket in the scratch folder.
mkdir -p "$tmp/munge" "$tmp/state" "$tmp/spool" "$tmp/data"
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 0400 "$tmp/munge/munge.key"
sock=$tmp/munge/munge.socket
munged -F --force --key-file="$tmp/munge/munge.key" --socket="$sock" \
  --pid-file="$tmp/munge/munged.pid" --seed-file="$tmp/munge/munged.seed" \
  --log-file="$tmp/munged.log" > "$tmp/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { show_logs; fail "munged did not start"; }

# Two free TCP ports for slurmctld and slurmd (others may run a Slurm here).
read -r ctld_port d_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')

export SLURM_CONF=$tmp/slurm.conf
cat > "$SLURM_CONF" << EOF
ClusterName=ltdi-check
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
InactiveLimit=0
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -i > "$tmp/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -N localhost > "$tmp/slurmd.out" 2>&1 &
pids+=($!)
state=
for _ in $(seq 60); do
  state=$(sinfo -h -N -o %T 2> /dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.5
done
[ "$state" = idle ] || { show_logs; fail "the node is not idle after 30 s (sinfo: '$state')"; }
listed=$(srun --mpi=list 2>&1 | grep -owE "none|pmi2|pmix|pmix_v[0-9]+" | sort -u | tr '\n' ' ')
echo "== $(sinfo --version), node localhost idle; srun --mpi=list: $listed"

# Inputs, deterministic (those of dist_mpi.sh, tests/integration/lib/synth.py):
# 16-dim features of 12 classes x 8 (prepare), 64-dim features of 8 classes
# x 6 (eval with the shipped 64-dim model), and a tiny mlp-head trajectories
# file (P = 23).
synth=$src/tests/integration/lib/synth.py
python3 "$synth" dist "$tmp/data"

# The tensors of a safetensors file without its metadata (meta's model
# records its wall time there).
tensors_of() { python3 "$synth" hash "$1"; }
methods_of() { python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["methods"], sort_keys=True))' "$1"; }

# Open MPI on loopback, as the tests run it under mpirun.
export OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo
d=$tmp/data
prep=(prepare --features "$d/f16.safetensors" --tasks 300 --ways 5 --threads 1 --quiet)
unet=(meta --trajectories "$d/mlp_traj.safetensors" --outer-steps 6 --batch 6 --T 4 --base-ch 8
      --val-tasks 2 --val-points 1 --device cpu --quiet --restart)
rept=(--algo reptile --meta-batch 3 --inner-steps 2)
tok=(meta --trajectories "$d/prep0.safetensors" --outer-steps 4 --batch 4 --T 10 --val-tasks 4
     --val-points 1 --device cpu --quiet --restart)
# shellcheck disable=SC2054  # --methods takes a comma-separated list
ev=(eval --features "$d/f64.safetensors" --model "$model" --ways 5 --shots 1 --queries 2
    --episodes 7 --samples 2 --refine-steps 2 --threads 1 --device cpu
    --methods nearest_centroid,finetune,lt_di,lt_di_best_of_n)

echo "== one process (the reference)"
"$train" "${prep[@]}" --out "$d/prep0.safetensors" > "$d/prep0.out"
cat "$d/prep0.out"
"$train" "${unet[@]}" --grad-groups 6 --out "$d/mt0.safetensors" > /dev/null 2>&1 || fail "meta multitask, one process"
"$train" "${unet[@]}" "${rept[@]}" --out "$d/rep0.safetensors" > /dev/null 2>&1 || fail "meta reptile, one process"
"$train" "${tok[@]}" --grad-groups 4 --out "$d/tok0.safetensors" > /dev/null 2>&1 || fail "class tokens, one process"
"$train" "${ev[@]}" --json "$d/eval0.json" > /dev/null 2>&1 || fail "eval, one process"

# srun -n 2 with a time limit, so a hang fails instead of waiting.
on_srun() { timeout 120 srun -n 2 --mpi="$plugin" --time=2 "$train" "$@"; }

# pmix always; pmi2 only with an Open MPI that has a PMI-2 client (its pmix
# component s2): without one, MPI_Init must fail on every task, not start
# two one-rank jobs that each do the whole job.
case " $listed " in *" pmix "*) ;; *) fail "srun --mpi=list has no pmix (the plugin is in slurm-wlm-basic-plugins)" ;; esac
plugins=pmix
if [[ " $listed " == *" pmi2 "* ]]; then
  if ompi_info --parsable 2> /dev/null | grep -q "^mca:pmix:s2:"; then
    plugins="pmix pmi2"
  else
    echo "== srun -n 2 --mpi=pmi2: this Open MPI has no PMI-2 client (pmix components: $(ompi_info --parsable 2> /dev/null | sed -n 's/^mca:pmix:\([^:]*\):.*/\1/p' | sort -u | paste -sd ' ')); it must refuse"
    set +e
    plugin=pmi2 on_srun "${prep[@]}" --out "$d/prep_pmi2.safetensors" > "$d/prep_pmi2.out" 2>&1
    rc=$?
    set -e
    [ "$rc" != 0 ] || fail "pmi2 without a PMI-2 client in Open MPI: srun exited 0"
    [ "$rc" != 124 ] || fail "pmi2 without a PMI-2 client in Open MPI: the job hung"
    n=$(grep -c "OMPI was not built with SLURM's PMI support" "$d/prep_pmi2.out" || true)
    [ "$n" = 2 ] || { cat "$d/prep_pmi2.out"; fail "pmi2: expected Open MPI's refusal from both tasks, got $n"; }
    test ! -e "$d/prep_pmi2.safetensors" || fail "pmi2: a refused job wrote output"
    echo "refused by MPI_Init on both tasks (status $rc), no output written"
  fi
fi
for plugin in $plugins; do
  echo "== srun -n 2 --mpi=$plugin"
  on_srun "${prep[@]}" --out "$d/prep_$plugin.safetensors" > "$d/prep_$plugin.out" 2>&1 ||
    { cat "$d/prep_$plugin.out"; fail "$plugin: prepare failed"; }
  cat "$d/prep_$plugin.out"
  grep -q "x 2 ranks" "$d/prep_$plugin.out" || fail "$plugin: prepare does not say it ran on 2 ranks"
  [ "$(grep -c . "$d/prep_$plugin.out")" = 1 ] || fail "$plugin: prepare reported more than once"
  cmp "$d/prep0.safetensors" "$d/prep_$plugin.safetensors" || fail "$plugin: prepare differs from one process"
  echo "prepare: cmp equal"

  on_srun "${unet[@]}" --grad-groups 6 --out "$d/mt_$plugin.safetensors" > "$d/mt_$plugin.out" 2>&1 ||
    { cat "$d/mt_$plugin.out"; fail "$plugin: meta multitask failed"; }
  grep -q "^meta: multitask on cpu x 2 ranks" "$d/mt_$plugin.out" || fail "$plugin: meta does not say it ran on 2 ranks"
  [ "$(grep -c "^meta: wrote" "$d/mt_$plugin.out")" = 1 ] || fail "$plugin: meta reported more than once"
  on_srun "${unet[@]}" "${rept[@]}" --out "$d/rep_$plugin.safetensors" > "$d/rep_$plugin.out" 2>&1 ||
    { cat "$d/rep_$plugin.out"; fail "$plugin: meta reptile failed"; }
  on_srun "${tok[@]}" --grad-groups 4 --out "$d/tok_$plugin.safetensors" > "$d/tok_$plugin.out" 2>&1 ||
    { cat "$d/tok_$plugin.out"; fail "$plugin: meta on class tokens failed"; }
  for m in mt rep tok; do
    [ "$(tensors_of "$d/${m}_$plugin.safetensors")" = "$(tensors_of "$d/${m}0.safetensors")" ] ||
      fail "$plugin: meta ($m) tensors differ from one process"
  done
  echo "meta: tensors equal (U-Net multitask --grad-groups 6, U-Net REPTILE, class tokens --grad-groups 4)"

  on_srun "${ev[@]}" --json "$d/eval_$plugin.json" > "$d/eval_$plugin.out" 2>&1 ||
    { cat "$d/eval_$plugin.out"; fail "$plugin: eval failed"; }
  [ "$(grep -c "^nearest_centroid" "$d/eval_$plugin.out")" = 1 ] || fail "$plugin: eval printed its table more than once"
  [ "$(methods_of "$d/eval0.json")" = "$(methods_of "$d/eval_$plugin.json")" ] ||
    fail "$plugin: eval's methods differ from one process"
  echo "eval: methods equal"

  set +e
  on_srun data glyphs --small --out "$d/glyphs_$plugin" --quiet > "$d/data_$plugin.out" 2>&1
  rc=$?
  set -e
  [ "$rc" != 0 ] || fail "$plugin: data under srun exited 0"
  grep -q "does not run distributed" "$d/data_$plugin.out" || { cat "$d/data_$plugin.out"; fail "$plugin: data under srun: no reason given"; }
  test ! -e "$d/glyphs_$plugin" || fail "$plugin: data under srun wrote output"
  echo "data: refused (status $rc)"
done

echo "== srun -n 2 --mpi=none (no process manager: every task must refuse)"
set +e
timeout 120 srun -n 2 --mpi=none --time=2 "$train" "${prep[@]}" --out "$d/prep_none.safetensors" > "$d/prep_none.out" 2>&1
rc=$?
set -e
[ "$rc" != 0 ] || fail "--mpi=none: srun exited 0"
grep -q "without an MPI process manager" "$d/prep_none.out" || { cat "$d/prep_none.out"; fail "--mpi=none: no reason given"; }
[ "$(grep -c "without an MPI process manager" "$d/prep_none.out")" = 2 ] || { cat "$d/prep_none.out"; fail "--mpi=none: not both tasks refused"; }
test ! -e "$d/prep_none.safetensors" || fail "--mpi=none: a refused job wrote output"
echo "refused by both tasks (status $rc), no output: $(grep -m1 -o "started by srun as task 0.*" "$d/prep_none.out" | cut -c1-60)..."

echo "== a batch step (sbatch -n 2, no srun): one process"
timeout 120 sbatch -n 2 --time=2 -W -o "$d/batch.out" \
  --wrap "$(printf '%q ' "$train" "${prep[@]}" --out "$d/prep_batch.safetensors")" > /dev/null ||
  { cat "$d/batch.out"; fail "ltdi-train in a batch step failed"; }
grep -q "x 2 ranks" "$d/batch.out" && fail "the batch step ran on ranks"
cmp "$d/prep0.safetensors" "$d/prep_batch.safetensors" || fail "the batch step's prepare differs from one process"
echo "prepare: cmp equal"

echo "== mpirun -np 2 inside an allocation (salloc -n 2)"
timeout 120 salloc -n 2 --time=2 mpirun --allow-run-as-root --mca btl self,tcp --mca btl_tcp_if_include lo \
  --mca oob_tcp_if_include lo "$train" "${prep[@]}" --out "$d/prep_salloc.safetensors" > "$d/salloc.out" 2>&1 ||
  { cat "$d/salloc.out"; fail "mpirun inside salloc failed"; }
grep -q "x 2 ranks" "$d/salloc.out" || { cat "$d/salloc.out"; fail "mpirun inside salloc: not 2 ranks"; }
cmp "$d/prep0.safetensors" "$d/prep_salloc.safetensors" || fail "mpirun inside salloc: prepare differs from one process"
echo "prepare: cmp equal"
echo "PASS"
