#!/usr/bin/env bash
# docker/runtime-deps.sh — the package list of the images' runtime stage.
#
# The build stage of each image runs scripts/setup.sh, which brings compilers,
# -dev packages and the test tools (python3-torch, schemathesis). The runtime
# stage needs only the shared libraries the built binaries load. Their package
# list is read off the binaries rather than written down a second time: a
# hand-kept list would drift from setup.sh, and the library package names
# differ between distributions (Debian 12 libcurl4, Ubuntu 24.04 libcurl4t64).
#
#   runtime-deps.sh list BINARY...  build stage: print, one a line, the
#                                   packages that own every shared library
#                                   BINARY loads (fails on a missing library
#                                   or one no package owns)
#   runtime-deps.sh install FILE    runtime stage: apt-install the packages of
#                                   FILE (and curl, for the health check) that
#                                   are not installed yet; the CUDA base image
#                                   already holds its CUDA and cuDNN packages,
#                                   and installing them again could move them
set -euo pipefail

# Prints the package owning library path $1. With merged /usr, ldd may print
# /usr/lib/... for a file the package registered as /lib/... (or the other way
# round), and sonames are often symlinks (OpenBLAS through alternatives), so
# the path, its target and both /usr spellings are tried.
owner() {
  local path=$1 real cand out
  real=$(readlink -f "$path")
  for cand in "$path" "$real" "/usr$path" "${path#/usr}" "/usr$real" "${real#/usr}"; do
    out=$(dpkg-query -S "$cand" 2>/dev/null | grep -v '^diversion' | head -n 1) || continue
    [ -n "$out" ] || continue
    out=${out%%:*}     # "libc6:amd64: /lib/..." -> "libc6"
    echo "${out%%,*}"  # "a, b: path" (shared path) -> "a"
    return 0
  done
  return 1
}

# Prints the owner of every library each binary loads, repeats included;
# returns 1 after reporting every library it could not attribute.
owners() {
  local bin lib arrow path rest bad=0
  for bin in "$@"; do
    [ -x "$bin" ] || { echo "runtime-deps.sh: $bin is not an executable" >&2; return 1; }
    while read -r lib arrow path rest; do
      if [ "$arrow" != "=>" ]; then
        # "/lib64/ld-linux-x86-64.so.2 (0x...)" names the loader itself;
        # "linux-vdso.so.1 (0x...)" is the kernel's and has no file.
        case $lib in /*) path=$lib ;; *) continue ;; esac
      elif [ "$path" = not ]; then
        echo "runtime-deps.sh: $bin needs $lib, which is not installed" >&2
        bad=1
        continue
      fi
      if ! owner "$path"; then
        echo "runtime-deps.sh: no package owns $path (needed by $bin)" >&2
        bad=1
      fi
    done < <(ldd "$bin")
  done
  return "$bad"
}

install_missing() {
  local file=$1 p wanted missing=()
  mapfile -t wanted < <(grep -v '^[[:space:]]*$' "$file")
  wanted+=(curl)
  for p in "${wanted[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    rm -rf /var/lib/apt/lists/*
  fi
}

case "${1:-}" in
  list)
    shift
    [ "$#" -gt 0 ] || { echo "usage: $0 list BINARY..." >&2; exit 2; }
    owners "$@" | sort -u  # pipefail: a failure of owners fails the script
    ;;
  install)
    [ "$#" -eq 2 ] || { echo "usage: $0 install FILE" >&2; exit 2; }
    install_missing "$2"
    ;;
  *) echo "usage: $0 list BINARY... | install FILE" >&2; exit 2 ;;
esac
