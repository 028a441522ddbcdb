"""What driving an nnpot model from i-PI costs, side by side in one run: one-bead NVE of water
(192 and 1,536 atoms, 0.05 fs: the weights are random, and a short step keeps the box intact) through i-PI and `nnpot ipi` (a unix socket, ASE's client, the
calculator) against nnpot's own MD driver and ASE's VelocityVerlet with the calculator, same
model (the default se_e2_a water architecture, random weights, statistics from the bundled
water), same threads. Also 8-bead PIMD at 192 atoms through i-PI.

    python benchmarks/bench_ipi.py --sizes 192 1536 --threads 2

Prints steps/s (force evaluations per second for PIMD) and the overhead of the socket route in
us per atom-step; writes ``benchmarks/results/ipi_cpu.json``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
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

from nnpot import NNPotCalculator, save_model  # noqa: E402
from nnpot.md import VelocityVerlet  # noqa: E402

BIN = Path(sys.executable).parent
INPUT = """<simulation verbosity='low'>
  <output prefix='sim'> <properties stride='1' filename='out'> [ step, potential{{electronvolt}} ] </properties> </output>
  <total_steps> {steps} </total_steps>
  <ffsocket name='nnpot' mode='unix' pbc='false'> <address> {address} </address> </ffsocket>
  <system>
    <initialize nbeads='{beads}'> <file mode='ase'> init.xyz </file>
      <velocities mode='thermal' units='kelvin'> 300 </velocities> </initialize>
    <forces> <force forcefield='nnpot'> </force> </forces>
    <motion mode='dynamics'> <dynamics mode='{mode}'> <timestep units='femtosecond'> 0.05 </timestep> {thermostat}
    </dynamics> </motion>
    <ensemble> <temperature units='kelvin'> 300 </temperature> </ensemble>
  </system>
</simulation>
"""


def ipi_steps_per_s(model: Path, atoms, steps: int, beads: int, threads: int, driver: str = "nnpot") -> float:
    """Steps per second of an i-PI run (wall time of the whole run after the client connects).
    ``driver``: ``nnpot`` (``nnpot ipi`` on an .nnp file: ASE's socket client and nnpot's
    calculator) or ``metatomic`` (i-PI's own Python driver on a metatomic export)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        atoms.write(tmp / "init.xyz", format="extxyz")
        address = f"nnpot-bench-{os.getpid()}-{beads}-{len(atoms)}"
        (tmp / "input.xml").write_text(INPUT.format(
            steps=steps, address=address, beads=beads, mode="nvt" if beads > 1 else "nve",
            thermostat="<thermostat mode='pile_l'> <tau units='femtosecond'> 100 </tau> </thermostat>" if beads > 1
            else ""))
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        server = subprocess.Popen([str(BIN / "i-pi"), "input.xml"], cwd=tmp, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(3)  # i-PI's start-up, not part of the run
        t = time.perf_counter()
        if driver == "nnpot":
            client = [str(BIN / "nnpot"), "ipi", str(model), str(tmp / "init.xyz"), "--unix", address, "--device",
                      "cpu", "-q"]
        else:
            client = [str(BIN / "i-pi-py_driver"), "-u", "-a", address, "-m", "metatomic", "-o",
                      f"template={tmp / 'init.xyz'},model={model},device=cpu"]
        subprocess.run(client, check=True, env=env, timeout=3600, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - t
        server.wait(timeout=60)
        return steps / elapsed


def own_steps_per_s(model, atoms, steps: int) -> tuple[float, float]:
    """nnpot's driver and ASE's VelocityVerlet with the calculator, steps per second."""
    a = atoms.copy()
    dyn = VelocityVerlet(a, 0.05 * units.fs, model=model)
    dyn.run(2)
    t = time.perf_counter()
    dyn.run(steps)
    driver = steps / (time.perf_counter() - t)
    b = atoms.copy()
    b.calc = NNPotCalculator(model, device="cpu")
    ase_dyn = AseVelocityVerlet(b, 0.05 * units.fs)
    ase_dyn.run(2)
    t = time.perf_counter()
    ase_dyn.run(steps)
    return driver, steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[192, 1536])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base, model = water_model(sel=(48, 96))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(model, Path(tmp) / "water.nnp")
        print(f"{'atoms':>6s} {'driver':>8s} {'ASE+calc':>9s} {'i-PI':>8s} {'i-PI/ASE':>9s} {'overhead us/atom-step':>22s}")
        for n in args.sizes:
            atoms = base.repeat(replicate_for(n))
            atoms.calc = None
            steps = max(5, int(20000 / n))
            driver, ase_rate = own_steps_per_s(model, atoms, steps)
            ipi = ipi_steps_per_s(path, atoms, steps, 1, args.threads)
            overhead = 1e6 * (1 / ipi - 1 / ase_rate) / n
            rows.append({"atoms": n, "steps": steps, "driver_steps_per_s": driver, "ase_steps_per_s": ase_rate,
                         "ipi_steps_per_s": ipi, "ipi_over_ase": ipi / ase_rate, "overhead_us_per_atom_step": overhead})
            print(f"{n:6d} {driver:8.2f} {ase_rate:9.2f} {ipi:8.2f} {ipi / ase_rate:9.2f} {overhead:22.2f}")
        atoms = base.copy()
        atoms.calc = None
        pimd = ipi_steps_per_s(path, atoms, 20, 8, args.threads)
        rows.append({"atoms": len(atoms), "beads": 8, "ipi_pimd_steps_per_s": pimd, "evaluations_per_s": 8 * pimd})
        print(f"PIMD, 8 beads, {len(atoms)} atoms: {pimd:.2f} steps/s ({8 * pimd:.1f} evaluations/s)")
    write_result("ipi_cpu", rows, threads=args.threads)


if __name__ == "__main__":
    main()
