#!/usr/bin/env bash
# An installed nnpot (a regular, non-editable `pip install .`) works without the source tree:
# from a clean folder, run one approximation study and the calculator on the bundled data.
set -euxo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q torch==2.13.0
"$work/venv/bin/pip" install -q "$root"
cd "$work"
"$work/venv/bin/nnpot" approx integrator-order --quick --json integrator.json
"$work/venv/bin/python" - <<'PY'
from nnpot import NNPotCalculator
from nnpot.bundled import bundled_dataset
from nnpot.data import H5Dataset
from nnpot.potentials import EnergyModel, save_model

save_model(EnergyModel(), "water.nnp")  # DeePMD-kit's water architecture, random weights
atoms = H5Dataset(bundled_dataset("water"))[0].to_atoms()
atoms.calc = NNPotCalculator("water.nnp", device="cpu")
print("water:", atoms.get_potential_energy(), "eV,", atoms.get_forces().shape, "forces")
print("molecule set:", len(H5Dataset(bundled_dataset("molecule_C3H3O4"))), "frames")
import nnpot.explore  # noqa: F401  (the active-learning package is installed too)
import nnpot.training  # noqa: F401  (training and the descriptors are packages of their own)
from nnpot.potentials import available_descriptors
assert {"se_e2_a", "e3nn"} <= set(available_descriptors()), available_descriptors()
from nnpot.lammps.script import plan_input  # noqa: F401  (the LAMMPS coupling, without its extra)
PY
"$work/venv/bin/nnpot" convert water.nnp -o water.dp   # nnpot.interop: DeePMD-kit's format
"$work/venv/bin/nnpot" convert water.dp -o back.nnp
"$work/venv/bin/nnpot" lammps --help > /dev/null
