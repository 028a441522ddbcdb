"""nnpot.md: molecular dynamics with the state on the device and ASE's driver interface.

:mod:`~nnpot.md.state` holds the batch-first tensors (one or many systems, thermostat variables
included), :mod:`~nnpot.md.integrators` the step functions,
:mod:`~nnpot.md.driver` the ASE-style classes and the force providers they call (an nnpot model
with a reused neighbor list, or any ASE calculator), :mod:`~nnpot.md.graphs` the CUDA-graph replay
of whole steps and :mod:`~nnpot.md.replicas` the drivers on many replicas in one batch.
"""

from nnpot.md.driver import (NPT, ASEForces, Bussi, Langevin, MDError, ModelForces, MolecularDynamics, NoseHoover,
                             VelocityVerlet)
from nnpot.md.integrators import langevin_baoab_step, velocity_verlet_step
from nnpot.md.replicas import Replicas
from nnpot.md.state import MDState, snapshot, state_from_atoms, write_back

__all__ = [
    "MolecularDynamics",
    "VelocityVerlet",
    "Langevin",
    "Bussi",
    "NoseHoover",
    "NPT",
    "MDError",
    "Replicas",
    "ModelForces",
    "ASEForces",
    "MDState",
    "state_from_atoms",
    "write_back",
    "snapshot",
    "velocity_verlet_step",
    "langevin_baoab_step",
]
