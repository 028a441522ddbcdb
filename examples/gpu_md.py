"""GPU-resident MD: the same lines as ASE's VelocityVerlet, with the state kept on the device,
then 64 independent replicas of the small box integrated together in one batch.

    python examples/gpu_md.py runs/water/model.nnp [steps]

On a CUDA device the driver replays blocks of 10 steps from CUDA graphs and the model's embedding
nets are tabulated (fused Triton kernels); on a CPU the same code runs eagerly with the exact nets.
"""

import sys
import time

import numpy as np
import torch
from ase import units

from nnpot import NNPotCalculator
from nnpot.bundled import bundled_dataset
from nnpot.data import H5Dataset
from nnpot.md import Replicas, VelocityVerlet
from nnpot.md.state import thermalize

model = sys.argv[1] if len(sys.argv) > 1 else "runs/water/model.nnp"
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 500
frame = H5Dataset(bundled_dataset("water"))[0].to_atoms()
frame.calc = None

atoms = frame.repeat((2, 2, 2))  # 1,536 atoms
thermalize(atoms, 300, rng=0)
gpu = torch.cuda.is_available()
atoms.calc = NNPotCalculator(model, device="auto", dtype="float32", tabulate=gpu)
dyn = VelocityVerlet(atoms, 0.5 * units.fs, trajectory="gpu_md.traj", logfile="-", loginterval=50)
t0 = time.perf_counter()
dyn.run(steps)
print(f"{steps / (time.perf_counter() - t0):.1f} steps/s on {atoms.calc.device}, {dyn.force_fn.evaluator.nlist.n_builds} neighbor builds")

images = []
for k in range(64):
    a = frame.copy()
    thermalize(a, 300, rng=k)
    images.append(a)
reps = Replicas(images, model, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, dtype="float32",
                tabulate=gpu)
t0 = time.perf_counter()
reps.run(steps // 2)
rate = steps // 2 * len(images) / (time.perf_counter() - t0)
print(f"64 replicas: {rate:.0f} replica-steps/s; kinetic energies (eV): {np.round(reps.kinetic_energies()[:4], 3)} ...")
