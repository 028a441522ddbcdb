"""Many independent replicas of a system integrated together, in one batch on one device.

Small systems leave a GPU idle: one water box of 192 atoms is a few hundred tiny kernels per
step. A driver given a list of structures (each with its own cell and neighbor list) runs them
as one batch-first state, so one model call and one integrator update serve all of them; the
trajectories equal those of each replica run alone (tested).

    reps = Replicas([a.copy() for a in starts], "model.nnp", 0.5 * units.fs)
    reps.run(1000)            # reps.images now hold the final positions and momenta
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from nnpot.md.driver import NPT, Langevin, MolecularDynamics, VelocityVerlet
from nnpot.potentials.calculator import prepare_model

__all__ = ["Replicas"]


def Replicas(images: Sequence, model: str | os.PathLike[str] | torch.nn.Module, timestep: float, *,  # noqa: N802
             temperature_K: float | None = None, friction: float | None = None, device: str = "auto",
             dtype: str | None = None, tabulate: bool = False, seed: int | None = None,
             pressure_au: float | None = None, taut: float | None = None, taup: float | None = None,
             compressibility_au: float | None = None, **kwargs) -> MolecularDynamics:
    """NVE (velocity Verlet), with ``temperature_K`` and ``friction`` Langevin (BAOAB), or with
    ``temperature_K`` and ``pressure_au`` isotropic NPT (:class:`~nnpot.md.driver.NPT`) dynamics
    of independent replicas: the usual drivers on a batch of ``images`` (ASE ``Atoms`` with
    momenta; updated by ``run``), with ``potential_energies()`` and ``kinetic_energies()`` per
    replica.

    Args:
        model: a ``.nnp`` path or a loaded :class:`~nnpot.potentials.EnergyModel`.
        timestep: ASE time units.
        temperature_K, friction: Langevin thermostat (friction in 1/(ASE time)), as ASE's.
        pressure_au, taut, taup, compressibility_au: NPT instead (eV/A^3, ASE time, A^3/eV), as
            :class:`~nnpot.md.driver.NPT`; every image must be periodic in all three directions.
        device, dtype, tabulate: as for :class:`~nnpot.NNPotCalculator`.
        kwargs: the drivers' options (``skin``, ``chunk_size``, ``cuda_graphs``, ``graph_block``, ...).
    """
    model = prepare_model(model, device, dtype, tabulate)
    images = list(images)
    if pressure_au is not None:
        if temperature_K is None or None in (taut, taup, compressibility_au):
            raise TypeError("NPT replicas need temperature_K, taut, taup and compressibility_au with pressure_au")
        return NPT(images, timestep, temperature_K, pressure_au, taut, taup, compressibility_au, seed=seed,
                   model=model, **kwargs)
    if temperature_K is None:
        return VelocityVerlet(images, timestep, model=model, **kwargs)
    return Langevin(images, timestep, temperature_K, friction or 0.0, seed=seed, model=model, **kwargs)
