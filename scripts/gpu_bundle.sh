#!/usr/bin/env bash
# scripts/gpu_bundle.sh — fetches the Debian packages that tests/gpu/check.sh
# needs on a GPU machine that has a CUDA toolkit and a compiler but none of
# the project's libraries and no registry to install them from. Run it on a
# Debian bookworm amd64 machine with apt (this project's development VM);
# the packages land in gpu-bundle/ (ignored by git), which travels with the
# working tree (`carry: ["gpu-bundle"]`, docs/GPU.md). check.sh unpacks them
# there with `dpkg -x` into a private prefix, never into `/`.
#
# What is fetched: the -dev packages of the pkg-config modules that
# CMakeLists.txt and tests/CMakeLists.txt require, pkgconf (the image may
# have no pkg-config, and CMake's FindPkgConfig needs one) and curl
# (tests/gpu/serve_cuda_vs_cpu.sh drives the daemon with it), with the whole
# closure of their Depends and Pre-Depends (no Recommends): pkgconf needs
# the Requires.private modules' .pc files to answer --cflags, so their -dev
# packages come too. The closure stops at $exclude (below): what every
# glibc system with a C compiler has, and what must never be shadowed.
# A library the GPU machine already has is taken from there at run time
# (check.sh decides per soname); the bundle fills only the gaps.
#
# gpu-bundle/MANIFEST lists, for check.sh, every .deb, every shared library
# (soname and path), every -dev link (libX.so), every .pc file and the two
# programs, and the newest glibc symbol version any bundled file needs.
#
#   usage: scripts/gpu_bundle.sh [--update] [--dir DIR]
#     --update  run `apt-get update` first (otherwise only when a download
#               fails: the package lists can be older than the mirror)
#     --dir     where to put the bundle (default gpu-bundle)
set -euo pipefail
cd "$(dirname "$0")/.."

dir=gpu-bundle
update=0
while [ $# -gt 0 ]; do
  case "$1" in
    --update) update=1 ;;
    --dir) dir=${2:?--dir needs a folder}; shift ;;
    *) echo "gpu_bundle.sh: unknown option $1 (usage: scripts/gpu_bundle.sh [--update] [--dir DIR])" >&2; exit 2 ;;
  esac
  shift
done

# The packages asked for. The pkg-config modules they provide, in
# CMakeLists.txt's order: jansson freetype2 libpng zlib openblas sqlite3
# libmicrohttpd libcurl, and criterion in tests/CMakeLists.txt.
roots=(libjansson-dev libfreetype-dev libpng-dev zlib1g-dev libopenblas-dev
       libsqlite3-dev libmicrohttpd-dev libcurl4-openssl-dev libcriterion-dev
       pkgconf curl)

# Neither fetched nor followed. Every glibc-based image with a C compiler
# has these, newer than bookworm's: bundling them would at best be dead
# weight and at worst shadow the image's C runtime.
#   libc6 libc6-dev         glibc and its headers (the compiler needs them)
#   libcrypt1 libcrypt-dev  split out of glibc, a dependency of libc6(-dev)
#   linux-libc-dev          kernel headers, a dependency of libc6-dev
#   libgcc-s1 libstdc++6    the compiler's runtime (only gnutls' and gmp's
#                           C++ bindings, never linked here, use libstdc++)
#   gcc-12-base             bookworm's GCC documentation stub for the above
exclude=(libc6 libc6-dev libcrypt1 libcrypt-dev linux-libc-dev libgcc-s1 libstdc++6
         gcc-12-base)
# The sonames those packages provide: the closure check below accepts them
# as NEEDED without a bundled provider.
system_sonames=" ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libresolv.so.2 libpthread.so.0
  libdl.so.2 librt.so.1 libutil.so.1 libcrypt.so.1 libgcc_s.so.1 libstdc++.so.6 "

if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  echo "gpu_bundle.sh: needs apt-get and dpkg-deb (a Debian bookworm machine)" >&2
  exit 2
fi
arch=$(dpkg --print-architecture)
# shellcheck disable=SC1091  # this machine's own
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-unknown}")
if [ "$arch" != amd64 ] || [ "$codename" != bookworm ]; then
  echo "gpu_bundle.sh: warning: this is $codename/$arch; the GPU machine is x86-64 and" \
       "check.sh was tried with bookworm/amd64 packages" >&2
