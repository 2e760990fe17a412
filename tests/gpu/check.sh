#!/usr/bin/env bash
# tests/gpu/check.sh — the GPU issue's one-shot check on a fresh machine
# (built for an H100: 16 cores, CUDA toolkit, no network). Run from the repo
# root. Within about 5 minutes it:
#   1. checks the build dependencies (exit 2 with the list when any is missing:
#      nothing can be installed without a network);
#   2. configures and builds, with -DLTDI_CUDA=ON in build-gpu, only what it
#      runs: the tests/gpu binaries, bench_sampling and ltdi-serve;
#   3. runs `ctest -L gpu`;
#   4. benchmarks generation on CUDA (LTDI_CUDA_CONV=cudnn and =gemm,
#      batches 1..1024) and on the CPU (all cores; and 2 cores pinned with
#      taskset, the target's reference: OpenBLAS per sample and batched, and
#      the daemon's two-worker path);
#   5. prints a summary: test result, heads/s per batch and run, the speed-up
#      at batch 256 over the best 2-core CPU number, floor ratios.
# Every step is timed and the script goes on to the summary when one fails;
# the exit status is 1 when any step failed. With $OUT set, the whole output
# goes to $OUT/check.log and the RESULT lines to $OUT/results.txt.
#
#   usage: tests/gpu/check.sh [--quick]
#     --quick  a dry run: short measurements, CPU batches 1 and 8 only
#   env: CHECK_BUILD_DIR (build-gpu), CHECK_JOBS (nproc), CHECK_CUDA_ARCH (90),
#        CHECK_SECONDS (seconds per CUDA point, 2), CHECK_CPU_SECONDS (1.5)

# The step functions are called through `step`, which shellcheck cannot see.
# shellcheck disable=SC2317
set -u

cd "$(dirname "$0")/../.." || exit 2
quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    *) echo "check.sh: unknown option $arg (usage: tests/gpu/check.sh [--quick])" >&2; exit 2 ;;
  esac
done

bdir=${CHECK_BUILD_DIR:-build-gpu}
jobs=${CHECK_JOBS:-$(nproc)}
arch=${CHECK_CUDA_ARCH:-90}
gpu_s=${CHECK_SECONDS:-2}
cpu_s=${CHECK_CPU_SECONDS:-1.5}
cuda_batches=1,8,64,256,1024
cpu_batches=1,8,64
if [ "$quick" = 1 ]; then
  gpu_s=0.3 cpu_s=0.3 cpu_batches=1,8
fi
if [ -n "${OUT:-}" ]; then
  outdir=$OUT
else
  outdir=$bdir/check-out
fi
mkdir -p "$outdir" || exit 2
log=$outdir/check.log
results=$outdir/results.txt

# ---- step bookkeeping ---------------------------------------------------------
step_names=()
step_status=()
step_secs=()
any_failed=0

# step NAME CMD... — runs CMD, prints its output, records status and time.
step() {
  local name=$1 t0 rc
  shift
  echo
  echo "==== $name: $*"
  t0=$(date +%s.%N)
  "$@"
  rc=$?
  step_names+=("$name")
  step_secs+=("$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')")
  if [ "$rc" -eq 0 ]; then
    step_status+=("ok")
  else
    step_status+=("FAILED (exit $rc)")
    any_failed=1
  fi
  echo "==== $name: ${step_status[-1]} in ${step_secs[-1]} s"
  return 0
}

# ---- 1. dependencies ------------------------------------------------------------
any_exists() {
  local f
  for f in "$@"; do [ -e "$f" ] && return 0; done
  return 1
}

