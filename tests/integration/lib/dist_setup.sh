# tests/integration/lib/dist_setup.sh — what the distributed tests
# (tests/integration/dist_*.sh) share, sourced after `train=$1`: fail(),
# the skip (exit 77) when ltdi-train was built without MPI, the loopback
# mpirun command line in `mpi`, a scratch folder `tmp`, and an exit trap
# that kills only the job whose pid is in `job` (when set) with its ranks,
# then removes tmp. Not a test itself (the test glob is integration/*.sh).
fail() { echo "FAIL: $*" >&2; exit 1; }
if ! "$train" --help | grep -q "^distributed: MPI"; then
  echo "SKIP: ltdi-train built without MPI (LTDI_MPI=OFF)"
  exit 77
fi
command -v mpirun > /dev/null || fail "ltdi-train is built with MPI but mpirun is not on PATH (scripts/setup.sh installs openmpi-bin)"
# Loopback only; as root Open MPI wants to be told that it may run.
mpi=(mpirun --allow-run-as-root --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo
     --mca oob_tcp_if_include lo)
tmp=$(mktemp -d)
job=
dist_cleanup() {
  # Only the job this script started and its ranks, by their ids.
  if [ -n "$job" ]; then
    for p in $(pgrep -P "$job" 2> /dev/null); do kill -9 "$p" 2> /dev/null || true; done
    kill -9 "$job" 2> /dev/null || true
  fi
  rm -rf "$tmp"
}
trap dist_cleanup EXIT
