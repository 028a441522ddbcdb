"""Statistics a model takes from its training data: the descriptor's input normalisation (each
descriptor fits its own, :meth:`~nnpot.potentials.descriptors.base.Descriptor.fit_statistics`)
and the per-element energy bias in closed form, as DeePMD-kit computes it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nnpot.potentials.batch import types_from_numbers

__all__ = ["fit_energy_bias", "apply_stats"]

def fit_energy_bias(energies: np.ndarray, numbers: Sequence[np.ndarray], type_map: Sequence[str]) -> np.ndarray:
    """Per-element energies ``b`` minimising ``sum_f (E_f - sum_t n_ft b_t)^2`` (least squares).

    When all frames share one composition the system is rank-deficient and the minimum-norm
    solution is taken, as DeePMD-kit does.
    """
    counts = np.stack([np.bincount(types_from_numbers(z, type_map), minlength=len(type_map)) for z in numbers])
    bias, *_ = np.linalg.lstsq(counts.astype(np.float64), np.asarray(energies, np.float64), rcond=None)
    return bias


def apply_stats(model: torch.nn.Module, structures: Sequence, energies: np.ndarray | None = None) -> None:
    """Fit the descriptor's input statistics (se_e2_a: davg/dstd) and, when ``energies`` are
    given, the per-element energy bias of ``model``."""
    structures = list(structures)
    model.descriptor.fit_statistics(structures, model.type_map)
    if energies is not None:
        bias = fit_energy_bias(energies, [s.numbers for s in structures], model.type_map)
        model.energy_bias.copy_(torch.as_tensor(bias).to(model.energy_bias))
