#!/usr/bin/env bash
# Time two checkouts of nnpot (each with its own .venv) on the same CPU, one after the other in
# one run: the training step and energy+forces beside DeePMD-kit (bench_vs_deepmd.py) and the MD
# drivers (bench_md.py). Results: benchmarks/results/compare_{old,new}_*.json of NEW_DIR.
# Usage: bash benchmarks/compare_checkouts.sh OLD_DIR NEW_DIR
set -euo pipefail
OLD=$(cd "$1" && pwd); NEW=$(cd "$2" && pwd)
DP=${DP_PYTHON:-$NEW/.peers/dp/bin/python}
OUT=$NEW/benchmarks/results
for side in old new; do
    dir=$OLD; [ "$side" = new ] && dir=$NEW
    (cd "$dir" && .venv/bin/python benchmarks/bench_vs_deepmd.py --sizes 192 1536 --dp-python "$DP" \
        --json "$OUT/compare_${side}_vs_deepmd.json")
done
for side in old new; do
    dir=$OLD; [ "$side" = new ] && dir=$NEW
    (cd "$dir" && .venv/bin/python benchmarks/bench_md.py --device cpu --sizes 192 1536 --dtypes float64 float32 \
        --ase-max 1536 --dp-python "$DP" --dp-model "$NEW/runs/bench_dp/model.pth" --dp-max 1536 \
        --json "$OUT/compare_${side}_md_cpu.json")
done
