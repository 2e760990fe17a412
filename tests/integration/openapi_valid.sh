#!/usr/bin/env bash
# tests/integration/openapi_valid.sh TRAIN_BINARY SOURCE_DIR
# The HTTP contract must be a valid OpenAPI 3.1 document.
set -euo pipefail
python3 -m openapi_spec_validator "$2/openapi.yaml"
