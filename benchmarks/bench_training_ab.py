"""A/B of training settings at equal wall-clock time: each variant trains the same model on the
same split (80/20, seed 0) for the same budget, two at a time with one core each, and reports the
held-out force and energy RMSE of its final model.

    python benchmarks/bench_training_ab.py --dataset molecule_C3H3O4 --budget 3m \\
        --model model.descriptor.type=ace model.descriptor.rcut=5.0 model.fitting.neuron=[64,64] \\
        --variant base= --variant cosine=lr_schedule=cosine,warmup=0.05

A variant is ``name=key=value,key=value`` (nnpot train ``--set`` overrides; empty: the defaults).
Writes ``benchmarks/results/training_ab_<dataset>_<budget>[_<tag>].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from nnpot.bundled import bundled_dataset

ROOT = Path(__file__).resolve().parents[1]
NNPOT = str(Path(sys.executable).with_name("nnpot"))


def dataset_path(name: str) -> Path:
    """A bundled dataset by name, or a path to an nnpot HDF5 file."""
    return Path(name) if name.endswith(".h5") else bundled_dataset(name)


def train_command(data: Path, out: Path, budget: str, overrides: list[str]) -> list[str]:
    cmd = [NNPOT, "train", "--data", str(data), "--out", str(out), "--max-time", budget, "-q", "--force",
           "--set", "threads=1", "--set", "split_seed=0", "--set", "valid_fraction=0.2"]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def run_pairs(jobs: list[tuple[str, list[str]]], work: Path, parallel: int = 2) -> dict[str, dict]:
    """Run ``(name, command)`` jobs ``parallel`` at a time (one thread each); the final metrics of each."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    results, pending, running = {}, list(jobs), []
    while pending or running:
        while pending and len(running) < parallel:
            name, cmd = pending.pop(0)
            log = open(work / f"{name}.log", "w")
            running.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), time.time()))
        time.sleep(2)
        for item in list(running):
            name, proc, t0 = item
            if proc.poll() is not None:
                running.remove(item)
                results[name] = {"returncode": proc.returncode, "wall_s": round(time.time() - t0, 1)}
    return results


def final_metrics(out: Path) -> dict:
    """Held-out RMSEs of the saved model and the steps taken (from the run folder)."""
    metrics = json.loads((out / "final_metrics.json").read_text())
    lines = [json.loads(x) for x in (out / "valid.jsonl").read_text().splitlines() if x.strip()]
    return {"force_rmse_meV_A": 1000 * metrics["force_rmse"], "energy_rmse_meV_atom": 1000 * metrics["energy_rmse_per_atom"],
            "steps": lines[-1]["step"] if lines else 0,
            "curve": [(x["time"], 1000 * x["force_rmse"]) for x in lines]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="molecule_C3H3O4")
    ap.add_argument("--budget", default="3m")
    ap.add_argument("--model", nargs="*", default=[], help="overrides every variant shares")
    ap.add_argument("--variant", action="append", required=True, help="name=key=value,key=value")
    ap.add_argument("--tag", default="")
    ap.add_argument("--work", default="runs/training_ab")
    args = ap.parse_args()
    data = dataset_path(args.dataset)
    work = Path(args.work) / f"{args.dataset}_{args.budget}{'_' + args.tag if args.tag else ''}"
    work.mkdir(parents=True, exist_ok=True)
    jobs = []
    for spec in args.variant:
        name, _, sets = spec.partition("=")
        overrides = args.model + [s for s in sets.split(",") if s]
        jobs.append((name, train_command(data, work / name, args.budget, overrides)))
    runs = run_pairs(jobs, work)
    rows = {}
    print(f"{'variant':24s} {'force RMSE meV/A':>17s} {'energy meV/atom':>16s} {'steps':>7s}")
    for name, cmd in jobs:
        row = {"command": " ".join(cmd[1:]), **runs[name]}
        if runs[name]["returncode"] == 0:
            row.update(final_metrics(work / name))
            print(f"{name:24s} {row['force_rmse_meV_A']:17.1f} {row['energy_rmse_meV_atom']:16.1f} {row['steps']:7d}")
        else:
            print(f"{name:24s} failed (see {work / name}.log)")
        rows[name] = row
    result = {"benchmark": "training_ab", "dataset": args.dataset, "budget": args.budget, "shared": args.model,
              "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores, one thread per run",
              "variants": rows}
    out = ROOT / "benchmarks" / "results" / f"training_ab_{args.dataset}_{args.budget}{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
