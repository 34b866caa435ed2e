#!/usr/bin/env bash
# Set up (if needed) and train the default experiment (LeNet-5 on digits):
#   bash scripts/train.sh [Hydra overrides, e.g. trainer.max_epochs=5 model.variant=classic]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dlkit-train "$@"
