"""DeePMD-kit 3.2 se_e2_a for a wall-clock budget: the ``deepmd`` job of ``bench_accuracy.py``.

DeePMD-kit stops at a step count, not at a time, so the job times DeePMD-kit's first 140 steps
(inside the budget), trains for the steps that fit in the rest, with the learning rate decaying
from 1e-3 to 1e-5 over them, validating on 8 held-out frames 20 times along the way, and tests
the frozen model on every held-out frame. The model is DeePMD-kit's water example (embedding
[25, 50, 100], fitting [240, 240, 240]) with the type map and ``sel`` of the data at ``--rcut``.

    python benchmarks/deepmd_job.py --train train.h5 --valid valid.h5 --out runs/x/deepmd --budget 30m

Writes ``metrics.json`` in ``--out``: force and energy RMSE, steps, seconds a step, the curve.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_budget import DP_PYTHON, frame_settings, run_deepmd  # noqa: E402


def main() -> None:
    from nnpot.training.config import parse_duration

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--valid", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget", default="30m")
    ap.add_argument("--rcut", type=float, default=5.0)
    ap.add_argument("--dp-python", default=DP_PYTHON, help="a Python with deepmd-kit 3.2 (../shared/peers/README.md)")
    args = ap.parse_args()
    type_map, sel = frame_settings(args.train, args.rcut)
    result = run_deepmd(args.dp_python, args.train, args.valid, args.out, parse_duration(args.budget), type_map, sel,
                        rcut=args.rcut, timing_in_budget=True, valid_frames=8)
    result.update(type_map=type_map, sel=sel, rcut=args.rcut)
    (args.out / "metrics.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}))


if __name__ == "__main__":
    main()
