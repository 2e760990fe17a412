#!/usr/bin/env bash
# tests/integration/registry_sigkill.sh TRAIN_BINARY SOURCE_DIR
#
# The registry survives SIGKILL mid-write: a writer process (two threads,
# blobs up to ~100 KB, multi-statement transactions) is killed with SIGKILL at
# a random moment, eight times over on the same database; after every kill the
# database must pass integrity_check and foreign_key_check, every stored task
# must hold exactly the bytes its id determines, and every task the writer saw
# commit must still be there. The writer/checker is the registry_crash helper
# built next to the daemon (found beside TRAIN_BINARY, in its tests/ folder,
# or named by $LTDI_REGISTRY_CRASH).
set -euo pipefail
train=$1
bindir=$(dirname "$train")
helper=${LTDI_REGISTRY_CRASH:-}
for cand in "$bindir/registry_crash" "$bindir/tests/registry_crash" "$bindir/server/registry_crash"; do
  if [ -z "$helper" ] && [ -x "$cand" ]; then helper=$cand; fi
done
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -n "$helper" ] || fail "registry_crash helper not built (looked beside $train)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
db=$tmp/registry.db
log=$tmp/committed.log
: > "$log"

prev=0
for round in 1 2 3 4 5 6 7 8; do
  "$helper" write "$db" "$log" "$round" &
  pid=$!
  # 0.2 .. 1.2 s: long enough to commit something, random within the loop.
  sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.3f", 0.2 + (r % 1000) / 1000 }')"
  kill -0 "$pid" 2>/dev/null || fail "writer exited on its own in round $round"
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  n=$("$helper" check "$db" "$log") || fail "database inconsistent after kill $round"
  logged=$(grep -c . "$log" || true)
  echo "round $round: $n tasks stored, $logged acknowledged"
  [ "$n" -ge "$logged" ] || fail "fewer tasks stored than acknowledged"
  prev=$n
done
[ "$prev" -gt 0 ] || fail "the writer never committed a task"
echo "registry_sigkill: ok"
