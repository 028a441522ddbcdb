"""MD speed of nnpot's ace model against MACE's ASE calculator, side by side in one run.

Both run velocity-Verlet MD (0.05 fs: random weights, a short step keeps the box intact) of water boxes replicated from the bundled data (192 and 1,536
atoms), float64 and float32, on the same threads: nnpot through its own driver
(``nnpot.md.VelocityVerlet``: the model, the neighbor list with a skin and the integrator on
the device), MACE (mace-torch 0.3.16 in its own venv, ``--mace-python``) through
``MACECalculator`` and ASE's ``VelocityVerlet``, which is how MACE users run MD in Python.
Weights are random (speed does not depend on them); MACE is its issue-recipe size: 64
channels, L=1 features, max_ell 3, correlation 3, two layers, r_max 5.

    python benchmarks/bench_md_vs_mace.py --sizes 192 1536 --threads 2

Prints steps/s and the ratio, writes ``benchmarks/results/md_vs_mace_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import units

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_eval import replicate_for, write_result  # noqa: E402

from nnpot.bundled import bundled_dataset  # noqa: E402
from nnpot.data import H5Dataset  # noqa: E402
from nnpot.md import VelocityVerlet  # noqa: E402
from nnpot.md.state import thermalize  # noqa: E402
from nnpot.potentials import EnergyModel, ModelConfig, apply_stats  # noqa: E402
from nnpot.potentials.descriptors.ace import AceConfig  # noqa: E402

MACE_MD = r'''
import json, sys, time
import numpy as np, torch
from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet
from e3nn import o3
from mace import modules
from mace.calculators import MACECalculator

xyz, steps, dtype, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.set_num_threads(threads)
torch.set_default_dtype(getattr(torch, dtype))
torch.manual_seed(0)
model = modules.MACE(r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
    interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
    interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
    num_interactions=2, num_elements=2, hidden_irreps=o3.Irreps("64x0e + 64x1o"), MLP_irreps=o3.Irreps("16x0e"),
    atomic_energies=np.zeros(2), avg_num_neighbors=30.0, atomic_numbers=[1, 8], correlation=3,
    gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64])
atoms = read(xyz)
atoms.calc = MACECalculator(models=model.to(getattr(torch, dtype)), device="cpu", default_dtype=dtype)
dyn = VelocityVerlet(atoms, 0.05 * units.fs)
dyn.run(2)
t = time.perf_counter()
dyn.run(steps)
print(json.dumps({"steps_per_s": steps / (time.perf_counter() - t)}))
'''


def ace_model(dtype: torch.dtype, channels: int, message_layers: int = 0, lmax: int = 2,
              hidden_lmax: int = 1, message_lmax: int | None = None) -> EnergyModel:
    cfg = ModelConfig(type_map=["O", "H"], dtype="float64")
    cfg.descriptor = AceConfig(rcut=5.0, sel=[40, 80], channels=channels, message_layers=message_layers, lmax=lmax,
                               hidden_lmax=hidden_lmax, message_lmax=message_lmax)
    cfg.fitting.neuron = [64, 64]
    model = EnergyModel(cfg)
    water = H5Dataset(bundled_dataset("water"))
    frames = [water[i] for i in range(0, len(water), 40)]
    apply_stats(model, frames, np.array([f.energy for f in frames]))
    return model.to(dtype).eval()


def nnpot_steps_per_s(model: EnergyModel, atoms, steps: int) -> float:
    atoms = atoms.copy()
    thermalize(atoms, 300, rng=0)
    dyn = VelocityVerlet(atoms, 0.05 * units.fs, model=model)
    dyn.run(2)
    t = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - t)


def mace_steps_per_s(python: str, atoms, steps: int, dtype: str, threads: int) -> float | str:
    with tempfile.TemporaryDirectory() as tmp:
        xyz = Path(tmp) / "box.xyz"
        a = atoms.copy()
        thermalize(a, 300, rng=0)
        ase.io.write(xyz, a, format="extxyz")
        env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", OMP_NUM_THREADS=str(threads))
        proc = subprocess.run([python, "-c", MACE_MD, str(xyz), str(steps), dtype, str(threads)], capture_output=True,
                              text=True, env=env, timeout=3600)
        if proc.returncode != 0:
            return f"failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
        return json.loads(proc.stdout.strip().splitlines()[-1])["steps_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[192, 1536])
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels", type=int, nargs="+", default=[32, 64],
                    help="ace sizes (l = 2; the first also with a message layer); the ace64_l3 models of the accuracy "
                         "table always run")
    ap.add_argument("--only", nargs="+", default=None, help="run only these nnpot rows (MACE always runs)")
    ap.add_argument("--tag", default="", help="suffix of the result file (md_vs_mace_cpu<_tag>.json)")
    ap.add_argument("--mace-python", default="/work/peers/mace/bin/python")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    water = H5Dataset(bundled_dataset("water"))
    rows = []
    print(f"{'atoms':>6s} {'dtype':8s} {'model':14s} {'steps/s':>9s} {'x MACE':>7s}")
    for n in args.sizes:
        atoms = water[0].to_atoms().repeat(replicate_for(n))
        atoms.calc = None
        steps = max(3, int(6000 / len(atoms)))
        for dt in args.dtypes:
            dtype = getattr(torch, dt)
            mace = mace_steps_per_s(args.mace_python, atoms, steps, dt, args.threads)
            row = {"atoms": len(atoms), "dtype": dt, "mace_steps_per_s": mace}
            # (name, ace_model's arguments after dtype, steps); a model is built only when its row runs
            runs = [(f"ace{c}", (c,), {}, steps * 4) for c in args.channels]
            runs.append((f"ace{args.channels[0]}_mp1", (args.channels[0], 1), {}, steps * 2))
            # the models of the accuracy table (bench_accuracy.py's ace64_l3, ace64_l3_mp1 and ace64_l3_mp1s)
            runs.append(("ace64_l3", (64, 0, 3), {}, steps * 2))
            runs.append(("ace64_l3_mp1", (64, 1, 3), {}, steps))
            runs.append(("ace64_l3_mp1s", (64, 1, 3), {"hidden_lmax": 0}, steps))  # scalar messages
            # L <= 1 messages with harmonics capped at l = 2 and l = 1 (bench_accuracy.py's ace64_l3_mp1m2_f32, ...m1)
            runs.append(("ace64_l3_mp1m2", (64, 1, 3), {"message_lmax": 2}, steps))
            runs.append(("ace64_l3_mp1m1", (64, 1, 3), {"message_lmax": 1}, steps))
            print(f"{len(atoms):6d} {dt:8s} {'MACE':14s} " + (f"{mace:9.2f}" if isinstance(mace, float) else mace))
            for name, pos, kw, k in runs:
                if args.only is not None and name not in args.only:
                    continue
                rate = nnpot_steps_per_s(ace_model(dtype, *pos, **kw), atoms, k)
                ratio = rate / mace if isinstance(mace, float) else float("nan")
                row[f"{name}_steps_per_s"], row[f"{name}_over_mace"] = rate, ratio
                print(f"{len(atoms):6d} {dt:8s} {name:14s} {rate:9.2f} {ratio:7.2f}")
            rows.append(row)
    write_result("md_vs_mace_cpu" + (f"_{args.tag}" if args.tag else ""), rows, threads=args.threads)


if __name__ == "__main__":
    main()
