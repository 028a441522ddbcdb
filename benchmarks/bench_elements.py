"""How cost and accuracy grow with the number of elements: random fcc alloys of 2, 4 and 7
metals labelled by ASE's EMT (Cu Al / + Ni Ag / + Au Pd Pt), se_e2_a against e3nn.

For each (elements, descriptor), in a process of its own (so its peak memory is its own):
zero-config training for ``--budget`` wall-clock time on 80% of the frames, then the force and
energy RMSE on the held-out 20%, the training step time (batch 1, measured after the budget on
cached frames), energy+forces time per atom on a 4x4x4 supercell (256 atoms) and peak resident
memory.

    python benchmarks/bench_elements.py --budget 10m [--frames 300] [--threads 2] [--jobs 1]

``--jobs 2 --threads 1`` trains two pairs at once, a core each. ``--set KEY=VALUE`` passes a
config override to every training run (e.g. ``bias_refit_frames=0`` for the energy-bias A/B),
``--tag`` names the result. Prints a table and writes
benchmarks/results/elements_<budget>[_<tag>].json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_train_budget import valid_energy_swing  # noqa: E402

SETS = {2: ["Cu", "Al"], 4: ["Cu", "Al", "Ni", "Ag"], 7: ["Cu", "Al", "Ni", "Ag", "Au", "Pd", "Pt"]}


def one_run(args) -> dict:
    """Train, test and time one (elements, descriptor) pair; runs inside its own process."""
    import numpy as np
    import torch

    from nnpot.cli import main as nnpot_main
    from nnpot.data import H5Dataset
    from nnpot.data.emt_alloys import emt_alloy_frames
    from nnpot.potentials import NNPotCalculator, load_model
    from nnpot.potentials.evaluator import predict
    from nnpot.training.metrics import error_metrics

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    out = work / f"{args.n}_{args.descriptor}"
    nnpot_main(["train", "--data", str(work / f"alloy{args.n}.train.h5"), "--valid-data",
                str(work / f"alloy{args.n}.valid.h5"), "--out", str(out), "--max-time", args.budget, "-q",
                "--set", f"model.descriptor.type={args.descriptor}", "--set", f"threads={args.threads}",
                "--set", "valid_freq=200", *(x for s in args.sets for x in ("--set", s))])
    valid = H5Dataset(work / f"alloy{args.n}.valid.h5")
    model = load_model(out / "model.nnp")
    metrics = error_metrics(predict(model, list(valid)))
    from nnpot.training.trainer import Trainer
    from nnpot.training.config import load_train_config

    trainer = Trainer(load_train_config(str(out / "config.yaml")), Path(tempfile.mkdtemp()), progress=False)
    for _ in range(10):  # warm-up: neighbor lists and plans cached
        trainer.step()
    t0 = time.perf_counter()
    for _ in range(20):
        trainer.step()
    step = (time.perf_counter() - t0) / 20
    atoms = emt_alloy_frames(SETS[args.n], 1, repeat=4, seed=99)[0].to_atoms()
    atoms.calc = NNPotCalculator(model, device="cpu")
    atoms.get_forces()
    t0 = time.perf_counter()
    for k in range(5):
        atoms.positions += 1e-3  # a new structure each time (the list is kept, the energy is not)
        atoms.get_forces()
    per_atom = (time.perf_counter() - t0) / 5 / len(atoms) * 1e6
    return {"elements": args.n, "descriptor": args.descriptor, "force_rmse": metrics["force_rmse"],
            "energy_rmse_per_atom": metrics["energy_rmse_per_atom"], "train_step_s": step,
            "energy_forces_us_per_atom": per_atom, "atoms": len(atoms), "sel": model.sel,
            "valid_energy_swing": valid_energy_swing(out / "valid.jsonl"),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "label_force_std": float(np.std(np.concatenate([f.forces for f in valid])))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="10m")
    p.add_argument("--frames", type=int, default=300, help="frames per alloy set (32 atoms each)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--elements", type=int, nargs="+", default=[2, 4, 7], choices=sorted(SETS))
    p.add_argument("--descriptors", nargs="+", default=["se_e2_a", "e3nn"])
    p.add_argument("--jobs", type=int, default=1, help="pairs trained at once, each in its own process")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every training run")
    p.add_argument("--tag", default="", help="suffix of the result file")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--descriptor", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one_run(args)))
        return
    from nnpot.data import split, write_h5
    from nnpot.data.emt_alloys import emt_alloy_frames

    work = Path(tempfile.mkdtemp(prefix="bench_elements_"))
    for n in args.elements:
        write_h5(emt_alloy_frames(SETS[n], args.frames, seed=n), work / f"alloy{n}.h5")
        split(work / f"alloy{n}.h5", [0.8, 0.2], [work / f"alloy{n}.train.h5", work / f"alloy{n}.valid.h5"], seed=0)

    def pair(n: int, desc: str) -> dict:
        cmd = [sys.executable, __file__, "--one", "--n", str(n), "--descriptor", desc, "--work", str(work),
               "--budget", args.budget, "--threads", str(args.threads), *(x for s in args.sets for x in ("--set", s))]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{n} elements {desc:8s} force {r['force_rmse'] * 1e3:7.1f} meV/A  energy "
              f"{r['energy_rmse_per_atom'] * 1e3:6.2f} meV/atom  step {r['train_step_s'] * 1e3:6.1f} ms  "
              f"E+F {r['energy_forces_us_per_atom']:6.1f} us/atom  {r['peak_rss_mib']:6.0f} MiB  "
              f"{r['parameters']:,} parameters", flush=True)
        return r

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda nd: pair(*nd), [(n, d) for n in args.elements for d in args.descriptors]))
    out = ROOT / "benchmarks" / "results" / f"elements_{args.budget}{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps({"budget": args.budget, "frames": args.frames, "threads": args.threads,
                               "jobs": args.jobs, "sets": args.sets,
                               "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
