"""The quickstart as a new user runs it: wall time per phase, steps, and held-out errors.

    python benchmarks/bench_quickstart.py --dataset water --budget 10m              # a free machine
    python benchmarks/bench_quickstart.py --dataset water --budget 10m --busy 1     # one core taken

Runs ``examples/quickstart.sh`` into a temporary folder, timing each phase from the moment its
first output appears (data info and split, training with its final re-fit and validation, test,
MD). ``--busy N`` keeps N cores spinning in other processes for the whole run, as a shared
machine would. Prints a table and writes ``benchmarks/results/quickstart_<dataset>[_busyN].json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the first output of each phase (the phases run in this order)
MARKERS = [("data info and split", "frames, "), ("training", "from the training data"),
           ("test", "model: "), ("md", "plot: "), ("end", "\x00")]


def _spin(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        pass


def run(dataset: str, budget: str, busy: int) -> dict:
    env = {**os.environ, "RUNS": tempfile.mkdtemp(prefix="nnpot-quickstart-"),
           "NNPOT": str(Path(sys.executable).parent / "nnpot")}
    spinners = [mp.Process(target=_spin, args=(7200,), daemon=True) for _ in range(busy)]
    for p in spinners:
        p.start()
    t0 = time.perf_counter()
    seen: dict[str, float] = {}
    text = ""
    proc = subprocess.Popen(["bash", str(ROOT / "examples" / "quickstart.sh"), dataset, budget], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while chunk := proc.stdout.read1(4096):
        text += chunk.decode(errors="replace")
        for name, marker in MARKERS:
            if name not in seen and marker in text:
                seen[name] = time.perf_counter() - t0
    proc.wait()
    total = time.perf_counter() - t0
    for p in spinners:
        p.terminate()
    run_dir = Path(env["RUNS"]) / dataset
    rows = [json.loads(line) for line in (run_dir / "valid.jsonl").read_text().splitlines() if line.strip()]
    test = json.loads((run_dir / "test.json").read_text()) if (run_dir / "test.json").exists() else {}
    starts = [seen.get(name, total) for name, _ in MARKERS[:-1]] + [total]
    phases = {name: round(b - a, 1) for (name, _), a, b in zip(MARKERS[:-1], starts, starts[1:])}
    return {"dataset": dataset, "budget": budget, "busy_cores": busy, "cpu_count": os.cpu_count(),
            "exit_code": proc.returncode, "total_s": round(total, 1), "phases_s": phases,
            "steps": rows[-1]["step"] if rows else 0, "validations": len(rows),
            "force_rmse_meV_A": round(test.get("force_rmse", float("nan")) * 1e3, 1),
            "force_label_std_meV_A": round(test.get("force_label_std", float("nan")) * 1e3, 1),
            "energy_rmse_meV_atom": round(test.get("energy_rmse_per_atom", float("nan")) * 1e3, 2),
            "undertrained_warning": "warning: the model is undertrained" in text,
            "md_skipped": "skipping MD" in text, "md_line": next((line for line in text.splitlines()
                                                                  if " steps of " in line and "drift" in line), ""),
            "runs": env["RUNS"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="water", choices=["water", "molecule_C3H3O4"])
    parser.add_argument("--budget", default="10m")
    parser.add_argument("--busy", type=int, default=0, help="cores kept busy by other processes")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = run(args.dataset, args.budget, args.busy)
    print(f"{'phase':<22} {'seconds':>8}")
    for name, sec in result["phases_s"].items():
        print(f"{name:<22} {sec:8.1f}")
    print(f"{'total':<22} {result['total_s']:8.1f}")
    print(f"steps {result['steps']}, validations {result['validations']}, force RMSE {result['force_rmse_meV_A']} "
          f"meV/A (labels spread {result['force_label_std_meV_A']}), energy {result['energy_rmse_meV_atom']} meV/atom, "
          f"exit {result['exit_code']}, MD skipped: {result['md_skipped']}")
    suffix = f"_busy{args.busy}" if args.busy else ""
    out = Path(args.json or ROOT / "benchmarks" / "results" / f"quickstart_{args.dataset}{suffix}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
