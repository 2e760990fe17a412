#!/usr/bin/env bash
# scripts/test.sh — builds and runs the whole test suite (unit, integration;
# gpu tests skip themselves without a GPU). Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure "$@"
