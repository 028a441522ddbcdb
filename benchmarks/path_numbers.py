"""The numbers of one end-to-end path, for checking that a refactor changed none of them:
`nnpot train` on the bundled water data (30 steps, float64, one thread) -> model file ->
NNPotCalculator energy, forces and stress -> 20 VelocityVerlet and 20 Langevin steps. Writes the
validation log (wall times dropped), the results and the final positions to JSON; with
``--compare OTHER.json`` reports every entry that differs (bit for bit).

    python benchmarks/path_numbers.py OUT.json                       # in each checkout's install
    python benchmarks/path_numbers.py OUT.json --compare BEFORE.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def run() -> dict:
    from ase import units

    from nnpot import NNPotCalculator
    from nnpot.bundled import bundled_dataset
    from nnpot.cli import main as cli
    from nnpot.data import H5Dataset
    from nnpot.md import Langevin, VelocityVerlet

    water = str(bundled_dataset("water"))
    run_dir = Path(tempfile.mkdtemp()) / "run"
    assert cli(["train", "--data", water, "--out", str(run_dir), "-q", "--set", "num_steps=30", "--set", "threads=1",
                "--set", "stat_frames=4", "--set", "valid_frames=4", "--set", "valid_freq=10",
                "--set", "model.descriptor.neuron=[8,16]", "--set", "model.descriptor.axis_neuron=4",
                "--set", "model.fitting.neuron=[16,16]"]) == 0
    valid = [{k: v for k, v in json.loads(line).items() if k != "time"}
             for line in (run_dir / "valid.jsonl").read_text().splitlines()]
    out: dict = {"validation_log": valid}
    ds = H5Dataset(water)
    atoms = ds[0].to_atoms()
    atoms.calc = NNPotCalculator(str(run_dir / "model.nnp"), device="cpu")
    out.update(energy=atoms.get_potential_energy(), forces=atoms.get_forces().tolist(),
               stress=atoms.get_stress().tolist())
    VelocityVerlet(atoms, 0.5 * units.fs).run(20)
    out["verlet_positions"] = atoms.positions.tolist()
    other = ds[1].to_atoms()
    other.calc = NNPotCalculator(str(run_dir / "model.nnp"), device="cpu")
    Langevin(other, 0.5 * units.fs, temperature_K=300, friction=0.01, seed=3).run(20)
    out["langevin_positions"] = other.positions.tolist()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json")
    p.add_argument("--compare", help="an earlier result of this script")
    args = p.parse_args()
    out = run()
    Path(args.json).write_text(json.dumps(out))
    print(f"wrote {args.json}")
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        differ = [k for k in sorted(set(out) | set(before)) if out.get(k) != before.get(k)]
        print("identical: " + ", ".join(sorted(out)) if not differ else f"DIFFERENT: {', '.join(differ)}")


if __name__ == "__main__":
    main()
