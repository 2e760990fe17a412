#!/usr/bin/env bash
# tests/gpu/check.sh — the GPU issue's one-shot check on a fresh machine
# (built for the lent H200: 16 cores, a CUDA toolkit, no network, none of
# the project's libraries). Run from the repo root. Within about 5 minutes it:
#   0. when gpu-bundle/ (scripts/gpu_bundle.sh) is there, unpacks its Debian
#      packages into a private prefix ($CHECK_BUILD_DIR/deps, never `/`) and
#      points pkg-config, CMake and the loader there, for what this machine
#      lacks only: a library it has is taken from it (deps.txt says which);
#   1. checks the build dependencies (exit 2 with the list when any is missing:
#      nothing can be installed without a network) and prints the machine's
#      OS, compilers and tools;
#   2. configures and builds, with -DLTDI_CUDA=ON in build-gpu, only what it
#      runs: the tests/gpu binaries, bench_sampling and ltdi-serve, then
#      checks with ldd that every library they need loads, and from where;
#   3. runs `ctest -L gpu`;
#   4. benchmarks generation on CUDA (LTDI_CUDA_CONV=cudnn and =gemm,
#      batches 1..1024) and on the CPU (all cores; and 2 cores pinned with
#      taskset, the target's reference: OpenBLAS per sample and batched, and
#      the daemon's two-worker path);
#   5. prints a summary: test result, heads/s per batch and run, the speed-up
#      at batch 256 over the best 2-core CPU number, floor ratios.
# Every step is timed and the script goes on to the summary when one fails;
# the exit status is 1 when any step failed. Into $OUT (or
# $CHECK_BUILD_DIR/check-out) go five files: check.log (everything),
# summary.txt, results.txt (the RESULT lines), ctest.txt and deps.txt.
#
#   usage: tests/gpu/check.sh [--quick]
#     --quick  a dry run: short measurements, CPU batches 1 and 8 only
#   env: CHECK_BUILD_DIR (build-gpu), CHECK_JOBS (nproc), CHECK_CUDA_ARCH (90),
#        CHECK_SECONDS (seconds per CUDA point, 2), CHECK_CPU_SECONDS (1.5),
#        CHECK_BUNDLE (gpu-bundle; "none": use the system's packages only),
#        CHECK_BUDGET_S (0 = none: past it, the remaining steps are skipped
#        and every step's timeout is cut to what is left, so the summary and
#        logs are written before an outer limit strikes)

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
case "$bdir" in /*) ;; *) bdir=$PWD/$bdir ;; esac
jobs=${CHECK_JOBS:-$(nproc)}
arch=${CHECK_CUDA_ARCH:-90}
gpu_s=${CHECK_SECONDS:-2}
cpu_s=${CHECK_CPU_SECONDS:-1.5}
bundle=${CHECK_BUNDLE:-gpu-bundle}
budget=${CHECK_BUDGET_S:-0}
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
work=$bdir/check-work   # each benchmark's own output (all of it is in check.log too)
deps=$bdir/deps         # the bundle, unpacked
mkdir -p "$outdir" "$work" || exit 2
log=$outdir/check.log
results=$outdir/results.txt
depsfile=$outdir/deps.txt
cmake_extra=()          # configure options found by the dependency steps
cuda_root=/usr/local/cuda
t_start=$(date +%s)

# ---- step bookkeeping ---------------------------------------------------------
step_names=()
step_status=()
step_secs=()
any_failed=0

# left — seconds of CHECK_BUDGET_S left (a large number when there is none).
left() {
  if [ "$budget" -gt 0 ]; then echo $((budget - ($(date +%s) - t_start))); else echo 100000; fi
}

# cap N — N seconds, or fewer when the budget has less left (at least 5).
cap() {
  local l
  l=$(($(left) - 20))
  [ "$l" -lt "$1" ] && { [ "$l" -gt 5 ] && echo "$l" || echo 5; return; }
  echo "$1"
}

# step NAME CMD... — runs CMD, prints its output, records status and time.
step() {
  local name=$1 t0 rc
  shift
  echo
  echo "==== $name: $*"
  if [ "$(left)" -lt 30 ]; then
    step_names+=("$name")
    step_secs+=(0.0)
    step_status+=("skipped (budget)")
    any_failed=1
    echo "==== $name: skipped: under 30 s of CHECK_BUDGET_S=$budget left"
    return 0
  fi
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

# status_of NAME — the recorded status of step NAME ("" when it did not run).
status_of() {
  local i
  for i in "${!step_names[@]}"; do
    [ "${step_names[$i]}" = "$1" ] && { echo "${step_status[$i]}"; return; }
  done
}

# ---- 0. the bundle ----------------------------------------------------------------
# The modules CMake asks pkg-config for, with the library each links and
# the Debian package that provides it (for the hint when one is missing).
modules=(jansson:libjansson.so.4:libjansson-dev freetype2:libfreetype.so.6:libfreetype-dev
         libpng:libpng16.so.16:libpng-dev zlib:libz.so.1:zlib1g-dev
         openblas:libopenblas.so.0:libopenblas-dev sqlite3:libsqlite3.so.0:libsqlite3-dev
         libmicrohttpd:libmicrohttpd.so.12:libmicrohttpd-dev libcurl:libcurl.so.4:libcurl4-openssl-dev
         criterion:libcriterion.so.3:libcriterion-dev)

declare -A image_lib=()   # soname -> path, for the libraries this machine has
declare -A lib_from=()    # soname -> "image PATH" or "bundle", for the bundle's libraries

# scan_image_libs — fills image_lib from the loader's cache and the folders
# of LD_LIBRARY_PATH as they were before this script (x86-64 only).
scan_image_libs() {
  local ldc so path d f
  ldc=$(command -v ldconfig || echo /sbin/ldconfig)
  if [ -x "$ldc" ]; then
    while read -r so path; do
      [ -n "${image_lib[$so]:-}" ] || image_lib[$so]=$path
    done < <("$ldc" -p 2>/dev/null | awk '/x86-64/ && /=>/ { print $1, $NF }')
  fi
  if [ "${#image_lib[@]}" -eq 0 ]; then   # no ldconfig: look in the usual folders
    for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib64 /usr/lib64 /lib /usr/lib; do
      for f in "$d"/lib*.so.*; do
        [ -e "$f" ] && [ -z "${image_lib[${f##*/}]:-}" ] && image_lib[${f##*/}]=$f
      done
    done
  fi
  local IFS=:
  for d in ${LD_LIBRARY_PATH:-}; do
    [ -d "$d" ] || continue
    for f in "$d"/lib*.so*; do
      [ -e "$f" ] && [ -z "${image_lib[${f##*/}]:-}" ] && image_lib[${f##*/}]=$f
    done
  done
}

# unpack_debs DEST DEB... — `dpkg -x` each package into DEST; Python's
# ar and tar readers where dpkg-deb is absent.
unpack_debs() {
  local dest=$1 f
  shift
  if command -v dpkg-deb >/dev/null 2>&1; then
    for f in "$@"; do dpkg-deb -x "$f" "$dest" || return 1; done
    return 0
  fi
  echo "no dpkg-deb: unpacking with python3"
  python3 - "$dest" "$@" <<'PY'
import io, sys, tarfile
dest = sys.argv[1]
for deb in sys.argv[2:]:
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            sys.exit(f"{deb}: not a .deb")
        while True:
            hdr = f.read(60)
            if len(hdr) < 60:
                sys.exit(f"{deb}: no data.tar member")
            name, size = hdr[:16].decode().strip().rstrip("/"), int(hdr[48:58])
            body = f.read(size)
            f.read(size % 2)
            if name.startswith("data.tar"):
                with tarfile.open(fileobj=io.BytesIO(body)) as t:
                    if hasattr(tarfile, "fully_trusted_filter"):
                        t.extractall(dest, filter="fully_trusted")
                    else:
                        t.extractall(dest)
                break
PY
}

# setup_bundle — step 0. Unpacks $bundle into $deps/root and builds, beside
# it, what points there, for what this machine lacks only:
#   $deps/pkgconfig  the bundle's .pc files with their paths rewritten,
#                    except modules this machine's pkg-config already finds;
#   $deps/lib        the -dev links (libX.so), so -L finds the bundle's
#                    libraries, and the sonames this machine has no copy of,
#                    so the loader finds those (a soname it has is not
#                    linked there: the machine's own, newer copy is used);
#   $deps/bin        pkg-config and curl, where the machine has none.
# Then PKG_CONFIG_PATH, LD_LIBRARY_PATH and PATH point there. The links
# are also what CMake writes into the binaries' RUNPATH, so the image's
# copies are never shadowed there either.
setup_bundle() {
  local man=$bundle/MANIFEST R L kind a b c debs=() f mod n_img=0 n_bun=0
  scan_image_libs
  if [ "$bundle" = none ] || [ ! -f "$man" ]; then
    if [ "$bundle" = none ]; then
      echo "CHECK_BUNDLE=none: the system's packages only" | tee "$depsfile"
    else
      echo "no $man: the system's packages only" | tee "$depsfile"
    fi
    return 0
  fi
  R=$deps/root L=$deps/lib
  case "$deps" in *[\|\&\\\ ]*) echo "the build folder's path $deps holds | & \\ or a space"; return 1 ;; esac
  read -r _ made dist darch < <(grep '^made ' "$man")
  echo "bundle: $bundle, made $made from $dist/$darch, $(grep -c '^deb ' "$man") packages"
  if [ "$darch" = amd64 ] && [ "$(uname -m)" != x86_64 ]; then
    echo "this machine is $(uname -m): the bundle's $darch packages cannot run here"
    return 1
  fi
  while read -r kind a _; do
    [ "$kind" = deb ] || continue
    [ -f "$bundle/$a" ] || { echo "the bundle lacks $a: rerun scripts/gpu_bundle.sh"; return 1; }
    debs+=("$bundle/$a")
  done <"$man"
  # Unpacked once per manifest; a rerun in the same build folder reuses it.
  if ! cmp -s "$man" "$deps/MANIFEST"; then
    rm -rf "$deps"
    mkdir -p "$R"
    unpack_debs "$R" "${debs[@]}" || { echo "unpacking the bundle failed"; return 1; }
    cp "$man" "$deps/MANIFEST"
  fi
  rm -rf "${L:?}" "${deps:?}/pkgconfig" "${deps:?}/bin"
  mkdir -p "$L" "$deps/pkgconfig" "$deps/bin"
  lib_from=()
  while read -r kind a b; do
    case "$kind" in
      lib)
        if [ -n "${image_lib[$a]:-}" ]; then
          lib_from[$a]="machine ${image_lib[$a]}"
          n_img=$((n_img + 1))
        else
          ln -sfn "$R/$b" "$L/$a"
          lib_from[$a]=bundle
          n_bun=$((n_bun + 1))
        fi ;;
      dev)
        # Where the machine has this libX.so (its own -dev package), the
        # linker finds that one; this also keeps a link named like a soname
        # the machine has (libdb-5.3.so) from shadowing its copy.
        [ -n "${image_lib[$a]:-}" ] || ln -sfn "$R/$b" "$L/$a" ;;
    esac
  done <"$man"
  # pkg-config: the machine's, or the bundle's pkgconf behind a wrapper.
  local pc_cmd
  if command -v pkg-config >/dev/null 2>&1; then
    pc_cmd=$(command -v pkg-config)
    echo "pkg-config: the machine's ($pc_cmd, $(pkg-config --version))"
  else
    # shellcheck disable=SC2016  # $LD_LIBRARY_PATH and $@ are the wrapper's
    printf '#!/bin/sh\nLD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}%s" exec "%s" "$@"\n' \
      "$L" "$R/usr/bin/pkgconf" >"$deps/bin/pkg-config"
    chmod +x "$deps/bin/pkg-config"
    pc_cmd=$deps/bin/pkg-config
    echo "pkg-config: the bundle's pkgconf $("$pc_cmd" --version) (the machine has none)"
  fi
  if command -v curl >/dev/null 2>&1; then
    echo "curl: the machine's ($(command -v curl))"
  else
    ln -sfn "$R/usr/bin/curl" "$deps/bin/curl"
    echo "curl: the bundle's (the machine has none)"
  fi
  # The .pc files: every absolute path into $R, every library folder to $L.
  local pc_img=() pc_bun=()
  while read -r kind mod f; do
    [ "$kind" = pc ] || continue
    if "$pc_cmd" --exists "$mod" 2>/dev/null; then
      pc_img+=("$mod")
      continue
    fi
    pc_bun+=("$mod")
    sed -e "s|^\([A-Za-z_][A-Za-z0-9_.]*\)=/|\1=$R/|" \
        -e "s|^libdir=.*|libdir=$L|" \
        -e "s|-L/[^ ]*|-L$L|g" \
        -e "s|-I/|-I$R/|g" \
        -e "/^Libs/s| /usr/| $R/usr/|g" "$R/$f" >"$deps/pkgconfig/$mod.pc"
  done <"$man"
  export PKG_CONFIG_PATH="$deps/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$L"
  export PATH="$PATH:$deps/bin"

  # deps.txt: what comes from where.
  local glibc_need glibc_have line so from
  read -r _ glibc_need c < <(grep '^glibc ' "$man")
  glibc_have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $2 }')
  {
    echo "bundle $bundle: made $made from $dist/$darch, unpacked in $R"
    echo
    printf '%-14s %-22s %s\n' module "headers and .pc" "runtime library"
    for line in "${modules[@]}"; do
      IFS=: read -r mod so _ <<<"$line"
      case " ${pc_img[*]} " in *" $mod "*) from=machine ;; *) from=bundle ;; esac
      printf '%-14s %-22s %s\n' "$mod" "$from" "$so from the ${lib_from[$so]:-?}"
    done
    echo
    echo "pkg-config modules from the machine (${#pc_img[@]}): ${pc_img[*]}"
    echo "pkg-config modules from the bundle (${#pc_bun[@]}): ${pc_bun[*]}"
    echo
    echo "bundled sonames the machine has, used from the machine ($n_img):"
    for so in "${!lib_from[@]}"; do
      [ "${lib_from[$so]}" = bundle ] || echo "  $so ${lib_from[$so]#machine }"
    done | sort
    echo "bundled sonames the machine lacks, loaded from $L ($n_bun):"
    for so in "${!lib_from[@]}"; do
      [ "${lib_from[$so]}" = bundle ] && echo "$so"
    done | sort | paste -sd' ' | fold -s -w 96 | sed 's/^/  /'
    echo
    echo "glibc: the machine has ${glibc_have:-?}; the bundle needs $glibc_need ($c)"
  } >"$depsfile"
  cat "$depsfile"
  if [ -n "$glibc_have" ] &&
     [ "$(printf '%s\n%s\n' "$glibc_have" "$glibc_need" | sort -V | head -1)" != "$glibc_need" ]; then
    echo "warning: this glibc ($glibc_have) is older than the bundle needs ($glibc_need):" \
         "bundled libraries may not load (the loader step will say)"
  fi
  return 0
}