check_deps() {
  local missing=() cmd mod pkg
  if [ -d /usr/local/cuda/bin ] && ! command -v nvcc >/dev/null 2>&1; then
    PATH=$PATH:/usr/local/cuda/bin
  fi
  for cmd in cmake:cmake ctest:cmake cc:gcc make:make pkg-config:pkg-config \
             timeout:coreutils nvcc:"CUDA toolkit (nvcc)"; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || missing+=("${cmd%%:*} (${cmd#*:})")
  done
  if command -v cmake >/dev/null 2>&1; then
    local v
    v=$(cmake --version | awk 'NR == 1 { print $3 }')
    if [ "$(printf '%s\n3.22\n' "$v" | sort -V | head -1)" != "3.22" ]; then
      missing+=("cmake >= 3.22 (found $v)")
    fi
  fi
  if command -v pkg-config >/dev/null 2>&1; then
    for mod in jansson:libjansson-dev freetype2:libfreetype-dev libpng:libpng-dev \
               zlib:zlib1g-dev openblas:libopenblas-dev sqlite3:libsqlite3-dev \
               libmicrohttpd:libmicrohttpd-dev libcurl:libcurl4-openssl-dev \
               criterion:libcriterion-dev; do
      pkg-config --exists "${mod%%:*}" || missing+=("${mod%%:*} (${mod#*:})")
    done
  fi
  local cuda_root
  cuda_root=$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")")
  for pkg in cublas cudnn; do
    if ! ldconfig -p 2>/dev/null | grep -q "lib$pkg\.so " &&
       ! any_exists "$cuda_root"/lib*/lib"$pkg".so "$cuda_root"/targets/*/lib/lib"$pkg".so \
                    /usr/lib/*/lib"$pkg".so; then
      missing+=("lib$pkg.so (CUDA toolkit / cuDNN 9 development package)")
    fi
  done
  if ! any_exists "$cuda_root"/include/cudnn.h /usr/include/cudnn.h /usr/include/*/cudnn.h; then
    missing+=("cudnn.h (cuDNN 9 development package)")
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "check.sh: missing build dependencies (this machine cannot install them):"
    printf '  - %s\n' "${missing[@]}"
    return 2
  fi
  echo "dependencies: ok ($(cmake --version | head -1), $(cc --version | head -1)," \
       "$(nvcc --version | tail -1))"
  command -v taskset >/dev/null 2>&1 || echo "note: no taskset: the 2-core CPU run is not pinned"
  return 0
}

# ---- 2-5. the steps -------------------------------------------------------------
gpu_targets() {
  local f
  for f in tests/gpu/test_*.c; do basename "$f" .c; done
}

build() {
  local keep_going=(-k)
  [ "${CMAKE_GENERATOR:-}" = Ninja ] && keep_going=(-k 0)
  # shellcheck disable=SC2046  # one target per word
  cmake --build "$bdir" -j"$jobs" --target $(gpu_targets) bench_sampling ltdi-serve \
    -- "${keep_going[@]}"
}

run_gpu_tests() {
  local rc
  (cd "$bdir" && timeout 180 ctest -L gpu -V --output-on-failure) >"$outdir/ctest.txt" 2>&1
  rc=$?
  cat "$outdir/ctest.txt"
  if grep -q "No tests were found" "$outdir/ctest.txt"; then
    echo "no test labelled gpu: was the build configured with LTDI_CUDA=ON?"
    return 1
  fi
  return "$rc"
}

# with_env NAME=VALUE CMD... — CMD with one more environment variable.
with_env() {
  local kv=$1
  shift
  (export "${kv?}"; "$@")
}

# bench TAG [taskset cpus|-] ARGS... — one bench_sampling run, its RESULT lines kept.
bench() {
  local tag=$1 pin=$2 rc
  shift 2
  local cmd=("$bdir/bench_sampling" --tag "$tag" "$@")
  [ -x "$bdir/bench_sampling" ] || { echo "bench_sampling was not built"; return 1; }
  if [ "$pin" != - ] && command -v taskset >/dev/null 2>&1; then cmd=(taskset -c "$pin" "${cmd[@]}"); fi
  timeout 90 "${cmd[@]}" >"$outdir/bench-$tag.txt" 2>&1
  rc=$?
  cat "$outdir/bench-$tag.txt"
  grep '^RESULT ' "$outdir/bench-$tag.txt" >>"$results"
  return "$rc"
}

# ---- summary ----------------------------------------------------------------------
# field TAG BATCH KEY — KEY of the gen RESULT of run TAG at BATCH ("" when none).
field() {
  awk -v tag="tag=$1" -v batch="batch=$2" -v key="$3" '
    $2 == "kind=gen" && index(" " $0 " ", " " tag " ") && index(" " $0 " ", " " batch " ") {
      for (i = 1; i <= NF; i++) if (index($i, key "=") == 1) { print substr($i, length(key) + 2); exit }
    }' "$results"
}

summary() {
  local i tag b v best=0 best_at="" ncpu
  ncpu=$(nproc)
  echo
  echo "================================ summary ================================"
  for i in "${!step_names[@]}"; do
    printf '  %-24s %-18s %7s s\n' "${step_names[$i]}" "${step_status[$i]}" "${step_secs[$i]}"
  done
  echo
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "  GPU: $(nvidia-smi -L | head -1)"
  else
    echo "  GPU: none visible (no nvidia-smi or no device): GPU tests skip, CUDA benches fail"
  fi
  echo "  CPU: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $ncpu logical CPUs"
  if [ -f "$outdir/ctest.txt" ]; then
    echo "  gpu tests: $(grep -E 'tests passed|tests failed' "$outdir/ctest.txt" | tail -1)"
    grep -E 'Synthesis|Test +#' "$outdir/ctest.txt" | sed 's/^/    /' | head -20
    if grep -q 'Synthesis: Tested: 0 ' "$outdir/ctest.txt"; then
      echo "    (Criterion's 'Tested: 0' = every test of that binary skipped itself: no usable GPU)"
    fi
  fi
  [ -s "$results" ] || { echo "  no RESULT lines: nothing was measured"; return; }
  local tags=(cuda-cudnn cuda-gemm "cpu-$ncpu" cpu2 cpu2-batched cpu2-serve)
  echo
  echo "  heads/s (generations of the full T-step chain per second x batch):"
  printf '  %6s' batch
  for tag in "${tags[@]}"; do printf ' %13s' "$tag"; done
  echo
  for b in 1 8 64 256 1024; do
    printf '  %6s' "$b"
    for tag in "${tags[@]}"; do
      v=$(field "$tag" "$b" heads_per_s)
      printf ' %13s' "${v:--}"
    done
    echo
  done
  # The 2-core reference: the best of its runs (they stop at batch 64).
  for tag in cpu2 cpu2-batched cpu2-serve; do
    for b in 1 8 64; do
      v=$(field "$tag" "$b" heads_per_s)
      if [ -n "$v" ] && awk -v a="$v" -v b="$best" 'BEGIN { exit !(a > b) }'; then
        best=$v best_at="$tag, batch $b"
      fi
    done
  done
  echo
  if [ -n "$best_at" ]; then
    echo "  2-core CPU reference: $best heads/s, the best 2-core point ($best_at; measured up to batch 64 only)"
  else
    echo "  2-core CPU reference: not measured"
  fi
  for tag in cuda-cudnn cuda-gemm; do
    v=$(field "$tag" 256 heads_per_s)
    if [ -n "$v" ] && [ -n "$best_at" ]; then
      awk -v g="$v" -v c="$best" -v t="$tag" \
        'BEGIN { printf "  speed-up at batch 256, %s: %.1fx the 2-core CPU\n", t, g / c }'
    else
      echo "  speed-up at batch 256, $tag: not available"
    fi
    for b in 256 1024; do
      v=$(field "$tag" "$b" floor_ratio)
      [ -n "$v" ] && echo "    floor ratio (measured / sgemm-rate floor) at batch $b: $v"
    done
  done
  echo "  RESULT lines: $results"
}

main() {
  echo "check.sh: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname), build dir $bdir," \
       "quick=$quick, CUDA ${gpu_s}s / CPU ${cpu_s}s per point"
  : >"$results"
  step dependencies check_deps
  if [ "${step_status[0]}" != ok ]; then
    echo "check.sh: stopping: install the missing packages (scripts/setup.sh lists them) and rerun"
    return 2
  fi
  step configure cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=Release -DLTDI_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$arch"
  step build build
  step gpu-tests run_gpu_tests
  step bench-cuda-cudnn with_env LTDI_CUDA_CONV=cudnn bench cuda-cudnn - --device cuda \
    --batches "$cuda_batches" --seconds "$gpu_s"
  step bench-cuda-gemm with_env LTDI_CUDA_CONV=gemm bench cuda-gemm - --device cuda \
    --batches "$cuda_batches" --seconds "$gpu_s"
  step "bench-cpu-$(nproc)" bench "cpu-$(nproc)" - --device cpu --threads "$(nproc)" \
    --batches "$cpu_batches" --seconds "$cpu_s"
  step bench-cpu2 bench cpu2 0,1 --device cpu --threads 2 --batches "$cpu_batches" \
    --seconds "$cpu_s"
  step bench-cpu2-batched bench cpu2-batched 0,1 --device cpu --threads 2 --mode batched \
    --batches "$cpu_batches" --seconds "$cpu_s"
  # The daemon's own CPU path (two workers, batch-invariant sgemm): the
  # fastest bit-identical 2-core number, hence the fair reference.
  step bench-cpu2-serve bench cpu2-serve 0,1 --device cpu --mode serve --workers 2 \
    --batches "$cpu_batches" --seconds "$cpu_s"
  summary
  return "$any_failed"
}

main 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo "check.sh: exit $status; log $log" | tee -a "$log"
exit "$status"
