#!/usr/bin/env bash
# Train a potential on a bundled dataset with no settings beyond the data, evaluate it on
# held-out frames, and run NVE MD with it.
# Usage: bash examples/quickstart.sh DATASET [TRAINING_BUDGET] [nnpot md --set KEY=VALUE ...]
#   DATASET: water or molecule_C3H3O4; TRAINING_BUDGET: e.g. 10m (the default)
# Outputs go to $RUNS (default runs/): $RUNS/NAME/ (model, checkpoints, plots) and $RUNS/NAME_md/.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=$1
BUDGET=${2:-10m}
shift $(( $# < 2 ? $# : 2 ))
NNPOT=${NNPOT:-.venv/bin/nnpot}
RUNS=${RUNS:-runs}
if [ -e "$RUNS/$NAME" ] || [ -e "$RUNS/$NAME.h5" ]; then
    echo "$RUNS/ already holds a $NAME run ($RUNS/$NAME and $RUNS/$NAME*.h5); remove them or choose another folder: RUNS=runs2 bash $0 $NAME $BUDGET" >&2
    exit 2
fi
mkdir -p "$RUNS"
cp "nnpot/bundled_data/$NAME.h5" "$RUNS/$NAME.h5"
$NNPOT data info "$RUNS/$NAME.h5" --rcut 6.0 --max-frames 50
$NNPOT data split "$RUNS/$NAME.h5" --fractions 0.8 0.2 --seed 0     # NAME.train.h5, NAME.valid.h5
$NNPOT train --data "$RUNS/$NAME.train.h5" --valid-data "$RUNS/$NAME.valid.h5" --out "$RUNS/$NAME" \
    --max-time "$BUDGET" --set threads=2
$NNPOT test -m "$RUNS/$NAME/model.nnp" -d "$RUNS/$NAME.valid.h5" --json "$RUNS/$NAME/test.json" \
    --plot "$RUNS/$NAME/plots"
extra=()
for kv in "$@"; do extra+=(--set "$kv"); done
$NNPOT md examples/md_water.yaml --set structure="$RUNS/$NAME.valid.h5" --set model="$RUNS/$NAME/model.nnp" \
    --set output="$RUNS/${NAME}_md" "${extra[@]}"
