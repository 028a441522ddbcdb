#!/usr/bin/env bash
# Train a water potential on the bundled data, evaluate it on held-out frames, run NVE MD with it.
# Usage: bash examples/water_quickstart.sh [TRAINING_BUDGET]   (default 10m; outputs in runs/water*)
exec bash "$(dirname "$0")/quickstart.sh" water "${1:-10m}"
