"""The cost of an ensemble per MD step: one model, N models one after the other, and N models in
one vectorised pass (torch.func.vmap over stacked weights, one batched backward), on water boxes
replicated from the bundled data. Prints a table and writes JSON.

    python benchmarks/bench_ensemble.py --device cpu --sizes 192 1536
    python benchmarks/bench_ensemble.py --device cuda --sizes 192 12288 --dtype float32
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from ase import units

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_eval import replicate_for, water_model  # noqa: E402
from bench_md import rate  # noqa: E402


def main() -> None:
    from nnpot import NNPotCalculator
    from nnpot.md import VelocityVerlet
    from nnpot.md.state import thermalize
    from nnpot.potentials.ensemble import EnsembleModel

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[192, 1536])
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "ensemble_cpu.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base, model = water_model(sel=(48, 96))
    members = []
    for k in range(args.members):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for q in m.parameters():
                q.mul_(1 + 0.01 * k)  # different weights, same statistics
        members.append(m)
    variants = {"one model": model, "sequential": EnsembleModel(members), "vectorised": EnsembleModel(members)}
    variants["sequential"].batched, variants["vectorised"].batched = False, True
    rows = []
    print(f"{'atoms':>7} {'one model':>10} {f'{args.members} sequential':>13} {f'{args.members} vectorised':>13} "
          f"{'cost x one (seq / vec)':>24}  steps/s, {args.device}, {args.dtype}")
    for n in args.sizes:
        atoms0 = base.repeat(replicate_for(n))
        thermalize(atoms0, 300, 0)
        row = {"atoms": n, "device": args.device, "dtype": args.dtype, "members": args.members}
        for name, m in variants.items():
            a = atoms0.copy()
            a.calc = NNPotCalculator(m, device=args.device, dtype=args.dtype, chunk_size=None)
            dyn = VelocityVerlet(a, 0.1 * units.fs, min_distance=0.0)  # random weights: speed only
            row[name] = rate(dyn.run, args.seconds, args.device, first=5)
        row["cost_sequential"] = row["one model"] / row["sequential"]
        row["cost_vectorised"] = row["one model"] / row["vectorised"]
        rows.append(row)
        print(f"{n:>7} {row['one model']:>10.2f} {row['sequential']:>13.2f} {row['vectorised']:>13.2f} "
              f"{row['cost_sequential']:>11.2f} / {row['cost_vectorised']:.2f}")
    Path(args.json).write_text(json.dumps({"threads": args.threads, "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
