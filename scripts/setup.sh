#!/usr/bin/env bash
# Set up a development environment: .venv with dlkit installed editable, dev extra included.
#
#   bash scripts/setup.sh
#
# Environment variables:
#   PYTHON             interpreter that creates .venv (default: python3, needs >= 3.10)
#   DLKIT_TORCH_SPEC   the torch requirement installed first (default: torch==2.13.0, the CPU
#                      build on this project's machines, so pip does not pull a multi-GB CUDA
#                      build). Set it to "torch" to let pip pick for your platform, or to ""
#                      to skip the step (keep the torch you have).
#   DLKIT_PIP_ARGS     extra arguments for every pip install (e.g. an --index-url).
# Re-running is quick: nothing is installed again unless pyproject.toml or the torch spec
# changed since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${DLKIT_TORCH_SPEC-torch==2.13.0}
PIP_ARGS=${DLKIT_PIP_ARGS:-}
VENV=.venv
STAMP=$VENV/.dlkit-setup

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi

want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1) torch=[$TORCH_SPEC] pip=[$PIP_ARGS]"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "[setup] $VENV is up to date"
  exit 0
fi

# shellcheck disable=SC2086  # PIP_ARGS is a list of words on purpose
if [ -n "$TORCH_SPEC" ]; then
  echo "[setup] installing $TORCH_SPEC"
  "$VENV/bin/pip" install --quiet $PIP_ARGS "$TORCH_SPEC"
fi
echo "[setup] installing dlkit (editable) with the dev extra"
# shellcheck disable=SC2086
"$VENV/bin/pip" install --quiet $PIP_ARGS -e ".[dev]"
echo "$want" > "$STAMP"
echo "[setup] done: $("$VENV/bin/python" -c 'import torch, lightning; print("torch", torch.__version__, "| lightning", lightning.__version__)')"
