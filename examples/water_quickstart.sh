#!/usr/bin/env bash
# Train a water potential on the bundled data, evaluate it on held-out frames, run NVE MD with it.
# Usage: bash examples/water_quickstart.sh [TRAINING_BUDGET]   (default 10m)
# Outputs go to $RUNS (default runs/); a second run needs another RUNS or the first one removed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-10m}
NNPOT=${NNPOT:-.venv/bin/nnpot}
RUNS=${RUNS:-runs}
if [ -e "$RUNS/water" ] || [ -e "$RUNS/water.h5" ]; then
    echo "$RUNS/ already holds a quickstart run; remove it or choose another folder: RUNS=runs2 bash $0 $BUDGET" >&2
    exit 2
fi
mkdir -p "$RUNS"
cp nnpot/bundled_data/water.h5 "$RUNS/water.h5"
$NNPOT data info "$RUNS/water.h5" --rcut 6.0 --max-frames 20
$NNPOT data split "$RUNS/water.h5" --fractions 0.8 0.2 --seed 0     # water.train.h5, water.valid.h5
$NNPOT train --data "$RUNS/water.train.h5" --valid-data "$RUNS/water.valid.h5" --out "$RUNS/water" \
    --max-time "$BUDGET" --set threads=2
$NNPOT test -m "$RUNS/water/model.nnp" -d "$RUNS/water.valid.h5" --json "$RUNS/water/test.json" \
    --plot "$RUNS/water/plots"
$NNPOT md examples/md_water.yaml --set model="$RUNS/water/model.nnp" --set output="$RUNS/water_md"