# ---- 1. dependencies ------------------------------------------------------------
any_exists() {
  local f
  for f in "$@"; do [ -e "$f" ] && return 0; done
  return 1
}

# nvidia_wheels — the folders of the `nvidia` Python package (NVIDIA's
# wheels: nvidia/cu13 holds a CUDA toolkit, nvidia/cudnn cuDNN; PyTorch
# images carry them), one a line, for every python3 this machine has.
nvidia_wheels() {
  local py
  for py in python3 /opt/*/.venv/bin/python3 /opt/*/bin/python3; do
    command -v "$py" >/dev/null 2>&1 || continue
    "$py" -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null
  done | awk '!seen[$0]++'
}

# find_nvcc — nvcc on PATH, else from /usr/local/cuda*/bin or a wheel's
# nvidia/cu*/bin, whose folder then goes on PATH.
find_nvcc() {
  local d w
  command -v nvcc >/dev/null 2>&1 && return 0
  for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
    [ -x "$d/nvcc" ] && { PATH=$PATH:$d; return 0; }
  done
  while read -r w; do
    for d in "$w"/cu*/bin; do
      [ -x "$d/nvcc" ] && { PATH=$PATH:$d; echo "nvcc: from the Python wheel in ${d%/bin}"; return 0; }
    done
  done < <(nvidia_wheels)
  return 1
}

