"""The MD state, batch-first (as torch-sim's ``SimState``): one or many independent systems
concatenated, kept on one device between steps. ``B`` systems, ``N`` atoms in all:

==========  ========  ========================================================
field       shape     unit / meaning
==========  ========  ========================================================
positions   [N, 3]    Angstrom (unwrapped)
momenta     [N, 3]    amu * Angstrom / ASE time
masses      [N]       amu
forces      [N, 3]    eV / Angstrom
system      [N]       index of each atom's system (0..B-1)
energy      [B]       eV, potential energy of each system
virial      [B, 3, 3] eV
cell        [B, 3, 3] Angstrom, rows are cell vectors
thermostat  Thermo-   thermostat and barostat variables, [B, ...] each
            statState (:class:`ThermostatState`: the Nose-Hoover chain's ``chain_v``
                      and ``chain_xi``, [B, M]); updated in place
free        [N, 1]    1 for atoms that move, 0 for atoms held by ASE's ``FixAtoms``
                      (None: every atom moves); their forces and momenta stay 0
==========  ========  ========================================================

Every tensor a step changes is a field here, so saving and restoring the state (a CUDA-graph
rollback) restores the thermostat too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.md import velocitydistribution as vd

from nnpot.errors import ConfigError
from nnpot.potentials.evaluator import stress_from_virial

__all__ = ["MDState", "ThermostatState", "state_from_atoms", "fixed_atoms", "write_back", "snapshot", "thermalize", "DYNAMIC_FIELDS"]

#: the fields an integrator step replaces (the thermostat's tensors are updated in place)
DYNAMIC_FIELDS = ("positions", "momenta", "forces", "energy", "virial", "cell")


@dataclass
class ThermostatState:
    """The variables a thermostat or barostat carries from step to step, ``[B, ...]`` each, on
    the state's device; None where the integrator has none. A step updates them in place, so a
    CUDA graph's buffers stay valid and a rollback restores them with the rest of the state."""

    chain_v: torch.Tensor | None = None  #: Nose-Hoover chain velocities p_j / Q_j [B, M], 1/(ASE time)
    chain_xi: torch.Tensor | None = None  #: Nose-Hoover chain positions [B, M], dimensionless

    def tensors(self) -> dict[str, torch.Tensor]:
        """The variables that are set, by name (what a CUDA-graph runner saves and restores)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass
class MDState:
    positions: torch.Tensor
    momenta: torch.Tensor
    masses: torch.Tensor
    forces: torch.Tensor
    energy: torch.Tensor
    virial: torch.Tensor
    cell: torch.Tensor
    system: torch.Tensor
    thermostat: ThermostatState = field(default_factory=ThermostatState)
    free: torch.Tensor | None = None

    def __post_init__(self) -> None:
        """Shapes and devices checked once, where the state is made (a mismatch later would be
        a silent broadcast or a device error deep inside a step)."""
        n, b = self.positions.shape[0], self.cell.shape[0]
        expected = {"positions": (n, 3), "momenta": (n, 3), "masses": (n,), "forces": (n, 3), "energy": (b,),
                    "virial": (b, 3, 3), "cell": (b, 3, 3), "system": (n,)}
        if self.free is not None:
            expected["free"] = (n, 1)
        device = self.positions.device
        for name, shape in expected.items():
            value = getattr(self, name)
            if tuple(value.shape) != shape:
                raise ValueError(f"MDState.{name}: shape {tuple(value.shape)}, expected {shape}")
            if value.device != device:
                raise ValueError(f"MDState.{name} is on {value.device}, the positions on {device}")
    @property
    def n_systems(self) -> int:
        return int(self.cell.shape[0])

    def per_system(self, per_atom: torch.Tensor) -> torch.Tensor:
        """``[B, ...]`` sums over each system's atoms of ``per_atom`` ``[N, ...]``."""
        out = torch.zeros((self.n_systems, *per_atom.shape[1:]), dtype=per_atom.dtype, device=per_atom.device)
        return out.index_add(0, self.system, per_atom)

    def kinetic_energy(self) -> torch.Tensor:
        """``[B]`` eV."""
        return self.per_system(0.5 * (self.momenta ** 2 / self.masses[:, None]).sum(-1))

    def temperature(self, n_dof: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """``[B]`` Kelvin; ``n_dof`` defaults to 3N per system (ASE's convention for MDLogger)."""
        if n_dof is None:
            n_dof = 3 * torch.bincount(self.system, minlength=self.n_systems)
        n_dof = torch.as_tensor(n_dof, dtype=self.momenta.dtype, device=self.momenta.device)
        return 2.0 * self.kinetic_energy() / (n_dof * units.kB)

    def volume(self) -> torch.Tensor:
        """``[B]`` A^3."""
        return torch.linalg.det(self.cell).abs()


def fixed_atoms(atoms: Atoms) -> np.ndarray:
    """``[n]`` bool: the atoms ASE's ``FixAtoms`` holds. Any other constraint is refused by
    name: MD must not silently ignore what the user set."""

    fixed = np.zeros(len(atoms), dtype=bool)
    for c in atoms.constraints:
        if not isinstance(c, FixAtoms):
            raise ConfigError(f"the constraint {type(c).__name__} is not supported by nnpot's MD (FixAtoms is); "
                              "remove it, or run ASE's own integrators with the nnpot calculator")
        fixed[c.get_indices()] = True
    return fixed


def state_from_atoms(atoms: Atoms | Sequence[Atoms], device: torch.device, dtype: torch.dtype) -> MDState:
    """A state of one ASE ``Atoms`` or of a list of them (one system each); atoms held by
    ``FixAtoms`` start at rest and stay there (:attr:`MDState.free`)."""
    images = list(atoms) if isinstance(atoms, (list, tuple)) else [atoms]
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=dtype, device=device)  # noqa: E731
    n, b = sum(len(a) for a in images), len(images)
    sizes = torch.as_tensor([len(a) for a in images], device=device)
    fixed = np.concatenate([fixed_atoms(a) for a in images])
    free = t(~fixed)[:, None] if fixed.any() else None
    momenta = t(np.concatenate([a.get_momenta() for a in images]))
    return MDState(positions=t(np.concatenate([a.positions for a in images])),
                   momenta=momenta if free is None else momenta * free, free=free,
                   masses=t(np.concatenate([a.get_masses() for a in images])),
                   forces=torch.zeros(n, 3, dtype=dtype, device=device), energy=torch.zeros(b, dtype=dtype, device=device),
                   virial=torch.zeros(b, 3, 3, dtype=dtype, device=device),
                   cell=t(np.stack([a.cell.array for a in images])),
                   system=torch.repeat_interleave(torch.arange(b, device=device), sizes))


