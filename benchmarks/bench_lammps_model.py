"""What a model costs inside LAMMPS: ``examples/lammps/in.water`` (1,536 water atoms, NVT then
NPT) through ``nnpot lammps`` on 1 and 2 MPI ranks, one thread each, timed by LAMMPS's own
``Loop time`` (setup excluded). With no ``--model``, the ace descriptor (64 channels, rcut 5 A)
strictly local and with one message-passing layer (whose ghost shell is 10 A: the cost of the
extra ghost work), and se_e2_a's default water model are built with random weights and
statistics from the bundled water (speed does not depend on the weights).

    python benchmarks/bench_lammps_model.py --steps 20

Prints us/atom-step per model and rank count; writes ``benchmarks/results/lammps_models.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nnpot.bundled import bundled_dataset
from nnpot.data import H5Dataset
from nnpot.potentials import EnergyModel, ModelConfig, apply_stats, save_model
from nnpot.potentials.descriptors.ace import AceConfig

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lammps"
BIN = Path(sys.executable).parent
_LOOP = re.compile(r"Loop time of ([\d.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms")
_ATOMS = re.compile(r"\((\d+) local and (\d+) ghost atoms, (\d+) of them evaluated")


def random_models(work: Path) -> dict[str, Path]:
    """ace (local and one message layer) and se_e2_a water models with random weights and fitted
    statistics."""
    water = H5Dataset(bundled_dataset("water"))
    frames = [water[i] for i in range(0, len(water), 40)]
    ace = ModelConfig(type_map=["O", "H"])
    ace.descriptor = AceConfig(rcut=5.0, sel=[40, 80], channels=64)
    ace.fitting.neuron = [64, 64]
    ace_mp1 = copy.deepcopy(ace)
    ace_mp1.descriptor.message_layers = 1
    se = ModelConfig(type_map=["O", "H"])
    se.descriptor.sel = [48, 96]
    paths = {}
    for name, cfg in (("ace", ace), ("ace_mp1", ace_mp1), ("se_e2_a", se)):
        model = EnergyModel(cfg)
        apply_stats(model, frames, np.array([f.energy for f in frames]))
        paths[name] = save_model(model, work / f"{name}.nnp")
    return paths


def rank0_atoms(stderr: str) -> dict:
    """Rank 0's mean local and ghost atoms, from ``nnpot lammps``'s summary line."""
    m = _ATOMS.search(stderr)
    return {"local": int(m.group(1)), "ghosts": int(m.group(2)), "senders": int(m.group(3))} if m else {}


def loop_time(log: Path) -> dict:
    """Seconds per atom-step over every ``Loop time`` line of a LAMMPS log."""
    seconds = steps = 0.0
    atoms = 0
    for m in _LOOP.finditer(log.read_text()):
        seconds += float(m.group(1))
        steps += int(m.group(3))
        atoms = int(m.group(4))
    return {"loop_s": seconds, "steps": int(steps), "atoms": atoms, "us_per_atom_step": 1e6 * seconds / (steps * atoms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="*", default=[], help="model files (default: random ace and se_e2_a)")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_lammps_model"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    models = {Path(m).stem: Path(m).resolve() for m in args.model} or random_models(work)
    data = EXAMPLE / "water_1536.data"
    if not data.exists():
        subprocess.run([sys.executable, "make_water_data.py"], cwd=EXAMPLE, check=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows = []
    print(f"{'model':10s} {'ranks':>5s} {'us/atom-step':>13s} {'local':>8s} {'ghosts':>8s} {'senders':>8s}  (rank 0, mean)")
    for name, path in models.items():
        for ranks in args.ranks:
            run = work / f"{name}_{ranks}"
            run.mkdir(exist_ok=True)
            for f in ("in.water", "water_1536.data"):
                target = run / f
                if not target.exists():
                    target.symlink_to(EXAMPLE / f)
            cmd = ([str(BIN / "mpirun"), "-np", str(ranks)] if ranks > 1 else []) + [
                str(BIN / "nnpot"), "lammps", "in.water", "--var", "model", str(path), "--var", "steps",
                str(args.steps), "--var", "dt", "0.00005", "--force"]  # random weights: a short step
            proc = subprocess.run(cmd, cwd=run, env=env, capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                print(f"{name:10s} {ranks:5d} failed: {proc.stderr.strip()[-300:]}")
                continue
            row = {"model": name, "ranks": ranks, **loop_time(run / "log.lammps"), **rank0_atoms(proc.stderr)}
            rows.append(row)
            print(f"{name:10s} {ranks:5d} {row['us_per_atom_step']:13.1f} {row.get('local', 0):8.0f} "
                  f"{row.get('ghosts', 0):8.0f} {row.get('senders', 0):8.0f}")
    out = ROOT / "benchmarks" / "results" / "lammps_models.json"
    out.write_text(json.dumps({"benchmark": "lammps_models", "date": time.strftime("%Y-%m-%d"),
                               "machine": f"{os.cpu_count()} CPU cores, one thread per rank", "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
