"""Data efficiency: held-out force RMSE against the number of training frames, nnpot's best model
against MACE, each pair trained at the same time with one core each (``bench_accuracy.py --frames
N`` for every N; the held-out 20% is the same at every size).

    python benchmarks/bench_data_efficiency.py --dataset molecule_C3H3O4 --frames 25 50 100 200 \\
        --budget 5m --models ace64 mace

Writes ``benchmarks/results/data_efficiency_<dataset>_<budget>.json`` (the per-size result files
of ``bench_accuracy.py`` stay beside it) and prints the table with the ratio nnpot / MACE.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_accuracy import parse_model  # noqa: E402
from bench_eval import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="molecule_C3H3O4")
    ap.add_argument("--frames", type=int, nargs="+", default=[25, 50, 100, 200])
    ap.add_argument("--budget", default="5m")
    ap.add_argument("--models", nargs=2, default=["ace64", "mace"], help="nnpot preset, then the MACE size")
    ap.add_argument("--work", default="runs/data_efficiency")
    args = ap.parse_args()
    names = [parse_model(spec)[0] for spec in args.models]  # a variant NAME=PRESET:... is scored as NAME
    rows = []
    for n in args.frames:
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_accuracy.py"), "--dataset", args.dataset,
                        "--budget", args.budget, "--frames", str(n), "--models", *args.models, "--work", args.work],
                       check=True)
        result = json.loads((ROOT / "benchmarks" / "results" /
                             f"accuracy_{args.dataset}_{args.budget}_{n}frames.json").read_text())
        row = {"frames": n}
        for name in names:
            m = result["models"][name]
            row[name] = {k: m.get(k) for k in ("force_rmse_meV_A", "best_force_rmse_meV_A", "energy_rmse_meV_atom",
                                               "steps", "epochs")}
        nn, mace = (row[name]["force_rmse_meV_A"] for name in names)
        row["force_ratio"] = nn / mace if nn and mace else None
        rows.append(row)
    print(f"\n{args.dataset}, {args.budget} per size; held-out force RMSE (meV/A), energy RMSE (meV/atom)")
    print(f"{'frames':>7s} {names[0]:>16s} {names[1]:>16s} {'ratio':>6s}")
    for r in rows:
        a, b = (r[name] for name in names)
        ratio = f"{r['force_ratio']:.2f}" if r["force_ratio"] else "-"
        print(f"{r['frames']:7d} {a['force_rmse_meV_A'] or 0:8.0f} / {a['energy_rmse_meV_atom'] or 0:5.0f} "
              f"{b['force_rmse_meV_A'] or 0:8.0f} / {b['energy_rmse_meV_atom'] or 0:5.0f} {ratio:>6s}")
    write_result(f"data_efficiency_{args.dataset}_{args.budget}", rows, models=names, budget=args.budget,
                 note="each size: both models at the same time, one core each; scored on the same held-out 20%")


if __name__ == "__main__":
    main()
