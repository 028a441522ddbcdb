"""How well an ensemble's deviation ranks its true force error, on labelled frames.

For every frame of each ``--data`` file: DP-GEN's ``max_devi_f`` against the largest per-atom
force error, ``avg_devi_f`` against the frame's force RMSE, and per atom ``devi_f`` against
``|F - F_ref|``; the Spearman rank correlation of each pair, a table, JSON and scatter plots.

    python benchmarks/bench_deviation.py --ensemble runs/ens --data test.h5 pool.h5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def deviation_vs_error(ensemble: str, frames: list) -> dict:
    """Deviations and true force errors of ``ensemble`` (an ensemble folder) on labelled
    ``frames`` (nnpot ``Frame`` objects), with their Spearman rank correlations."""
    from scipy.stats import spearmanr

    from nnpot import NNPotCalculator

    calc = NNPotCalculator(str(ensemble), device="cpu")
    out = {k: [] for k in ("max_devi_f", "max_force_error", "avg_devi_f", "frame_force_rmse", "devi_f", "force_error")}
    for frame in frames:
        atoms = frame.to_atoms()
        atoms.calc = calc
        errors = np.linalg.norm(atoms.get_forces() - frame.forces, axis=1)
        out["max_devi_f"].append(calc.results["max_devi_f"])
        out["max_force_error"].append(float(errors.max()))
        out["avg_devi_f"].append(calc.results["avg_devi_f"])
        out["frame_force_rmse"].append(float(np.sqrt((errors ** 2).mean())))
        out["devi_f"] += calc.results["devi_f"].tolist()
        out["force_error"] += errors.tolist()
    return {"spearman": float(spearmanr(out["max_devi_f"], out["max_force_error"]).statistic),
            "spearman_mean": float(spearmanr(out["avg_devi_f"], out["frame_force_rmse"]).statistic),
            "spearman_per_atom": float(spearmanr(out["devi_f"], out["force_error"]).statistic),
            "ensemble": str(ensemble), **out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ensemble", required=True, help="ensemble folder (nnpot train --ensemble N)")
    p.add_argument("--data", nargs="+", required=True, help="labelled HDF5 files")
    p.add_argument("--json", default="deviation.json")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nnpot.data import H5Dataset

    results = {path: deviation_vs_error(args.ensemble, list(H5Dataset(path))) for path in args.data}
    print(f"{'data':<40} {'frames':>7} {'max vs max':>11} {'mean vs RMS':>12} {'per atom':>9}  (Spearman)")
    for path, r in results.items():
        print(f"{path:<40} {len(r['max_devi_f']):>7} {r['spearman']:>11.2f} {r['spearman_mean']:>12.2f} "
              f"{r['spearman_per_atom']:>9.2f}")
    Path(args.json).write_text(json.dumps({"ensemble": args.ensemble, "results": results}, indent=1))
    fig, axes = plt.subplots(len(results), 2, figsize=(10, 4 * len(results)), squeeze=False)
    for (path, r), (a, b) in zip(results.items(), axes):
        a.scatter(r["max_devi_f"], r["max_force_error"], s=10)
        a.set(xlabel="max_devi_f (eV/A)", ylabel="largest force error (eV/A)",
              title=f"{Path(path).name}, per frame: Spearman {r['spearman']:.2f}")
        b.scatter(r["devi_f"], r["force_error"], s=2, alpha=0.3)
        b.set(xlabel="devi_f (eV/A)", ylabel="|F - F_ref| (eV/A)", title=f"per atom: Spearman {r['spearman_per_atom']:.2f}")
    fig.tight_layout()
    fig.savefig(Path(args.json).with_suffix(".png"), dpi=120)
    print(f"wrote {args.json} and its .png")


if __name__ == "__main__":
    main()
