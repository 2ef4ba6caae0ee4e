#!/usr/bin/env bash
# The GPU check in one line (tools/gpu_check.py says what it runs):
#   bash tools/gpu_check.sh --prepare     # here: build gpu_bundle/ (data slice, tokenizer, zstandard wheel)
#   bash tools/gpu_check.sh OUT           # on the GPU machine, from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ "${1:-}" = "--prepare" ] && PY=.venv/bin/python
exec "$PY" -m tools.gpu_check "$@"
