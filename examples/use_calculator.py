"""Use a trained nnpot model as an ASE calculator: energy, forces, stress, a relaxation."""

import sys

import ase.io
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from nnpot import NNPotCalculator
from nnpot.bundled import bundled_dataset

model = sys.argv[1] if len(sys.argv) > 1 else "runs/water/model.nnp"
atoms = ase.io.read(bundled_dataset("water"), index=0, format="nnpot-h5")
atoms.calc = NNPotCalculator(model)  # device="auto": CUDA when available
print("energy (eV):", atoms.get_potential_energy())
print("max |force| (eV/A):", abs(atoms.get_forces()).max())
print("stress (eV/A^3, Voigt):", atoms.get_stress())
BFGS(FrechetCellFilter(atoms), logfile="-").run(fmax=0.5, steps=5)
