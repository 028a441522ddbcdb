"""Data efficiency: held-out force RMSE against the number of training frames, nnpot's best model
against MACE, each pair trained at the same time with one core each (``bench_accuracy.py --frames
N`` for every N; the held-out 20% is the same at every size).

    python benchmarks/bench_data_efficiency.py --dataset molecule_C3H3O4 --frames 25 50 100 200 \\
        --budget 5m --models ace64 mace

``--budget`` takes one duration for every size, or one per size: towards convergence a larger
set needs a longer run (``--budget 10m 15m 25m 40m``). Each row also gives how far each learning
curve still fell over the last quarter of its run, the convergence criterion.

Writes ``benchmarks/results/data_efficiency_<dataset>_<budget>[_<tag>].json`` (the per-size result
files of ``bench_accuracy.py`` stay beside it) and prints the table with the ratio nnpot / MACE.
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
    ap.add_argument("--budget", nargs="+", default=["5m"], help="one duration, or one per size in --frames")
    ap.add_argument("--models", nargs=2, default=["ace64", "mace"], help="nnpot preset, then the MACE size")
    ap.add_argument("--work", default="runs/data_efficiency")
    ap.add_argument("--tag", default="", help="suffix of the result files' names")
    args = ap.parse_args()
    if len(args.budget) not in (1, len(args.frames)):
        raise SystemExit(f"--budget: give one duration, or one per size ({len(args.frames)}), not {len(args.budget)}")
    budgets = args.budget * len(args.frames) if len(args.budget) == 1 else args.budget
    suffix = f"_{args.tag}" if args.tag else ""
    names = [parse_model(spec)[0] for spec in args.models]  # a variant NAME=PRESET:... is scored as NAME
    rows = []
    for n, budget in zip(args.frames, budgets):
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_accuracy.py"), "--dataset",
                               args.dataset, "--budget", budget, "--frames", str(n), "--models", *args.models,
                               "--work", args.work, "--tag", args.tag])
        if done.returncode:
            raise SystemExit(f"bench_accuracy.py stopped at {n} frames (exit status {done.returncode}); see above")
        result = json.loads((ROOT / "benchmarks" / "results" /
                             f"accuracy_{args.dataset}_{budget}_{n}frames{suffix}.json").read_text())
        row = {"frames": n, "budget": budget}
        for name in names:
            m = result["models"][name]
            row[name] = {k: m.get(k) for k in ("force_rmse_meV_A", "best_force_rmse_meV_A", "energy_rmse_meV_atom",
                                               "steps", "epochs", "gain_last_quarter_pct", "best_at_min")}
        nn, mace = (row[name]["force_rmse_meV_A"] for name in names)
        row["force_ratio"] = nn / mace if nn and mace else None
        rows.append(row)
    print(f"\n{args.dataset}; held-out force RMSE (meV/A) / energy RMSE (meV/atom) [fall over the last quarter, %]")
    print(f"{'frames':>7s} {'budget':>7s} {names[0]:>24s} {names[1]:>24s} {'ratio':>6s}")
    for r in rows:
        cells = [f"{m['force_rmse_meV_A'] or 0:8.1f} / {m['energy_rmse_meV_atom'] or 0:6.1f} "
                 f"[{m.get('gain_last_quarter_pct') if m.get('gain_last_quarter_pct') is not None else '-'}]"
                 for m in (r[name] for name in names)]
        ratio = f"{r['force_ratio']:.2f}" if r["force_ratio"] else "-"
        print(f"{r['frames']:7d} {r['budget']:>7s} {cells[0]:>24s} {cells[1]:>24s} {ratio:>6s}")
    label = args.budget[0] if len(args.budget) == 1 else "-".join(args.budget)
    write_result(f"data_efficiency_{args.dataset}_{label}{suffix}", rows, models=names, budget=budgets,
                 note="each size: both models at the same time, one core each; scored on the same held-out 20%")


if __name__ == "__main__":
    main()
