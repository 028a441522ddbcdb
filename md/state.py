"""The MD state, kept on one device between steps.

=========  ========  =================================
field      shape     unit
=========  ========  =================================
positions  [N, 3]    Angstrom (unwrapped)
momenta    [N, 3]    amu * Angstrom / ASE time
masses     [N]       amu
forces     [N, 3]    eV / Angstrom
energy     []        eV (potential)
virial     [3, 3]    eV
cell       [3, 3]    Angstrom, rows are cell vectors
=========  ========  =================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import units

__all__ = ["MDState", "state_from_atoms", "write_back", "snapshot"]


@dataclass
class MDState:
    positions: torch.Tensor
    momenta: torch.Tensor
    masses: torch.Tensor
    forces: torch.Tensor
    energy: torch.Tensor
    virial: torch.Tensor
    cell: torch.Tensor

    def kinetic_energy(self) -> torch.Tensor:
        return 0.5 * (self.momenta ** 2 / self.masses[:, None]).sum()

    def temperature(self, n_dof: int | None = None) -> torch.Tensor:
        """Kelvin; ``n_dof`` defaults to 3N (ASE's convention for MDLogger)."""
        n_dof = n_dof or 3 * self.positions.shape[0]
        return 2.0 * self.kinetic_energy() / (n_dof * units.kB)


def state_from_atoms(atoms, device: torch.device, dtype: torch.dtype) -> MDState:
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=dtype, device=device)  # noqa: E731
    n = len(atoms)
    return MDState(positions=t(atoms.positions), momenta=t(atoms.get_momenta()), masses=t(atoms.get_masses()),
                   forces=torch.zeros(n, 3, dtype=dtype, device=device), energy=t(0.0),
                   virial=torch.zeros(3, 3, dtype=dtype, device=device), cell=t(atoms.cell.array))


def write_back(state: MDState, atoms) -> None:
    """Copy positions, momenta and cell from the device into ``atoms``."""
    atoms.positions = state.positions.detach().cpu().double().numpy()
    atoms.set_momenta(state.momenta.detach().cpu().double().numpy(), apply_constraint=False)
    atoms.cell = state.cell.detach().cpu().double().numpy()


def snapshot(state: MDState, atoms):
    """A copy of ``atoms`` at ``state`` with energy, forces (and stress) in a SinglePointCalculator."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from nnpot.potentials.evaluator import stress_from_virial

    frame = atoms.copy()
    write_back(state, frame)
    results = {"energy": float(state.energy), "forces": state.forces.detach().cpu().double().numpy()}
    stress = stress_from_virial(state.virial.detach().cpu().double().numpy(), frame.cell.array)
    if stress is not None:
        results["stress"] = stress
    frame.calc = SinglePointCalculator(frame, **results)
    return frame


def thermalize(atoms, temperature_K: float, rng: np.random.Generator | int | None = None,
               stationary: bool = True) -> None:
    """Draw Maxwell-Boltzmann momenta at ``temperature_K`` into ``atoms`` (and, by default, remove
    the centre-of-mass motion). Uses ASE's ``thermalize_momenta`` (ASE >= 3.29) or
    ``MaxwellBoltzmannDistribution`` on older ASE."""
    from ase.md import velocitydistribution as vd

    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    draw = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    draw(atoms, temperature_K=temperature_K, rng=rng)
    if stationary:
        vd.Stationary(atoms)
