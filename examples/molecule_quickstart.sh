#!/usr/bin/env bash
# Zero-config training on the bundled C3H3O4 molecule set (non-periodic, C/H/O): the type map and
# sel come from the data. Then a test on held-out frames and NVE MD of the molecule in vacuum
# (0.25 fs steps: light atoms and reactive data).
# Usage: bash examples/molecule_quickstart.sh [TRAINING_BUDGET]   (default 10m; outputs in runs/molecule_C3H3O4*)
exec bash "$(dirname "$0")/quickstart.sh" molecule_C3H3O4 "${1:-10m}" steps=400 timestep_fs=0.25
