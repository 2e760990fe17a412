#!/usr/bin/env bash
# scripts/test.sh — builds and runs the whole test suite (unit, integration;
# gpu tests skip themselves without a GPU). Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
# Under CI (CI=true) every reference the set-up installs must run: a
# missing one fails its test instead of skipping (tests/reference.h).
if [ -n "${CI:-}" ] && [ "${CI}" != false ]; then export LTDI_REQUIRE_REFERENCES=${LTDI_REQUIRE_REFERENCES:-1}; fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure "$@"
