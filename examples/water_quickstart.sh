#!/usr/bin/env bash
# Train a water potential on the bundled data, evaluate it on held-out frames, run NVE MD with it.
# Usage: bash examples/water_quickstart.sh [TRAINING_BUDGET]   (default 10m)
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-10m}
NNPOT=${NNPOT:-.venv/bin/nnpot}
mkdir -p runs
cp examples/data/water.h5 runs/water.h5
$NNPOT data info runs/water.h5 --rcut 6.0 --max-frames 20
$NNPOT data split runs/water.h5 --fractions 0.8 0.2 --seed 0          # runs/water.train.h5, runs/water.valid.h5
$NNPOT train --data runs/water.train.h5 --valid-data runs/water.valid.h5 --out runs/water --max-time "$BUDGET" --set threads=2
$NNPOT test -m runs/water/model.nnp -d runs/water.valid.h5 --json runs/water/test.json --plot runs/water/plots
$NNPOT md examples/md_water.yaml
