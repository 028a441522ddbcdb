#!/usr/bin/env bash
# Time two checkouts of nnpot (each with its own .venv) on the same CPU, one after the other in
# one run: the training step and energy+forces beside DeePMD-kit (bench_vs_deepmd.py) and the MD
# drivers (bench_md.py). Results: benchmarks/results/compare_{old,new}_*.json of NEW_DIR.
# Usage: MODEL=trained_water.nnp bash benchmarks/compare_checkouts.sh OLD_DIR NEW_DIR   (MD needs a trained model:
# a random one lets atoms collide; train it with the OLD checkout so that both can read it)
# MD_ONLY=1 skips the training-step and energy+forces part.
set -euo pipefail
OLD=$(cd "$1" && pwd); NEW=$(cd "$2" && pwd)
DP=${DP_PYTHON:-$NEW/.peers/dp/bin/python}
OUT=$NEW/benchmarks/results
for side in old new; do
    [ -n "${MD_ONLY:-}" ] && break
    dir=$OLD; [ "$side" = new ] && dir=$NEW
    (cd "$dir" && .venv/bin/python benchmarks/bench_vs_deepmd.py --sizes 192 1536 --dp-python "$DP" \
        --json "$OUT/compare_${side}_vs_deepmd.json")
done
for side in old new; do
    dir=$OLD; [ "$side" = new ] && dir=$NEW
    (cd "$dir" && .venv/bin/python benchmarks/bench_md.py --device cpu --sizes 192 1536 --dtypes float64 float32 \
        --ase-max 1536 --dp-python "$DP" --dp-model "$NEW/runs/bench_dp/model.pth" --dp-max 1536 ${MODEL:+--model "$MODEL"} \
        --json "$OUT/compare_${side}_md_cpu.json")
done
