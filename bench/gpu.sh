#!/usr/bin/env bash
# GPU day one on a bare device machine: install what its image lacks from wheels carried in
# (no network there), then run every check and measurement within the budget.
#
#   here (with network):  bash bench/gpu.sh --fetch           # wheels into .gpu-wheels/
#   on the GPU machine:   bash bench/gpu.sh [--budget 540]    # carry .gpu-wheels along
#
# The device image has torch, triton, cupy, numba and nvidia-ml-py; the project's other
# dependencies come from .gpu-wheels. Results: bench/results/gpu-<profile>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels
PY=${PYTHON:-python3}
DEVICE_WHEELS="optuna alembic sqlalchemy colorlog mako cmaes lightgbm"
if [ "${1:-}" = "--fetch" ]; then
  # the device image's Python is 3.12; these are the base dependencies it does not ship
  # (their own dependencies, numpy, pyyaml, tqdm, markupsafe, ..., it has)
  $PY -m pip download -q --no-deps -d "$WHEELS" --only-binary=:all: --python-version 3.12 \
      --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform any \
      $DEVICE_WHEELS
  du -sh "$WHEELS"; exit 0
fi
t0=$(date +%s)
missing=$($PY - <<'PY'
import importlib.util
need = ["optuna", "lightgbm", "cmaes"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)
if [ -n "$missing" ]; then
  echo "gpu.sh: installing from $WHEELS: $missing"
  [ -d "$WHEELS" ] || { echo "gpu.sh: $WHEELS missing: run 'bash bench/gpu.sh --fetch' where pip reaches PyPI and carry it"; exit 2; }
  $PY -m pip install -q --no-index --no-deps --find-links "$WHEELS" $DEVICE_WHEELS
fi
echo "gpu.sh: set-up took $(( $(date +%s) - t0 )) s"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
rc=0
$PY -m bench gpu --json auto "$@" || rc=$?
# on the device tool's machine, what lies under $OUT comes back
if [ -n "${OUT:-}" ]; then cp bench/results/gpu-*.json "$OUT"/ 2>/dev/null || true; fi
exit $rc