fi
if [ "$update" = 1 ]; then apt-get update -qq; fi

# ---- the closure --------------------------------------------------------------
# dep_groups PKG... — one line per dependency group of the packages (Depends
# and Pre-Depends), the alternatives in apt's order, a virtual package
# replaced by the packages that provide it.
dep_groups() {
  apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "$@" | awk '
    function flush() { if (grp != "") print grp; grp = "" }
    /^ [ |](Pre)?Depends: / {
      if (!prev_or) flush()
      prev_or = (substr($0, 2, 1) == "|")
      if ($2 !~ /^</) grp = grp " " $2
      next
    }
    /^    [^ ]/ { grp = grp " " $1; next }
    /^[^ ]/ { flush(); prev_or = 0 }
    END { flush() }'
}

# Breadth first from the roots. A group already satisfied by a chosen or an
# excluded package adds nothing; otherwise its first alternative is taken
# (apt's own choice for a fresh system).
declare -A seen=()
for p in "${exclude[@]}"; do seen[$p]=excluded; done
pkgs=()
queue=("${roots[@]}")
while [ "${#queue[@]}" -gt 0 ]; do
  batch=()
  for p in "${queue[@]}"; do
    [ -n "${seen[$p]:-}" ] && continue
    seen[$p]=chosen
    batch+=("$p")
  done
  [ "${#batch[@]}" -eq 0 ] && break
  pkgs+=("${batch[@]}")
  queue=()
  while read -r -a alts; do
    satisfied=0
    for a in "${alts[@]}"; do
      if [ -n "${seen[$a]:-}" ]; then satisfied=1; break; fi
    done
    [ "$satisfied" = 1 ] || queue+=("${alts[0]}")
  done < <(dep_groups "${batch[@]}")
done
echo "gpu_bundle.sh: ${#pkgs[@]} packages (${#roots[@]} asked for, the rest their dependencies)"

