"""MD throughput: nnpot's driver against ASE's VelocityVerlet with NNPotCalculator (same model) and
DeePMD-kit 3.2 + ASE (same architecture), side by side in one run. Prints a table and writes JSON.

    python benchmarks/bench_md.py --device cpu --sizes 192 1536 --dtypes float64 float32 --steps 20

DeePMD-kit's frozen model comes from benchmarks/bench_vs_deepmd.py (runs/bench_dp/model.pth).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet as AseVelocityVerlet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_eval import replicate_for  # noqa: E402

DP_MD = r'''
import json, sys, time
import numpy as np
from ase.io import read
from ase import units
from ase.md.verlet import VelocityVerlet
from deepmd.calculator import DP
args = json.loads(sys.argv[1])
atoms = read(args["structure"])
atoms.calc = DP(model=args["model"])
dyn = VelocityVerlet(atoms, 0.5 * units.fs)
dyn.run(2)
t0 = time.perf_counter(); dyn.run(args["steps"]); dt = time.perf_counter() - t0
print("JSON" + json.dumps({"steps_per_s": args["steps"] / dt}))
'''


def steps_per_s(dyn, steps: int) -> float:
    dyn.run(2)  # warm-up: first neighbor list, allocator
    t0 = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    from nnpot import NNPotCalculator
    from nnpot.data import H5Dataset
    from nnpot.md import VelocityVerlet
    from nnpot.potentials import EnergyModel, apply_stats

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[192, 1536])
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dp-python", default=str(ROOT / ".peers" / "dp" / "bin" / "python"))
    p.add_argument("--dp-model", default=str(ROOT / "runs" / "bench_dp" / "model.pth"))
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "md.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ds = H5Dataset(ROOT / "examples" / "data" / "water.h5")
    base = ds[0].to_atoms()
    base.calc = None
    model = EnergyModel()
    frames = [ds[i] for i in range(0, 320, 40)]
    apply_stats(model, frames, np.array([f.energy for f in frames]))
    rows = []
    for n in args.sizes:
        atoms0 = base.repeat(replicate_for(n))
        MaxwellBoltzmannDistribution(atoms0, temperature_K=300, rng=np.random.default_rng(0))
        dp_rate = None
        if Path(args.dp_python).exists() and Path(args.dp_model).exists():
            path = ROOT / "runs" / f"bench_md_{n}.extxyz"
            atoms0.write(path)
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), DP_INTRA_OP_PARALLELISM_THREADS=str(args.threads),
                       DP_INTER_OP_PARALLELISM_THREADS="1")
            proc = subprocess.run([args.dp_python, "-c", DP_MD, json.dumps({"structure": str(path), "model": args.dp_model,
                                   "steps": args.steps})], capture_output=True, text=True, env=env)
            dp_rate = json.loads(proc.stdout.split("JSON", 1)[1])["steps_per_s"] if "JSON" in proc.stdout else None
        for dtype in args.dtypes:
            m = EnergyModel(model.config)
            m.load_state_dict(model.state_dict())
            a = atoms0.copy()
            a.calc = NNPotCalculator(m, device=args.device, dtype=dtype)
            ours = steps_per_s(VelocityVerlet(a, 0.5 * units.fs), args.steps)
            b = atoms0.copy()
            b.calc = NNPotCalculator(m, device=args.device, dtype=dtype)
            ase_rate = steps_per_s(AseVelocityVerlet(b, 0.5 * units.fs), args.steps)
            row = {"atoms": n, "dtype": dtype, "device": args.device, "nnpot_driver_steps_per_s": ours,
                   "ase_vv_nnpot_calc_steps_per_s": ase_rate, "deepmd_ase_float64_steps_per_s": dp_rate,
                   "us_per_atom_step": 1e6 / ours / n}
            row["ratio_vs_deepmd"] = ours / dp_rate if dp_rate else None
            rows.append(row)
            dp_text = f"{dp_rate:8.2f}" if dp_rate else "     n/a"
            print(f"{n:>8} {dtype:>8} {args.device:>5}  nnpot driver {ours:8.2f} steps/s ({row['us_per_atom_step']:7.1f} us/atom-step)"
                  f"  ASE VV + NNPotCalculator {ase_rate:8.2f}  DeePMD-kit + ASE (float64) {dp_text}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"threads": args.threads, "torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
