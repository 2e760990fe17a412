#!/usr/bin/env bash
# tests/integration/dist_faults.sh TRAIN_BINARY SOURCE_DIR
#
# A rank killed with SIGKILL in the middle of a distributed job
# (docs/DISTRIBUTED.md, "Faults"):
#   - the job ends by itself within seconds (bounded by a timeout) with a
#     non-zero status and a message naming the dead rank, and writes no
#     output file;
#   - prepare (rank 1 killed): the journals are kept, and resuming with the
#     same rank count, and with another one, gives a file byte-identical to
#     an uninterrupted run's;
#   - meta (rank 0, the writer, killed): the last checkpoint is intact and
#     resuming with the same rank count gives a model bit-identical to an
#     uninterrupted run's.
# Exits 77 (skipped) when ltdi-train was built without MPI.
set -euo pipefail
train=$1
. "$(dirname "$0")/lib/dist_setup.sh"

synth="$(dirname "$0")/lib/synth.py"
python3 "$synth" faults "$tmp"
# The tensors of a safetensors file without its metadata (meta's model
# records its wall time there).
tensors_of() { python3 "$synth" hash "$1"; }

# The pid of rank $2 among the children of mpirun $1 (its environment says
# which rank it is), or nothing yet.
rank_pid() {
  local p
  for p in $(pgrep -P "$1" 2> /dev/null); do
    if tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
      echo "$p"
      return
    fi
  done
}

# Starts "$@" under mpirun in the background; once `ready` (a function)
# succeeds, SIGKILLs rank $rank and checks that the job ends by itself
# within 30 s with a non-zero status and a message about the dead rank.
# Sets killed=1 when it killed, 0 when the job finished first.
kill_rank_when() {
  local ready=$1 rank=$2 log=$3
  shift 3
  "${mpi[@]}" "$@" > "$log" 2>&1 &
  job=$!
  killed=0
  for _ in $(seq 1 3000); do
    kill -0 "$job" 2> /dev/null || break
    if "$ready"; then
      local pid
      pid=$(rank_pid "$job" "$rank")
      if [ -n "$pid" ]; then
        kill -9 "$pid"
        killed=1
        break
      fi
    fi
    sleep 0.01
  done
  if [ "$killed" = 1 ]; then
    local t0=$SECONDS
    while kill -0 "$job" 2> /dev/null; do
      [ $((SECONDS - t0)) -lt 30 ] || { cat "$log"; fail "the job still runs 30 s after rank $rank died"; }
      sleep 0.1
    done
    local rc=0
    wait "$job" || rc=$?
    job=
    echo "job ended $((SECONDS - t0)) s after rank $rank was killed, status $rc"
    [ "$rc" != 0 ] || fail "the job exited 0 after rank $rank was killed"
    grep -qi "rank $rank.*signal 9\|rank $rank.*killed" "$log" ||
      { cat "$log"; fail "no message that rank $rank died"; }
  else
    wait "$job" || true
    job=
    echo "note: the job finished before rank $rank could be killed"
  fi
}

echo "== prepare: uninterrupted reference (one process)"
prep=(prepare --features "$tmp/f16.safetensors" --head mlp --hidden 4 --steps 1000 --tasks 1200
      --ways 5 --threads 1 --quiet)
"$train" "${prep[@]}" --out "$tmp/ref.safetensors" > /dev/null

out=$tmp/cut.safetensors
journals_ready() { # both ranks have journalled tasks (more than a header)
  [ -s "$out.journal" ] && [ -s "$out.journal.1" ] &&
    [ "$(stat -c %s "$out.journal")" -gt 4096 ] && [ "$(stat -c %s "$out.journal.1")" -gt 4096 ]
}
for resume_ranks in 2 3; do
  echo "== prepare on 2 ranks, rank 1 killed, resumed on $resume_ranks ranks"
  rm -f "$out" "$out".journal*
  kill_rank_when journals_ready 1 "$tmp/cut.log" -np 2 "$train" "${prep[@]}" --out "$out"
  if [ "$killed" = 1 ]; then
    test ! -e "$out" || fail "a killed job left an output file"
    test -s "$out.journal" && test -s "$out.journal.1" || fail "a killed job left no journals"
  fi
  "${mpi[@]}" -np "$resume_ranks" "$train" "${prep[@]}" --out "$out" > "$tmp/resume.log" 2>&1 ||
    { cat "$tmp/resume.log"; fail "the resume on $resume_ranks ranks failed"; }
  cat "$tmp/resume.log"
  if [ "$killed" = 1 ]; then
    resumed=$(sed -n 's/.*(\([0-9]*\) resumed).*/\1/p' "$tmp/resume.log")
    [ -n "$resumed" ] && [ "$resumed" -gt 0 ] && [ "$resumed" -lt 1200 ] ||
      fail "expected a partial resume, got '$resumed' resumed tasks"
  fi
  cmp "$tmp/ref.safetensors" "$out" || fail "the resumed job's file differs from one process's"
  ls "$tmp" | grep -q "cut.safetensors.journal" && fail "journals left behind after completion"
done

echo "== meta on 2 ranks: uninterrupted reference"
mt=(meta --trajectories "$tmp/mlp_traj.safetensors" --outer-steps 1500 --batch 6 --T 4
    --base-ch 8 --val-tasks 2 --val-points 1 --checkpoint-every 20 --device cpu --quiet)
"${mpi[@]}" -np 2 "$train" "${mt[@]}" --out "$tmp/mref.safetensors" > /dev/null 2>&1
ref=$(tensors_of "$tmp/mref.safetensors")
mout=$tmp/mcut.safetensors
ckpt_ready() { [ -s "$mout.ckpt" ]; }
echo "== meta on 2 ranks, rank 0 (the writer) killed, resumed on 2 ranks"
kill_rank_when ckpt_ready 0 "$tmp/mcut.log" -np 2 "$train" "${mt[@]}" --out "$mout"
if [ "$killed" = 1 ]; then
  test ! -e "$mout" || fail "a killed job left a model"
  test -s "$mout.ckpt" || fail "a killed job left no checkpoint"
fi
"${mpi[@]}" -np 2 "$train" "${mt[@]}" --out "$mout" > "$tmp/mresume.log" 2>&1 ||
  { cat "$tmp/mresume.log"; fail "the meta resume failed"; }
grep "outer steps" "$tmp/mresume.log"
if [ "$killed" = 1 ]; then
  resumed=$(sed -n 's/.*steps (\([0-9]*\) resumed).*/\1/p' "$tmp/mresume.log")
  [ -n "$resumed" ] && [ "$resumed" -gt 0 ] && [ "$resumed" -lt 1500 ] ||
    fail "expected to resume from the checkpoint, got '$resumed' resumed steps"
fi
[ "$(tensors_of "$mout")" = "$ref" ] || fail "the resumed model differs from the uninterrupted one"
test ! -e "$mout.ckpt" || fail "the checkpoint outlived the finished run"
echo "PASS"
