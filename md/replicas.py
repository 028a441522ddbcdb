"""Many independent replicas of a system integrated together, in one batch on one device.

Small systems leave a GPU idle: one water box of 192 atoms is a few hundred tiny kernels per
step. ``Replicas`` concatenates R structures (each with its own cell and neighbor list) into one
batch, so one model call and one integrator update serve all of them; the trajectories are the
same as running each replica alone (tested).

    reps = Replicas([a.copy() for a in starts], "model.nnp", 0.5 * units.fs)
    reps.run(1000)            # reps.images now hold the final positions and momenta
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from ase import units

from nnpot.errors import ConfigError
from nnpot.md.forces import ModelForces
from nnpot.md.integrators import langevin_baoab_step, velocity_verlet_step
from nnpot.md.state import MDState

__all__ = ["Replicas"]


class Replicas:
    """NVE (velocity Verlet) or, with ``temperature_K`` and ``friction``, Langevin (BAOAB)
    dynamics of independent replicas.

    Args:
        images: the starting structures (ASE ``Atoms`` with momenta); updated by :meth:`run`.
        model: a ``.nnp`` path or a loaded :class:`~nnpot.potentials.EnergyModel`.
        timestep: ASE time units.
        temperature_K, friction: Langevin thermostat (friction in 1/(ASE time)), as ASE's.
        device, dtype: as for :class:`~nnpot.NNPotCalculator`.
        cuda_graphs: replay blocks of ``graph_block`` steps from CUDA graphs (default on CUDA).
        tabulate: tabulated embedding nets (see :meth:`~nnpot.potentials.EnergyModel.tabulated`).
    """

    def __init__(self, images: Sequence, model: str | os.PathLike[str] | torch.nn.Module, timestep: float, *,
                 temperature_K: float | None = None, friction: float | None = None, device: str = "auto",
                 dtype: str | None = None, skin: float = 2.0, chunk_size: int | None = None,
                 cuda_graphs: bool | None = None, graph_block: int = 10, seed: int | None = None,
                 tabulate: bool = False):
        from nnpot.md.driver import check_settings
        from nnpot.potentials.calculator import NNPotCalculator

        check_settings(timestep=(timestep, ">0"), temperature_K=(temperature_K or 0.0, ">=0"),
                       friction=(friction or 0.0, ">=0"), skin=(skin, ">=0"), graph_block=(graph_block, ">0"))
        self.images = list(images)
        if not self.images:
            raise ConfigError("Replicas needs at least one structure")
        calc = NNPotCalculator(model, device=device, dtype=dtype, chunk_size=chunk_size, tabulate=tabulate)
        self.model = calc.model
        self.dt = float(timestep)
        self.kT = None if temperature_K is None else units.kB * float(temperature_K)
        self.friction = float(friction or 0.0)
        self.nsteps = 0
        dev, dt = self.model.device, self.model.dtype
        t = lambda x: torch.as_tensor(np.concatenate(x), dtype=dt, device=dev)  # noqa: E731
        self.force_fn = ModelForces(self.model, self.images, skin=skin, chunk_size=chunk_size)
        self.state = MDState(
            positions=t([a.positions for a in self.images]), momenta=t([a.get_momenta() for a in self.images]),
            masses=t([a.get_masses() for a in self.images]), forces=None, energy=None, virial=None,
            cell=torch.as_tensor(np.stack([a.cell.array for a in self.images]), dtype=dt, device=dev))
        self.state.energy, self.state.forces, self.state.virial = self.force_fn(self.state.positions, self.state.cell)
        self.generator = torch.Generator(device=dev)
        self.generator.manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
        self._graphs = None
        if cuda_graphs is not False and dev.type == "cuda":
            from nnpot.md.graphs import GraphedSteps

            self._graphs = GraphedSteps(self.state, self.force_fn, self._advance, graph_block, generator=self.generator)

    def _advance(self, state: MDState, force_fn) -> None:
        if self.kT is None:
            velocity_verlet_step(state, force_fn, self.dt)
        else:
            langevin_baoab_step(state, force_fn, self.dt, self.kT, self.friction, generator=self.generator)

    def run(self, steps: int) -> None:
        """Advance all replicas ``steps`` steps and write the final state into ``images``."""
        if self._graphs is not None:
            self._graphs.run(steps)
        else:
            for _ in range(int(steps)):
                self._advance(self.state, self.force_fn)
        self.nsteps += int(steps)
        self.write_back()

    def get_time(self) -> float:
        return self.nsteps * self.dt

    def potential_energies(self) -> np.ndarray:
        """eV, one per replica."""
        return self.state.energy.detach().cpu().double().numpy()

    def kinetic_energies(self) -> np.ndarray:
        """eV, one per replica."""
        ke = 0.5 * (self.state.momenta ** 2 / self.state.masses[:, None]).sum(-1)
        per = torch.zeros(len(self.images), dtype=ke.dtype, device=ke.device).index_add(0, self.force_fn.evaluator.frame, ke)
        return per.detach().cpu().double().numpy()

    def write_back(self) -> None:
        pos = self.state.positions.detach().cpu().double().numpy()
        mom = self.state.momenta.detach().cpu().double().numpy()
        for f, atoms in enumerate(self.images):
            a, b = self.force_fn.evaluator.offsets[f], self.force_fn.evaluator.offsets[f + 1]
            atoms.positions = pos[a:b]
            atoms.set_momenta(mom[a:b], apply_constraint=False)