def _rows(state: MDState, b: int) -> slice:
    sizes = torch.bincount(state.system, minlength=state.n_systems).tolist()
    start = sum(sizes[:b])
    return slice(start, start + sizes[b])


def write_back(state: MDState, atoms: Atoms, b: int = 0) -> None:
    """Copy system ``b``'s positions, momenta and cell from the device into ``atoms``."""
    rows = _rows(state, b) if state.n_systems > 1 else slice(None)
    atoms.positions = state.positions[rows].detach().cpu().double().numpy()
    atoms.set_momenta(state.momenta[rows].detach().cpu().double().numpy(), apply_constraint=False)
    atoms.cell = state.cell[b].detach().cpu().double().numpy()


def snapshot(state: MDState, atoms: Atoms, b: int = 0) -> Atoms:
    """A copy of ``atoms`` at system ``b`` of ``state``, with energy, forces (and stress) in a
    SinglePointCalculator."""

    frame = atoms.copy()
    write_back(state, frame, b)
    rows = _rows(state, b) if state.n_systems > 1 else slice(None)
    results = {"energy": float(state.energy[b]), "forces": state.forces[rows].detach().cpu().double().numpy()}
    stress = stress_from_virial(state.virial[b].detach().cpu().double().numpy(), frame.cell.array)
    if stress is not None:
        results["stress"] = stress
    frame.calc = SinglePointCalculator(frame, **results)
    return frame
def thermalize(atoms: Atoms, temperature_K: float, rng: np.random.Generator | int | None = None,
               stationary: bool = True) -> None:
    """Draw Maxwell-Boltzmann momenta at ``temperature_K`` into ``atoms`` (and, by default, remove
    the centre-of-mass motion). Uses ASE's ``thermalize_momenta`` (ASE >= 3.29) or
    ``MaxwellBoltzmannDistribution`` on older ASE."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    draw = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution
    draw(atoms, temperature_K=temperature_K, rng=rng)
    if stationary:
        vd.Stationary(atoms)
