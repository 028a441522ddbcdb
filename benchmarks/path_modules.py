"""Which nnpot modules one end-to-end path runs through: HDF5 file -> `nnpot train` (2 steps) ->
model file -> NNPotCalculator -> one VelocityVerlet step, in one process. Counts the modules in
which some function or method ran (import-time code excluded: module bodies and class bodies,
which run when a module is merely imported) and prints them; run it in each checkout's own
install to compare before and after.

    python benchmarks/path_modules.py [ROOT]     # ROOT: the checkout (default: this one)
"""

import inspect
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]) + os.sep
ran = set()


def tracer(frame, event, arg):
    code = frame.f_code
    if event == "call" and code.co_flags & inspect.CO_OPTIMIZED and code.co_filename.startswith(ROOT) \
            and "/.venv/" not in code.co_filename and not code.co_filename.endswith("path_modules.py"):
        ran.add(os.path.relpath(code.co_filename, ROOT))


def main() -> None:
    water = os.path.join(ROOT, "nnpot", "bundled_data", "water.h5")
    sys.setprofile(tracer)
    from ase import units

    from nnpot import NNPotCalculator
    from nnpot.cli import main as cli
    from nnpot.data import H5Dataset
    from nnpot.md import VelocityVerlet

    tmp = Path(tempfile.mkdtemp())
    assert cli(["train", "--data", water, "--out", str(tmp / "run"), "-q", "--set", "num_steps=2",
                "--set", "stat_frames=2", "--set", "valid_frames=1", "--set", "valid_freq=1",
                "--set", "model.descriptor.neuron=[4,8]", "--set", "model.descriptor.axis_neuron=2",
                "--set", "model.fitting.neuron=[8]"]) == 0
    atoms = H5Dataset(water)[0].to_atoms()
    atoms.calc = NNPotCalculator(str(tmp / "run" / "model.nnp"))
    atoms.get_potential_energy()
    VelocityVerlet(atoms, 0.5 * units.fs).run(1)
    sys.setprofile(None)
    modules = sorted(m[:-3] for m in ran)
    print(json.dumps({"modules_run": len(modules), "modules": modules}, indent=1))


if __name__ == "__main__":
    main()
