#!/usr/bin/env bash
# Build dlkit's wheel, check what it ships, install it into a fresh venv outside the
# checkout and run `dlkit-train --cfg job` there (the configs must come from the wheel).
#
#   bash scripts/check_wheel.sh
#
# DLKIT_TORCH_SPEC and DLKIT_PIP_ARGS work as in scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null

TORCH_SPEC=${DLKIT_TORCH_SPEC-torch==2.13.0}
PIP_ARGS=${DLKIT_PIP_ARGS:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "[wheel] building"
# shellcheck disable=SC2086
.venv/bin/pip wheel --quiet --no-deps $PIP_ARGS . -w "$work/dist"
wheel=$(ls "$work"/dist/dlkit-*.whl)
.venv/bin/python - "$wheel" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = ["dlkit/conf/train.yaml", "hydra_plugins/dlkit_optuna_sweeper/dlkit_optuna_sweeper.py", "dlkit/conf/eval.yaml", "dlkit/conf/experiment/lenet_digits.yaml",
        "dlkit/models/imagenet_classes.txt", "dlkit/layers/native/lstm_scan.cpp",
        "dlkit/conf/__init__.py", "dlkit/train.py", "dlkit/layers/__init__.py"]
missing = [n for n in need if n not in names]
stray = sorted(n for n in names if n.startswith(("tests/", "conf/", "scripts/", "tutorials/")))
yamls = sum(n.endswith(".yaml") for n in names)
if missing or stray:
    sys.exit(f"[wheel] bad contents: missing {missing}, stray {stray}")
print(f"[wheel] {len(names)} files, {yamls} configs under dlkit/conf: ok")
PY

echo "[wheel] installing into a fresh venv"
python3 -m venv "$work/venv"
# shellcheck disable=SC2086
"$work/venv/bin/pip" install --quiet $PIP_ARGS ${TORCH_SPEC:+"$TORCH_SPEC"} "$wheel"
cd "$work"  # outside the checkout: nothing may come from the source tree
# --resolve: task_name is an interpolation (it follows a switched model=/data=).
out=$("$work/venv/bin/dlkit-train" --cfg job --resolve)
echo "$out" | grep -q "^task_name: lenet_digits$" || { echo "$out"; echo "[wheel] --cfg job did not print the config"; exit 1; }
"$work/venv/bin/python" -c "import dlkit.config as c, sys; sys.exit(0 if 'site-packages' in str(c.CONF_DIR) else 'configs not from the wheel: ' + str(c.CONF_DIR))"
echo "[wheel] dlkit-train --cfg job from the installed wheel: ok"