# lib_dev_in NAME DIR... — 0 when libNAME.so (the unversioned link the
# linker and CMake look for) is in one of DIRs or the loader's cache.
lib_dev_in() {
  local name=$1 d
  shift
  ldconfig -p 2>/dev/null | grep -q "lib$name\.so " && return 0
  for d in "$@"; do [ -e "$d/lib$name.so" ] && return 0; done
  return 1
}

# cuda_dev_links — NVIDIA's wheels ship libcudart.so.13 and libcublas.so.13
# but no libcudart.so: where the toolkit lacks the unversioned names, links
# with those names in $bdir/cuda-links, which CMake's find_library searches
# through CMAKE_LIBRARY_PATH.
cuda_dev_links() {
  local name f dirs=("$cuda_root"/lib64 "$cuda_root"/lib "$cuda_root"/targets/*-linux/lib)
  for name in cudart cublas cublasLt; do
    lib_dev_in "$name" "${dirs[@]}" /usr/lib/x86_64-linux-gnu && continue
    f=$(find "${dirs[@]}" -maxdepth 1 -name "lib$name.so.[0-9]*" 2>/dev/null | sort | head -1)
    [ -n "$f" ] || return 1
    mkdir -p "$bdir/cuda-links"
    ln -sfn "$f" "$bdir/cuda-links/lib$name.so"
    echo "CUDA: lib$name.so -> $f (the toolkit has the versioned name only)"
  done
  if [ -d "$bdir/cuda-links" ]; then
    export CMAKE_LIBRARY_PATH="$bdir/cuda-links${CMAKE_LIBRARY_PATH:+:$CMAKE_LIBRARY_PATH}"
  fi
  return 0
}

# find_cudnn — 0 when cuDNN's library and header are found: in the CUDA
# toolkit or the system (CMake finds them there), else in a wheel
# (nvidia/cudnn): then its library gets an unversioned link in the build
# folder, and CMake, the compiler and the loader are pointed there.
find_cudnn() {
  local w d lib
  if lib_dev_in cudnn "$cuda_root"/lib64 "$cuda_root"/lib "$cuda_root"/targets/*-linux/lib \
       /usr/lib/x86_64-linux-gnu &&
     any_exists "$cuda_root"/include/cudnn.h "$cuda_root"/targets/*/include/cudnn.h \
                /usr/include/cudnn.h /usr/include/*/cudnn.h; then
    return 0
  fi
  while read -r w; do
    d=$w/cudnn
    [ -f "$d/include/cudnn.h" ] || continue
    lib=$(find "$d/lib" -maxdepth 1 -name 'libcudnn.so.[0-9]*' 2>/dev/null | sort | head -1)
    [ -n "$lib" ] || continue
    mkdir -p "$bdir/cudnn"
    ln -sfn "$lib" "$bdir/cudnn/libcudnn.so"
    cmake_extra+=(-DCUDNN_LIBRARY="$bdir/cudnn/libcudnn.so" -DCMAKE_CUDA_FLAGS="-I$d/include")
    export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d/lib"
    echo "cuDNN: from the Python wheel in $d (not in the CUDA toolkit)"
    return 0
  done < <(nvidia_wheels)
  return 1
}

# cuda_loader_path — the CUDA toolkit's folders on LD_LIBRARY_PATH where
# the loader cannot find its libraries otherwise. CMake counts the
# toolkit's library folder among nvcc's implicit link folders and writes no
# RUNPATH for it, so a machine whose loader does not know the toolkit (no
# ld.so.conf entry) could build but not run the programs.
cuda_loader_path() {
  local d f so add
  for d in "$cuda_root"/lib64 "$cuda_root"/lib "$cuda_root"/targets/*-linux/lib; do
    [ -d "$d" ] || continue
    d=$(readlink -f "$d")
    case ":${LD_LIBRARY_PATH:-}:" in *":$d:"*) continue ;; esac
    add=0
    for f in "$d"/libcudart.so.* "$d"/libcublas.so.* "$d"/libcublasLt.so.* "$d"/libcudnn.so.*; do
      so=${f##*/}
      [[ $so =~ ^lib[A-Za-z]+\.so\.[0-9]+$ ]] || continue   # the soname link only
      [ -n "${image_lib[$so]:-}" ] || add=1
    done
    if [ "$add" = 1 ]; then
      export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
      echo "loader: $d added to LD_LIBRARY_PATH (its CUDA libraries are not in the loader's cache)"
    fi
  done
}

