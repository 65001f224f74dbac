#!/usr/bin/env bash
# Install facediff on a fresh CPU machine: the CPU build of torch 2.13.0 first (a plain `torch`
# requirement would pull a multi-GB CUDA build), then the package. `--test` adds the test extras.
# Nothing here downloads model weights or data sets.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check "torch==2.13.0"
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
$PY -m pip install -q --disable-pip-version-check -e ".${extras}"
