"""How well an ensemble's deviation ranks its true force error, on labelled frames.

For every frame of each ``--data`` file: DP-GEN's ``max_devi_f`` against the largest per-atom
force error, ``avg_devi_f`` against the frame's force RMSE, and per atom ``devi_f`` against
``|F - F_ref|``; the Spearman rank correlation of each pair, a table, JSON and scatter plots.

    python benchmarks/bench_deviation.py --ensemble runs/ens --data test.h5 pool.h5

With ``--train FILE.h5 --members M`` it first trains two ensembles of M members on that file,
one with the members differing in seeds and data order only and one bagged (``bootstrap``),
in parallel processes, and compares the deviation of the first half of each and of all of it:

    python benchmarks/bench_deviation.py --train WORK/active80.h5 --members 4 --data WORK/test.h5 \
        --set model.descriptor.rcut=5.0 ... --json results/deviation_ethanol_bagging.json
"""

from __future__ import annotations

import argparse
import json
import time
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
    # the force RMSE of the ensemble mean over every component: |F - F_ref|^2 holds three of them
    return {"force_rmse": float(np.sqrt(np.mean(np.square(out["force_error"])) / 3)),
            "spearman": float(spearmanr(out["max_devi_f"], out["max_force_error"]).statistic),
            "spearman_mean": float(spearmanr(out["avg_devi_f"], out["frame_force_rmse"]).statistic),
            "spearman_per_atom": float(spearmanr(out["devi_f"], out["force_error"]).statistic),
            "ensemble": str(ensemble), **out}


def train_ensembles(data: str, members: int, sets: list[str], out: Path) -> dict[str, Path]:
    """Plain and bagged ensembles of ``members`` trained on ``data`` (two processes), and
    ensembles of their first ``members // 2``: name -> ensemble folder."""
    from concurrent.futures import ProcessPoolExecutor

    from nnpot.potentials.modelfile import write_manifest

    runs = {"plain": [], "bagged": ["bootstrap=true"]}
    with ProcessPoolExecutor(2) as pool:
        jobs = [pool.submit(_train, data, members, sets + extra, out / name) for name, extra in runs.items()]
        for job in jobs:
            job.result()
    folders = {}
    for name in runs:
        half = out / f"{name}_{members // 2}"
        half.mkdir(exist_ok=True)
        write_manifest(half, [out / name / f"member_{k}" / "model.nnp" for k in range(members // 2)])
        folders[f"{name}, {members // 2} members"] = half
        folders[f"{name}, {members} members"] = out / name
    return folders


def _train(data: str, members: int, sets: list[str], out: Path) -> None:
    from nnpot.cli import main as cli

    args = ["train", "--data", data, "--out", str(out), "--ensemble", str(members), "-q", "--force"]
    if cli(args + [x for kv in sets + ["threads=1"] for x in ("--set", kv)]) != 0:
        raise SystemExit(f"training {out} failed")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ensemble", help="ensemble folder (nnpot train --ensemble N)")
    p.add_argument("--data", nargs="+", required=True, help="labelled HDF5 files")
    p.add_argument("--train", help="train plain and bagged ensembles on this HDF5 file first (instead of --ensemble)")
    p.add_argument("--members", type=int, default=8, help="with --train: members per ensemble")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="with --train: nnpot train --set")
    p.add_argument("--work", default="runs/bench_deviation", help="with --train: where the ensembles go")
    p.add_argument("--json", default="deviation.json")
    args = p.parse_args()
    if bool(args.ensemble) == bool(args.train):
        p.error("give --ensemble or --train")
    if args.train and args.members < 4:
        p.error(f"--members must be at least 4 (halves of at least 2), got {args.members}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nnpot.data import H5Dataset

    t0 = time.time()
    ensembles = (train_ensembles(args.train, args.members, args.set, Path(args.work)) if args.train
                 else {args.ensemble: Path(args.ensemble)})
    results = {}
    print(f"{'ensemble':<24} {'data':<30} {'frames':>7} {'F RMSE':>8} {'max vs max':>11} {'mean vs RMS':>12} "
          f"{'per atom':>9}  (meV/A; Spearman)")
    for name, folder in ensembles.items():
        for path in args.data:
            frames = list(H5Dataset(path))
            r = deviation_vs_error(str(folder), frames)
            results[f"{name} | {path}"] = r
            print(f"{name:<24} {Path(path).name:<30} {len(frames):>7} {r['force_rmse'] * 1e3:>8.1f} "
                  f"{r['spearman']:>11.2f} {r['spearman_mean']:>12.2f} {r['spearman_per_atom']:>9.2f}")
    Path(args.json).write_text(json.dumps({"args": vars(args), "wall_s": time.time() - t0, "results": results}, indent=1))
    fig, axes = plt.subplots(len(results), 2, figsize=(10, 4 * len(results)), squeeze=False)
    for (key, r), (a, b) in zip(results.items(), axes):
        a.scatter(r["max_devi_f"], r["max_force_error"], s=10)
        a.set(xlabel="max_devi_f (eV/A)", ylabel="largest force error (eV/A)",
              title=f"{key.split(' | ')[0]}, {Path(key.split(' | ')[1]).name}: Spearman {r['spearman']:.2f}")
        b.scatter(r["devi_f"], r["force_error"], s=2, alpha=0.3)
        b.set(xlabel="devi_f (eV/A)", ylabel="|F - F_ref| (eV/A)", title=f"per atom: Spearman {r['spearman_per_atom']:.2f}")
    fig.tight_layout()
    fig.savefig(Path(args.json).with_suffix(".png"), dpi=120)
    print(f"wrote {args.json} and its .png")


if __name__ == "__main__":
    main()
