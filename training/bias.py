"""The per-element energy-bias re-fit (DeePMD-kit's ``dp change-bias``, in closed form): what
training does at each validation and before it saves a model, and what ``nnpot change-bias``
does to any model on any data. Forces do not see a constant per-element shift, so under a
force-dominated loss the offsets drift; the re-fit pins them again and changes no force."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nnpot.potentials.batch import types_from_numbers
from nnpot.potentials.evaluator import predict_energies
from nnpot.potentials.stats import fit_energy_bias

__all__ = ["energy_bias_shift", "bias_is_determined", "change_bias"]


def bias_is_determined(numbers: Sequence[np.ndarray], type_map: Sequence[str]) -> bool:
    """Whether the frames' element counts tell the per-element energies apart: False when the
    counts are proportional in every frame (water is always 2 H : 1 O), so only one combination
    of the offsets is fitted and :func:`fit_energy_bias` takes the minimum-norm split."""
    counts = np.stack([np.bincount(types_from_numbers(z, type_map), minlength=len(type_map)) for z in numbers])
    present = counts.any(axis=0)
    return np.linalg.matrix_rank(counts[:, present].astype(np.float64)) == int(present.sum())


def energy_bias_shift(model: torch.nn.Module, frames: Sequence, batch_size: int = 4, progress: bool = False) -> np.ndarray:
    """The per-element shift (eV) of ``model.energy_bias`` that fits the energy residuals of
    labelled ``frames`` in the least-squares sense (DeePMD-kit's ``dp change-bias``, in closed
    form). Adding it changes no force, so only energies are evaluated."""
    frames = list(frames)
    pred = predict_energies(model, frames, batch_size=batch_size, progress=progress, desc="energy re-fit")
    return fit_energy_bias(pred["energy_ref"] - pred["energy"], [f.numbers for f in frames], model.type_map)


def change_bias(model: torch.nn.Module, frames: Sequence, batch_size: int = 4,
                progress: bool = False) -> tuple[np.ndarray, np.ndarray, bool]:
    """Re-fit ``model``'s per-element energy bias on labelled ``frames``, in place (DeePMD-kit's
    ``dp change-bias``). Returns the shift applied (eV per element, in ``model.type_map``
    order), what a second fit would still move (rounding, ~0), and whether the frames' element
    counts determine each offset (:func:`bias_is_determined`)."""
    frames = list(frames)
    shift = energy_bias_shift(model, frames, batch_size=batch_size, progress=progress)
    with torch.no_grad():
        model.energy_bias.add_(torch.as_tensor(shift).to(model.energy_bias))
    residual = energy_bias_shift(model, frames, batch_size=batch_size)
    return shift, residual, bias_is_determined([f.numbers for f in frames], model.type_map)
