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
#        a root of its own per set), CUDA_HOME (/usr/local/cuda, resolved),
#        DRYRUN_CUDA (toolkit: CUDA_HOME at its own path, with /usr/local/cuda
#        linked to it; wheels: no toolkit there, but the layout of NVIDIA's
#        pip wheels as a PyTorch image may hold them instead, under python3's
#        nvidia/: cu13/ without unversioned library links, cudnn/ apart)
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
cuda_mode=${DRYRUN_CUDA:-toolkit}
case "$cuda_mode" in toolkit|wheels) ;; *) echo "gpu_dryrun.sh: DRYRUN_CUDA is toolkit or wheels" >&2; exit 2 ;; esac

[ "$(id -u)" -eq 0 ] || { echo "gpu_dryrun.sh: needs root (debootstrap, chroot, mount)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "gpu_dryrun.sh: apt-get install debootstrap" >&2; exit 2; }
[ -x "$cuda/bin/nvcc" ] || { echo "gpu_dryrun.sh: no CUDA toolkit at $cuda" >&2; exit 2; }
[ -f gpu-bundle/MANIFEST ] || { echo "gpu_dryrun.sh: no gpu-bundle/: run scripts/gpu_bundle.sh first" >&2; exit 2; }

# ---- mounts, undone on every exit ----------------------------------------------
mounts=()
after_umount=()   # folders to remove once nothing is mounted there
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" || true
  done
  for i in "${after_umount[@]}"; do
    mounted_under "$i" || rm -rf "$i"
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
if mounted_under "$root"; then
  echo "gpu_dryrun.sh: something is still mounted under $root (an earlier run killed?);" \
       "umount it first: grep $root /proc/mounts" >&2
  exit 1
fi
stamp=$root/.ltdi-dryroot
if [ "$(cat "$stamp" 2>/dev/null)" != "$packages" ]; then
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
rm -f "$root/usr/local/cuda"
if [ "$cuda_mode" = toolkit ]; then
  mkdir -p "$root$cuda"
  mnt "$root$cuda" --bind "$cuda"
  mount -o remount,bind,ro "$root$cuda"
  ln -s "$cuda" "$root/usr/local/cuda"
else
  # The wheels' layout: nvidia/cu13 is the toolkit without what the wheels
  # lack (every symbolic link, libcudnn*, the driver stub), on an overlay
  # so nothing of the real one changes; nvidia/cudnn holds cuDNN's headers
  # and links to its libraries in a copy of the toolkit mounted out of the
  # way (/opt/cuda-real, which check.sh does not look at).
  rmdir "$root$cuda" 2>/dev/null || true
  site=$root/usr/lib/python3/dist-packages/nvidia
  ov=/var/tmp/ltdi-dryrun-overlay
  rm -rf "$ov" "$site"
  mkdir -p "$ov/upper" "$ov/work" "$site/cu13" "$site/cudnn/include" "$site/cudnn/lib" \
           "$root/opt/cuda-real"
  after_umount+=("$site" "$ov" "$root/opt/cuda-real")
  mnt "$root/opt/cuda-real" --bind "$cuda"
  mount -o remount,bind,ro "$root/opt/cuda-real"
  mnt "$site/cu13" -t overlay overlay -o "lowerdir=$cuda,upperdir=$ov/upper,workdir=$ov/work"
  rm -rf "$site/cu13/dist-info" "$site/cu13/lib64" "$site/cu13/lib/stubs" "$site/cu13"/include/cudnn*.h
  find "$site/cu13/lib" -maxdepth 1 \( -type l -o -name 'libcudnn*' \) -delete
  cp "$cuda"/include/cudnn*.h "$site/cudnn/include/"
  for f in "$cuda"/lib/libcudnn*.so.[0-9]*; do
    ln -s "/opt/cuda-real/lib/${f##*/}" "$site/cudnn/lib/${f##*/}"
  done
fi
rm -rf "$root/work/out"
mkdir -p "$root/work/out"

echo "gpu_dryrun.sh: running check.sh ${quick:-(full)} in $root, no network, $jobs build jobs, CUDA as $cuda_mode"
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
