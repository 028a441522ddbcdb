"""Every engine route to an nnpot model, side by side in one run: one-bead NVE of water (192 and
1,536 atoms, 0.05 fs: random weights, and a short step keeps the box intact), same model, same
threads.

Routes:
* ``driver``: nnpot's own velocity-Verlet driver;
* ``ase``: ASE's VelocityVerlet with ``NNPotCalculator``;
* ``ase_metatomic``: ASE's VelocityVerlet with metatomic-ase's calculator on the metatomic export;
* ``torchsim``: torch-sim's batched NVE (``nve_step``) with metatomic-torchsim on the export, one
  system, and ``torchsim_x4``: four copies in one batch (steps/s of the batch);
* ``ipi_socket``: i-PI with ``nnpot ipi`` (ASE's socket client, the calculator);
* ``ipi_metatomic``: i-PI with its own Python driver on the export.

torch-sim 0.6 needs Python >= 3.12, so the whole run goes in a venv that has it (with nnpot
installed there); routes whose package is missing are left out of the table.

    python benchmarks/bench_engines.py --sizes 192 1536 --threads 2 [--descriptor se_e2_a]

Prints steps/s, the ratio to ``ase`` and each route's overhead over ``ase`` in us per atom-step;
writes ``benchmarks/results/engines_cpu_<descriptor>.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch
from ase import units
from ase.md.verlet import VelocityVerlet as AseVelocityVerlet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_eval import replicate_for, water_model, write_result  # noqa: E402
from bench_ipi import ipi_steps_per_s, own_steps_per_s  # noqa: E402

from nnpot import save_model  # noqa: E402
from nnpot.interop.metatomic import export_metatomic  # noqa: E402

DT = 0.05 * units.fs


def ase_metatomic_steps_per_s(path: Path, atoms, steps: int) -> float:
    from metatomic_ase import MetatomicCalculator  # lazy: an optional route

    a = atoms.copy()
    a.calc = MetatomicCalculator(str(path), device="cpu", uncertainty_threshold=None)
    dyn = AseVelocityVerlet(a, DT)
    dyn.run(2)
    t = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - t)


def torchsim_steps_per_s(path: Path, atoms, steps: int, copies: int = 1) -> float:
    import torch_sim as ts  # lazy: an optional route (Python >= 3.12)
    from metatomic_torchsim import MetatomicModel  # lazy: as above

    model = MetatomicModel(str(path), device="cpu", uncertainty_threshold=None)
    state = ts.io.atoms_to_state([atoms] * copies, device=torch.device("cpu"), dtype=torch.float64)
    state.rng = 0
    state = ts.nve_init(state, model, kT=torch.tensor(300 * units.kB, dtype=torch.float64))
    dt = torch.tensor(DT, dtype=torch.float64)
    for _ in range(2):
        state = ts.nve_step(state, model, dt=dt)
    t = time.perf_counter()
    for _ in range(steps):
        state = ts.nve_step(state, model, dt=dt)
    return steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[192, 1536])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--descriptor", default="se_e2_a", help="a model variant of bench_eval.MODEL_VARIANTS")
    ap.add_argument("--steps", type=int, default=0, help="MD steps per route (0: 20,000 atom-steps)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    have = {name: importlib.util.find_spec(mod) is not None for name, mod in
            (("metatomic_ase", "metatomic_ase"), ("torchsim", "metatomic_torchsim"), ("ipi", "ipi"))}
    base, model = water_model(sel=(48, 96), descriptor=args.descriptor)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        nnp = save_model(model, Path(tmp) / "water.nnp")
        pt = Path(tmp) / "water.pt"
        export_metatomic(model, pt)
        routes = ["driver", "ase", "ase_metatomic", "torchsim", "torchsim_x4", "ipi_socket", "ipi_metatomic"]
        print(f"{args.descriptor}, {args.threads} threads; steps/s (ratio to ase; overhead over ase, us/atom-step)")
        for n in args.sizes:
            atoms = base.repeat(replicate_for(n))
            atoms.calc = None
            steps = args.steps or max(5, int(20000 / n))
            rate = {}
            rate["driver"], rate["ase"] = own_steps_per_s(model, atoms, steps)
            if have["metatomic_ase"]:
                rate["ase_metatomic"] = ase_metatomic_steps_per_s(pt, atoms, steps)
            if have["torchsim"]:
                rate["torchsim"] = torchsim_steps_per_s(pt, atoms, steps)
                rate["torchsim_x4"] = torchsim_steps_per_s(pt, atoms, max(3, steps // 4), copies=4)
            if have["ipi"]:
                rate["ipi_socket"] = ipi_steps_per_s(nnp, atoms, steps, 1, args.threads)
                rate["ipi_metatomic"] = ipi_steps_per_s(pt, atoms, steps, 1, args.threads, driver="metatomic")
            row = {"atoms": n, "steps": steps, "steps_per_s": rate}
            copies = {k: 4 if k == "torchsim_x4" else 1 for k in rate}  # systems per step
            row["overhead_us_per_atom_step"] = {
                k: 1e6 * (1 / (copies[k] * v) - 1 / rate["ase"]) / n for k, v in rate.items()}
            rows.append(row)
            print(f"{n} atoms, {steps} steps")
            for k in routes:
                if k in rate:
                    print(f"  {k:14s} {rate[k]:8.3f} steps/s  ({copies[k] * rate[k] / rate['ase']:5.2f}x ase; "
                          f"{row['overhead_us_per_atom_step'][k]:+8.1f} us/atom-step)")
    write_result(f"engines_cpu_{args.descriptor}", rows, threads=args.threads, python=sys.version.split()[0],
                 torch=torch.__version__, note="torchsim_x4: steps/s of a batch of 4 copies; its ratio and overhead "
                 "count the atom-steps of all 4")


if __name__ == "__main__":
    main()
