#!/usr/bin/env bash
# scripts/gpu_dryrun.sh — tests/gpu/check.sh in a machine as bare as the GPU
# one, before any GPU minutes are spent on it. A minimal Debian bookworm root
# (debootstrap --variant=minbase) holds a compiler toolchain, CMake, ninja
# and python3 and nothing else: none of the project's -dev packages, no
# pkg-config, no curl. The CUDA toolkit is bind-mounted read-only at its own
# path; what would travel to the GPU machine (tracked and untracked-not-
# ignored files, and gpu-bundle/) is copied in; check.sh --quick runs there
# with no network (unshare -n). There is no GPU either, so the GPU tests
# skip and the CUDA benchmarks fail cleanly; every other step must pass.
#
# The root is made once and kept (DRYRUN_ROOT, /var/tmp/ltdi-gpu-dryroot,
# outside the repo); each run copies the tree afresh, so the build starts
# from nothing as it will there. Mounts are undone on exit. Needs root,
# debootstrap (apt-get install debootstrap) and Debian's mirror.
#
#   usage: scripts/gpu_dryrun.sh [--full] [--reuse-build]
#     --full         check.sh without --quick (the full CPU benchmarks)
#     --reuse-build  keep the last run's build-gpu (faster; no longer fresh)
#   env: DRYRUN_ROOT, DRYRUN_MIRROR (http://deb.debian.org/debian),
#        DRYRUN_JOBS (2: build jobs), DRYRUN_EXTRA (more packages in the
#        root, e.g. "pkgconf zlib1g-dev curl" to try a machine that has some:
#        a root of its own per set), CUDA_HOME (/usr/local/cuda, resolved)
# Exit status: 0 when every step but the CUDA benchmarks passed.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=--quick
reuse=0
for arg in "$@"; do
  case "$arg" in
    --full) quick="" ;;
    --reuse-build) reuse=1 ;;
    *) echo "gpu_dryrun.sh: unknown option $arg (usage: scripts/gpu_dryrun.sh [--full] [--reuse-build])" >&2; exit 2 ;;
  esac
done

