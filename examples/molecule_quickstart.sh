#!/usr/bin/env bash
# Zero-config training on the bundled C3H3O4 molecule set (non-periodic, C/H/O): nothing but the
# data is given; the type map and sel come from it. Then a test on held-out frames and NVE MD of
# the molecule in vacuum.
# Usage: bash examples/molecule_quickstart.sh [TRAINING_BUDGET]   (default 10m)
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-10m}
NNPOT=${NNPOT:-.venv/bin/nnpot}
RUNS=${RUNS:-runs}
if [ -e "$RUNS/molecule" ] || [ -e "$RUNS/molecule.h5" ]; then
    echo "$RUNS/ already holds a molecule run; remove it or choose another folder: RUNS=runs2 bash $0 $BUDGET" >&2
    exit 2
fi
mkdir -p "$RUNS"
cp nnpot/bundled_data/molecule_C3H3O4.h5 "$RUNS/molecule.h5"
$NNPOT data info "$RUNS/molecule.h5" --rcut 6.0
$NNPOT data split "$RUNS/molecule.h5" --fractions 0.8 0.2 --seed 0   # molecule.train.h5, molecule.valid.h5
$NNPOT train --data "$RUNS/molecule.train.h5" --valid-data "$RUNS/molecule.valid.h5" --out "$RUNS/molecule" \
    --max-time "$BUDGET"
$NNPOT test -m "$RUNS/molecule/model.nnp" -d "$RUNS/molecule.valid.h5" --json "$RUNS/molecule/test.json" \
    --plot "$RUNS/molecule/plots"
$NNPOT md examples/md_water.yaml --set structure="$RUNS/molecule.valid.h5" --set model="$RUNS/molecule/model.nnp" \
    --set output="$RUNS/molecule_md" --set steps=400 --set timestep_fs=0.25 --set tabulate=false