# machine — one paragraph on what this machine is (the GPU image is known
# only from what its first run prints).
machine() {
  local os="" v
  # shellcheck disable=SC1091  # the machine's own
  [ -r /etc/os-release ] && os=$(. /etc/os-release && echo "${PRETTY_NAME:-}")
  echo "machine: $(uname -m), ${os:-unknown OS}, kernel $(uname -r)," \
       "$(getconf GNU_LIBC_VERSION 2>/dev/null || echo 'glibc ?'), $(nproc) CPUs"
  for v in cc c++ cmake ninja make nvcc pkg-config python3 curl dpkg-deb; do
    if command -v "$v" >/dev/null 2>&1; then
      printf '  %-10s %s: %s\n' "$v" "$(command -v "$v")" \
        "$("$v" --version 2>&1 | grep -v '^ *$' | if [ "$v" = nvcc ]; then tail -1; else head -1; fi |
           cut -c1-90)"
    else
      printf '  %-10s none\n' "$v"
    fi
  done
}

check_deps() {
  local missing=() cmd line mod so pkg
  # Tools from a virtual environment's bin where PATH has none: the GPU
  # image's python3 (with PyTorch), perhaps its cmake and ninja, live in one.
  local f
  for cmd in python3 cmake ctest ninja; do
    command -v "$cmd" >/dev/null 2>&1 && continue
    for f in /opt/*/.venv/bin/"$cmd" /opt/*/bin/"$cmd"; do
      [ -x "$f" ] || continue
      PATH=$PATH:${f%/*}
      echo "PATH: ${f%/*} appended (for $cmd)"
      break
    done
  done
  find_nvcc
  # Ninja where there is one and no generator was chosen: faster, and the
  # image may have no make. A configured build folder keeps its generator.
  if [ -z "${CMAKE_GENERATOR:-}" ]; then
    if [ -f "$bdir/CMakeCache.txt" ]; then
      CMAKE_GENERATOR=$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$bdir/CMakeCache.txt")
    elif command -v ninja >/dev/null 2>&1; then
      CMAKE_GENERATOR=Ninja
    else
      CMAKE_GENERATOR="Unix Makefiles"
    fi
    export CMAKE_GENERATOR
  fi
  machine
  for cmd in cmake:cmake ctest:cmake pkg-config:"pkg-config (or the bundle)" \
             timeout:coreutils nvcc:"CUDA toolkit (nvcc)" python3:python3 \
             curl:"curl (or the bundle)"; do
    command -v "${cmd%%:*}" >/dev/null 2>&1 || missing+=("${cmd%%:*} (${cmd#*:})")
  done
  command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || missing+=("cc (gcc)")
  command -v g++ >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 ||
    missing+=("g++ (nvcc's host compiler)")
  case "$CMAKE_GENERATOR" in
    Ninja*) command -v ninja >/dev/null 2>&1 || missing+=("ninja (CMAKE_GENERATOR=$CMAKE_GENERATOR)") ;;
    *Makefiles*) command -v make >/dev/null 2>&1 || missing+=("make or ninja") ;;
  esac
  if command -v cmake >/dev/null 2>&1; then
    local v
    v=$(cmake --version | awk 'NR == 1 { print $3 }')
    if [ "$(printf '%s\n3.22\n' "$v" | sort -V | head -1)" != "3.22" ]; then
      missing+=("cmake >= 3.22 (found $v)")
    fi
  fi
  if command -v pkg-config >/dev/null 2>&1; then
    for line in "${modules[@]}"; do
      IFS=: read -r mod so pkg <<<"$line"
      pkg-config --exists "$mod" || missing+=("$mod ($pkg)")
    done
  fi
  cuda_root=$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")")
  if command -v nvcc >/dev/null 2>&1; then
    cuda_dev_links || missing+=("libcudart/libcublas/libcublasLt (CUDA toolkit: none under $cuda_root)")
    cuda_loader_path
  fi
  find_cudnn || missing+=("libcudnn.so and cudnn.h (cuDNN 9: toolkit, system or nvidia-cudnn wheel)")
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "check.sh: missing build dependencies (this machine cannot install them):"
    printf '  - %s\n' "${missing[@]}"
    [ -f "$bundle/MANIFEST" ] || echo "  (no $bundle/: scripts/gpu_bundle.sh makes it; carry it, docs/GPU.md)"
    return 2
  fi
  echo "dependencies: ok (generator $CMAKE_GENERATOR)"
  command -v taskset >/dev/null 2>&1 || echo "note: no taskset: the 2-core CPU run is not pinned"
  return 0
}

# ---- 2-5. the steps -------------------------------------------------------------
gpu_targets() {
  local f
  for f in tests/gpu/test_*.c; do basename "$f" .c; done
}

configure() {
  timeout "$(cap 300)" cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=Release -DLTDI_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" "${cmake_extra[@]}"
}

build() {
  local keep_going=(-k)
  [ "${CMAKE_GENERATOR:-}" = Ninja ] && keep_going=(-k 0)
  # shellcheck disable=SC2046  # one target per word
  timeout "$(cap 900)" cmake --build "$bdir" -j"$jobs" \
    --target $(gpu_targets) bench_sampling ltdi-serve -- "${keep_going[@]}"
}

# check_loader — every library the built programs need loads (ldd), and
# where each comes from: the bundle, the CUDA toolkit, a Python wheel or
# the machine itself. Also appended to deps.txt.
check_loader() {
  local t f rc=0 so path from
  local -A where=()
  for t in ltdi-serve bench_sampling $(gpu_targets); do
    f=$bdir/$t
    [ -x "$f" ] || f=$bdir/tests/$t
    [ -x "$f" ] || { echo "$t: not built"; rc=1; continue; }
    if ldd "$f" 2>&1 | grep -q 'not found'; then
      echo "$t: the loader cannot satisfy:"
      ldd "$f" 2>&1 | grep 'not found' | sed 's/^/  /'
      rc=1
    fi
    while read -r so path; do
      where[$so]=$path
    done < <(ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }')
  done
  {
    echo
    echo "libraries the built programs load (ldd), by origin:"
    for from in bundle cuda wheel machine; do
      printf '  %-9s' "$from:"
      for so in "${!where[@]}"; do
        path=${where[$so]}
        case "$path" in
          "$deps"/*) [ "$from" = bundle ] ;;
          "$cuda_root"/*|/usr/local/cuda*) [ "$from" = cuda ] ;;
          */site-packages/*|*/dist-packages/*) [ "$from" = wheel ] ;;
          *) [ "$from" = machine ] ;;
        esac && printf ' %s' "$so"
      done | tr ' ' '\n' | sed '/^$/d' | sort | paste -sd' ' | fold -s -w 88 | sed '2,$s/^/            /'
    done
  } | tee -a "$depsfile"
  return "$rc"
}

run_gpu_tests() {
  local rc require=0
  # Where the driver sees a GPU, a test that finds none fails rather than
  # skips (tests/reference.h): a GPU run that skipped everything is no run.
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
    require=1
  fi
  (cd "$bdir" && LTDI_REQUIRE_GPU=$require timeout "$(cap 180)" ctest -L gpu -V \
    --output-on-failure) >"$outdir/ctest.txt" 2>&1
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
  timeout "$(cap 90)" "${cmd[@]}" >"$work/bench-$tag.txt" 2>&1
  rc=$?
  cat "$work/bench-$tag.txt"
  grep '^RESULT ' "$work/bench-$tag.txt" >>"$results"
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
  local tags=(cuda-cudnn cuda-gemm cuda-serve "cpu-$ncpu" cpu2 cpu2-batched cpu2-serve)
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
  for tag in cuda-cudnn cuda-gemm cuda-serve; do
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
  echo "check.sh: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(uname -n), build dir $bdir," \
       "quick=$quick, CUDA ${gpu_s}s / CPU ${cpu_s}s per point, budget ${budget}s (0: none)"
  : >"$results"
  step bundle setup_bundle
  step dependencies check_deps
  if [ "$(status_of dependencies)" != ok ]; then
    echo "check.sh: stopping: install the missing packages (scripts/setup.sh lists them)" \
         "or bring them in gpu-bundle/ (scripts/gpu_bundle.sh), and rerun"
    summary | tee "$outdir/summary.txt"
    return 2
  fi
  step configure configure
  step build build
  step loader check_loader
  step gpu-tests run_gpu_tests
  step bench-cuda-cudnn with_env LTDI_CUDA_CONV=cudnn bench cuda-cudnn - --device cuda \
    --batches "$cuda_batches" --seconds "$gpu_s"
  step bench-cuda-gemm with_env LTDI_CUDA_CONV=gemm bench cuda-gemm - --device cuda \
    --batches "$cuda_batches" --seconds "$gpu_s"
  # The daemon's GPU path: the batch-invariant sgemm instead of cuBLAS.
  step bench-cuda-serve bench cuda-serve - --device cuda --mode serve \
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
  summary | tee "$outdir/summary.txt"
  return "$any_failed"
}

main 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo "check.sh: exit $status; log $log" | tee -a "$log"
exit "$status"
