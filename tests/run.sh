#!/usr/bin/env bash
# The whole test suite: the project's tests in .venv, then the reference-parity tests in
# .venv-ref (PyTorchVideo and PySlowFast need torch 2.14.1 + torchvision; created on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q "$@"
REF_PY=$(bash .ci/parity-env.sh | tail -n 1)
PYTHONPATH=. "$REF_PY" -m pytest -q tests/parity