# ---- download ---------------------------------------------------------------
mkdir -p "$dir"
# The file name apt-get download gives each package's candidate version
# (one apt-cache call: each costs about a second).
declare -A deb_of=()
while read -r p v a; do
  deb_of[$p]=${p}_${v//:/%3a}_$a.deb
done < <(apt-cache show --no-all-versions "${pkgs[@]}" | awk '
  /^Package:/ { p = $2 } /^Version:/ { v = $2 } /^Architecture:/ { a = $2 }
  /^$/ && p != "" { print p, v, a; p = "" } END { if (p != "") print p, v, a }')
want=()
fetch=()
for p in "${pkgs[@]}"; do
  f=${deb_of[$p]:-}
  [ -n "$f" ] || { echo "gpu_bundle.sh: no candidate version of $p (try --update)" >&2; exit 1; }
  want+=("$f")
  [ -s "$dir/$f" ] || fetch+=("$p")
done
# apt-get download drops root to _apt, who cannot write into a root-owned
# working tree: download as root rather than warn about it per file.
apt_opts=()
[ "$(id -u)" -eq 0 ] && apt_opts=(-o APT::Sandbox::User=root)
if [ "${#fetch[@]}" -gt 0 ]; then
  if ! (cd "$dir" && apt-get "${apt_opts[@]}" download -q "${fetch[@]}"); then
    echo "gpu_bundle.sh: download failed; refreshing the package lists and trying once more" >&2
    apt-get update -qq
    (cd "$dir" && apt-get "${apt_opts[@]}" download -q "${fetch[@]}")
  fi
fi
# Whatever an earlier run left that is no longer wanted goes.
for f in "$dir"/*.deb; do
  [ -e "$f" ] || continue
  case " ${want[*]} " in *" ${f##*/} "*) ;; *) echo "gpu_bundle.sh: removing stale ${f##*/}"; rm -f "$f" ;; esac
done

# ---- the manifest ---------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$root"
for f in "${want[@]}"; do dpkg-deb -x "$dir/$f" "$root"; done

# resolve REL — REL (a path inside $root) with its symbolic links followed
# inside $root, absolute targets included (zlib1g-dev's libz.so points to
# /lib/x86_64-linux-gnu/libz.so.1.2.13).
resolve() {
  local rel=$1 t i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    if [ ! -L "$root/$rel" ]; then
      [ -e "$root/$rel" ] && { echo "$rel"; return 0; }
      return 1
    fi
    t=$(readlink "$root/$rel")
    case "$t" in
      /*) rel=${t#/} ;;
      *) rel=$(dirname "$rel")/$t ;;
    esac
    rel=$(realpath -m -s --relative-to=/ "/$rel")
  done
  return 1
}

soname_of() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p'; }

man=$tmp/MANIFEST
{
  echo "# gpu-bundle/MANIFEST: written by scripts/gpu_bundle.sh, read by tests/gpu/check.sh."
  echo "# Paths are relative to the folder the .debs are unpacked into."
  echo "# deb FILE PACKAGE | lib SONAME PATH | dev LINK PATH | pc MODULE PATH | bin NAME PATH"
  echo "made $(date -u +%Y-%m-%dT%H:%M:%SZ) $codename $arch"
  echo "roots ${roots[*]}"
  echo "exclude ${exclude[*]}"
  for i in "${!want[@]}"; do echo "deb ${want[$i]} ${pkgs[$i]}"; done
} >"$man"

glibc_max=0 glibc_file=""
declare -A have_soname=()
needed=()
while IFS= read -r -d '' f; do
  rel=${f#"$root"/}
  head -c 4 "$f" | grep -q 'ELF' || continue
  so=$(soname_of "$f")
  if [ -n "$so" ]; then
    if [ -n "${have_soname[$so]:-}" ]; then
      echo "gpu_bundle.sh: warning: $so twice ($rel, ${have_soname[$so]}); keeping the first" >&2
    else
      have_soname[$so]=$rel
      echo "lib $so $rel" >>"$man"
    fi
  fi
  mapfile -t -O "${#needed[@]}" needed < <(readelf -d "$f" 2>/dev/null |
                                          sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  v=$(objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
  if [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$v" "$glibc_max" | sort -V | tail -1)" = "$v" ] &&
     [ "$v" != "$glibc_max" ]; then
    glibc_max=$v glibc_file=$rel
  fi
done < <(find "$root" -type f \( -name '*.so*' -o -path '*/bin/*' \) -print0 | sort -z)

# The -dev links: every lib*.so in a library folder, resolved to its file.
while IFS= read -r -d '' f; do
  rel=${f#"$root"/}
  target=$(resolve "$rel") || { echo "gpu_bundle.sh: warning: $rel dangles" >&2; continue; }
  echo "dev ${rel##*/} $target" >>"$man"
done < <(find "$root" \( -type f -o -type l \) -name 'lib*.so' -path '*/lib/*' -print0 | sort -z)

while IFS= read -r -d '' f; do
  rel=${f#"$root"/}
  echo "pc $(basename "$rel" .pc) $rel" >>"$man"
done < <(find "$root" -name '*.pc' -print0 | sort -z)

for b in pkgconf:usr/bin/pkgconf curl:usr/bin/curl; do
  [ -x "$root/${b#*:}" ] || { echo "gpu_bundle.sh: ${b#*:} is missing" >&2; exit 1; }
  echo "bin ${b%%:*} ${b#*:}" >>"$man"
done
echo "glibc $glibc_max $glibc_file" >>"$man"

# Every NEEDED soname must come from the bundle or the C runtime.
missing=()
for so in $(printf '%s\n' "${needed[@]}" | sort -u); do
  [ -n "${have_soname[$so]:-}" ] && continue
  case "$system_sonames" in *" $so "*) continue ;; esac
  missing+=("$so")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "gpu_bundle.sh: the closure is incomplete: nothing bundled provides ${missing[*]}" >&2
  exit 1
fi
mv "$man" "$dir/MANIFEST"

size=$(du -cb "$dir"/*.deb | awk 'END { print $1 }')
unpacked=$(du -sb "$root" | awk '{ print $1 }')
printf 'gpu_bundle.sh: %s: %d .debs, %.1f MiB (%.0f MiB unpacked); newest glibc symbol needed: %s (%s)\n' \
  "$dir" "${#want[@]}" "$(echo "$size" | awk '{ print $1 / 1048576 }')" \
  "$(echo "$unpacked" | awk '{ print $1 / 1048576 }')" "$glibc_max" "$glibc_file"
echo "gpu_bundle.sh: carry it with the GPU run: carry [\"$dir\"] (docs/GPU.md)"
