"""GPU-resident MD: the same lines as ASE's VelocityVerlet, with the state kept on the device."""

import sys

import numpy as np
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

from nnpot import NNPotCalculator
from nnpot.data import H5Dataset
from nnpot.md import VelocityVerlet

model = sys.argv[1] if len(sys.argv) > 1 else "runs/water/model.nnp"
atoms = H5Dataset("examples/data/water.h5")[0].to_atoms().repeat((2, 2, 2))
MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
Stationary(atoms)
atoms.calc = NNPotCalculator(model, device="auto", dtype="float32")
dyn = VelocityVerlet(atoms, 0.5 * units.fs, trajectory="gpu_md.traj", logfile="-", loginterval=50)
dyn.run(500)
