#!/usr/bin/env bash
# Train a water potential on the bundled data, evaluate it, and run NVE MD with it.
# Usage: bash examples/water_quickstart.sh [TRAINING_BUDGET]   (default 10m)
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-10m}
PY=${PYTHON:-.venv/bin/python}
NNPOT=${NNPOT:-.venv/bin/nnpot}
$NNPOT data info examples/data/water.h5 --rcut 6.0 --max-frames 20
$NNPOT train --data examples/data/water.h5 --out runs/water --max-time "$BUDGET" --set threads=2
$NNPOT test -m runs/water/model.nnp -d examples/data/water.h5 --json runs/water/test.json --plot runs/water/plots
$NNPOT md examples/md_water.yaml
