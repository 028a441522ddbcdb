"""Force providers for the MD drivers: an nnpot model kept on the device with a reused
neighbor list (skin), or any ASE calculator as a slow but general fallback."""

from __future__ import annotations

import math

import numpy as np
import torch

from nnpot.potentials.batch import AtomsBatch, make_batch
from nnpot.potentials.derivatives import derivatives

__all__ = ["ModelForces", "ASEForces"]


class ModelForces:
    """Energy and forces of an :class:`~nnpot.potentials.EnergyModel` on device tensors.

    The neighbor list is built with cutoff ``rcut + skin`` and reused until some atom has
    moved more than ``skin / 2`` since the last build (then no pair can have crossed into the
    cutoff unseen). The longer list has proportionally more slots per type; the se_e2_a
    descriptor corrects exactly for slot counts above ``sel``.
    """

    def __init__(self, model, atoms, skin: float = 0.5, chunk_size: int | None = None):
        self.model = model
        self.skin = float(skin)
        scale = ((model.cutoff + self.skin) / model.cutoff) ** 3
        self.capacity = tuple(int(math.ceil(s * scale)) for s in model.sel)
        self.chunk_size = chunk_size
        self.numbers = atoms.numbers.copy()
        self.pbc = np.array(atoms.pbc)
        self.n_builds = 0
        self._batch: AtomsBatch | None = None
        self._ref_pos: torch.Tensor | None = None

    def _build(self, positions: torch.Tensor, cell: torch.Tensor) -> None:
        from ase import Atoms

        atoms = Atoms(numbers=self.numbers, positions=positions.detach().cpu().double().numpy(),
                      cell=cell.detach().cpu().double().numpy(), pbc=self.pbc)
        self._batch = make_batch([atoms], self.model.type_map, self.model.cutoff + self.skin, self.capacity,
                                 device=positions.device, dtype=positions.dtype)
        self._ref_pos = positions.detach().clone()
        self.n_builds += 1

    def needs_rebuild(self, positions: torch.Tensor) -> bool:
        if self._batch is None:
            return True
        moved = (positions - self._ref_pos).norm(dim=-1).max()
        return bool(moved > 0.5 * self.skin)

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(energy [], forces [N, 3], virial [3, 3])`` at ``positions`` (eV, eV/A, eV)."""
        if self.needs_rebuild(positions):
            self._build(positions, cell)
        b = self._batch
        batch = AtomsBatch(positions, b.types, b.frame, cell[None], b.pbc, b.neighbors)
        out = derivatives(self.model, batch, chunk_size=self.chunk_size)
        return out["energy"][0], out["forces"], out["virial"][0]


class ASEForces:
    """Any ASE calculator behind the same interface (positions go through the host)."""

    def __init__(self, calc, atoms):
        self.calc = calc
        self.atoms = atoms.copy()
        self.atoms.calc = calc

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor):
        self.atoms.positions = positions.detach().cpu().double().numpy()
        self.atoms.cell = cell.detach().cpu().double().numpy()
        e = self.atoms.get_potential_energy()
        f = self.atoms.get_forces()
        try:
            vol = self.atoms.get_volume()
            from ase.stress import voigt_6_to_full_3x3_stress

            virial = -voigt_6_to_full_3x3_stress(self.atoms.get_stress()) * vol
        except Exception:  # non-periodic systems and calculators without stress
            virial = np.zeros((3, 3))
        to = lambda x: torch.as_tensor(np.asarray(x), dtype=positions.dtype, device=positions.device)  # noqa: E731
        return to(e), to(f), to(virial)
