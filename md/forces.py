"""Force providers for the MD drivers, ``force_fn(positions, cell) -> (energy, forces, virial)``:
an nnpot model through its :class:`~nnpot.potentials.evaluator.Evaluator` (kept on the device,
neighbor list with a skin), or any ASE calculator as a slow but general fallback."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nnpot.potentials.evaluator import Evaluator

__all__ = ["ModelForces", "ASEForces"]


class ModelForces:
    """An :class:`~nnpot.potentials.evaluator.Evaluator` in the drivers' shapes: for one
    structure (``images`` an ``Atoms``) a scalar energy, ``[N, 3]`` forces and a ``[3, 3]``
    virial; for replicas (a list) ``[B]``, ``[N, 3]`` and ``[B, 3, 3]``. The evaluator (its
    neighbor list, staleness and overflow flags) is :attr:`evaluator`."""

    def __init__(self, model: torch.nn.Module, images, skin: float = 2.0, chunk_size: int | None = None,
                 compile: bool = False, min_distance: float = 0.0):
        self.single = not isinstance(images, Sequence)
        images = [images] if self.single else list(images)
        self.evaluator = Evaluator(model, images, skin=skin, chunk_size=chunk_size, compile=compile,
                                   min_distance=min_distance)

    def batched(self, cell: torch.Tensor) -> torch.Tensor:
        """``[B, 3, 3]`` cells from the driver's ``cell`` (``[3, 3]`` for one structure)."""
        return cell[None] if self.single else cell

    def _shaped(self, out: dict[str, torch.Tensor]):
        e, f, w = out["energy"], out["forces"], out["virial"]
        return (e[0], f, w[0]) if self.single else (e, f, w)

    def evaluate_state(self, positions: torch.Tensor, cell: torch.Tensor):
        """Unchecked (:meth:`Evaluator.evaluate`): what a CUDA graph captures."""
        return self._shaped(self.evaluator.evaluate(positions, self.batched(cell)))

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor):
        """Checked (:meth:`Evaluator.__call__`): rebuilds the list when needed."""
        return self._shaped(self.evaluator(positions, self.batched(cell)))


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