root=${DRYRUN_ROOT:-/var/tmp/ltdi-gpu-dryroot}
mirror=${DRYRUN_MIRROR:-http://deb.debian.org/debian}
jobs=${DRYRUN_JOBS:-2}
extra=${DRYRUN_EXTRA:-}
packages="build-essential cmake ninja-build python3 $extra"
if [ -n "$extra" ]; then root=$root-$(echo "$extra" | md5sum | cut -c1-8); fi
cuda=$(readlink -f "${CUDA_HOME:-/usr/local/cuda}")

[ "$(id -u)" -eq 0 ] || { echo "gpu_dryrun.sh: needs root (debootstrap, chroot, mount)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "gpu_dryrun.sh: apt-get install debootstrap" >&2; exit 2; }
[ -x "$cuda/bin/nvcc" ] || { echo "gpu_dryrun.sh: no CUDA toolkit at $cuda" >&2; exit 2; }
[ -f gpu-bundle/MANIFEST ] || { echo "gpu_dryrun.sh: no gpu-bundle/: run scripts/gpu_bundle.sh first" >&2; exit 2; }

# ---- mounts, undone on every exit ----------------------------------------------
mounts=()
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mounted_under() { awk -v r="$1/" 'index($2 "/", r) == 1 { found = 1 } END { exit !found }' /proc/mounts; }
mnt() { # mnt DEST MOUNT-ARGS...
  local dest=$1
  shift
  mount "$@" "$dest"
  mounts+=("$dest")
}

# ---- the root, made once ----------------------------------------------------------
stamp=$root/.ltdi-dryroot
if [ "$(cat "$stamp" 2>/dev/null)" != "$packages" ]; then
  if mounted_under "$root"; then
    echo "gpu_dryrun.sh: something is still mounted under $root (an earlier run killed?); umount it first" >&2
    exit 1
  fi
  echo "gpu_dryrun.sh: making $root (debootstrap minbase bookworm + $packages; a few minutes)"
  rm -rf "$root"
  t0=$(date +%s)
  debootstrap --variant=minbase --include="$(echo "$packages" | xargs | tr ' ' ,)" \
    bookworm "$root" "$mirror" >"/var/tmp/ltdi-dryroot-debootstrap.log" 2>&1 ||
    { echo "gpu_dryrun.sh: debootstrap failed; see /var/tmp/ltdi-dryroot-debootstrap.log" >&2; exit 1; }
  chroot "$root" apt-get clean
  echo "$packages" >"$stamp"
  echo "gpu_dryrun.sh: root made in $(($(date +%s) - t0)) s"
fi

# ---- what travels ---------------------------------------------------------------
dest=$root/work/repo
mkdir -p "$dest"
if [ "$reuse" = 1 ]; then
  find "$dest" -mindepth 1 -maxdepth 1 ! -name build-gpu -exec rm -rf {} +
else
  rm -rf "$dest"
  mkdir -p "$dest"
fi
git ls-files -z --cached --others --exclude-standard |
  tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -C "$dest" -xf -
tree_bytes=$(du -sb --exclude=build-gpu "$dest" | awk '{ print $1 }')
tar -cf - gpu-bundle | tar -C "$dest" -xf -
all_bytes=$(du -sb --exclude=build-gpu "$dest" | awk '{ print $1 }')
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "gpu_dryrun.sh: what travels: tree $(mib "$tree_bytes") + bundle $(mib $((all_bytes - tree_bytes)))" \
     "= $(mib "$all_bytes") (the limit is 64 MiB)"
if [ "$all_bytes" -gt $((64 * 1048576)) ]; then
  echo "gpu_dryrun.sh: that is over the 64 MiB the GPU machine receives" >&2
  exit 1
fi

# ---- mounts and the run -------------------------------------------------------------
mnt "$root/proc" -t proc proc
mnt "$root/sys" -t sysfs -o ro sysfs
[ -c "$root/dev/null" ] || mnt "$root/dev" --bind /dev
mkdir -p "$root$cuda"
mnt "$root$cuda" --bind "$cuda"
mount -o remount,bind,ro "$root$cuda"
[ -e "$root/usr/local/cuda" ] || ln -s "$cuda" "$root/usr/local/cuda"
rm -rf "$root/work/out"
mkdir -p "$root/work/out"

echo "gpu_dryrun.sh: running check.sh ${quick:-(full)} in $root, no network, $jobs build jobs"
t0=$(date +%s)
set +e
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  LANG=C.UTF-8 OUT=/work/out CHECK_JOBS="$jobs" \
  unshare -n chroot "$root" /bin/bash -c "cd /work/repo && tests/gpu/check.sh $quick" \
  >/dev/null 2>&1
rc=$?
set -e
echo "gpu_dryrun.sh: check.sh exit $rc after $(($(date +%s) - t0)) s; its files: $root/work/out/"

# ---- the verdict -------------------------------------------------------------------
summary=$root/work/out/summary.txt
[ -f "$summary" ] || { echo "gpu_dryrun.sh: no summary.txt; the log:"; tail -40 "$root/work/out/check.log"; exit 1; }
sed -n '/=== summary ===/,$p' "$summary"
# The step table is the summary's first block: NAME STATUS SECONDS s.
bad=$(awk 'f && /^$/ { exit } f && $1 !~ /^bench-cuda-/ && $2 != "ok" { print $1 }
           /=== summary ===/ { f = 1 }' "$summary" | xargs)
if [ -n "$bad" ]; then
  echo "gpu_dryrun.sh: FAILED: $bad (log: $root/work/out/check.log)"
  exit 1
fi
echo "gpu_dryrun.sh: ok: every step but the CUDA benchmarks passed (no GPU here); the GPU tests skipped"
