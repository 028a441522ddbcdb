"""Force providers for the MD drivers, ``force_fn(positions, cell) -> (energy, forces, virial)``:
an nnpot model through its :class:`~nnpot.potentials.evaluator.Evaluator` (kept on the device,
neighbor list with a skin), or any ASE calculator as a slow but general fallback."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from nnpot.potentials.evaluator import Evaluator

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ase import Atoms
    from ase.calculators.calculator import Calculator

#: energies [B] (eV), forces [N, 3] (eV/A), virials [B, 3, 3] (eV)
Forces = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

__all__ = ["ModelForces", "ASEForces"]


class ModelForces:
    """An :class:`~nnpot.potentials.evaluator.Evaluator` in the drivers' shapes: energies
    ``[B]``, forces ``[N, 3]``, virials ``[B, 3, 3]`` for the ``B`` structures of ``images`` (one
    ``Atoms`` or a list). The evaluator (its neighbor list, staleness and overflow flags) is
    :attr:`evaluator`."""

    def __init__(self, model: torch.nn.Module, images: Atoms | Sequence[Atoms], skin: float = 2.0, chunk_size: int | None = None,
                 compile: bool = False, min_distance: float = 0.0):
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        self.evaluator = Evaluator(model, images, skin=skin, chunk_size=chunk_size, compile=compile,
                                   min_distance=min_distance)
        #: the last evaluation's full results (an ensemble's deviations among them)
        self.last: dict[str, torch.Tensor] = {}

    def evaluate_state(self, positions: torch.Tensor, cell: torch.Tensor) -> Forces:
        """Unchecked (:meth:`Evaluator.evaluate`): what a CUDA graph captures."""
        self.last = self.evaluator.evaluate(positions, cell)
        return self.last["energy"], self.last["forces"], self.last["virial"]

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor) -> Forces:
        """Checked (:meth:`Evaluator.__call__`): rebuilds the list when needed."""
        self.last = self.evaluator(positions, cell)
        return self.last["energy"], self.last["forces"], self.last["virial"]


class ASEForces:
    """Any ASE calculator behind the same interface, for one system (positions go through the
    host)."""

    def __init__(self, calc: Calculator, atoms: Atoms):
        self.calc = calc
        self.atoms = atoms.copy()
        self.atoms.calc = calc

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor) -> Forces:
        self.atoms.positions = positions.detach().cpu().double().numpy()
        self.atoms.cell = cell[0].detach().cpu().double().numpy()
        e = self.atoms.get_potential_energy()
        f = self.atoms.get_forces()
        try:
            vol = self.atoms.get_volume()
            from ase.stress import voigt_6_to_full_3x3_stress

            virial = -voigt_6_to_full_3x3_stress(self.atoms.get_stress()) * vol
        except Exception:  # non-periodic systems and calculators without stress
            virial = np.zeros((3, 3))
        to = lambda x: torch.as_tensor(np.asarray(x), dtype=positions.dtype, device=positions.device)  # noqa: E731
        return to([e]), to(f), to(virial)[None]
