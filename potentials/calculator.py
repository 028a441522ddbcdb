"""The ASE calculator: ``atoms.calc = NNPotCalculator("model.nnp")``."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from nnpot.errors import ConfigError
from nnpot.potentials.evaluator import Evaluator, check_structure, resolve_device, stress_from_virial
from nnpot.potentials.model import EnergyModel
from nnpot.potentials.modelfile import load_ensemble, load_model

__all__ = ["NNPotCalculator", "EnsembleCalculator", "prepare_model", "UNCERTAINTY"]

#: per-structure uncertainty results of an ensemble (eV/A, and eV/atom for devi_e)
UNCERTAINTY = ("max_devi_f", "min_devi_f", "avg_devi_f", "devi_e")

_DTYPES = {None: None, "float32": torch.float32, "float64": torch.float64,
           torch.float32: torch.float32, torch.float64: torch.float64}


def prepare_model(model: str | os.PathLike[str] | EnergyModel, device: str | torch.device = "auto",
                  dtype: str | torch.dtype | None = None, tabulate: bool = False) -> EnergyModel:
    """A model ready to evaluate: loaded from a ``.nnp`` path if need be, on ``device`` (``"auto"``:
    CUDA when available) in ``dtype`` (default: its own), tabulated if asked, in eval mode. A
    model object is converted as a copy, never in place."""
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    device = resolve_device(device)
    if isinstance(model, (list, tuple)):  # several model files: an ensemble
        model = load_ensemble(model, device=device)
    if isinstance(model, (str, os.PathLike)):
        model = load_model(Path(model), device=device)
    target = _DTYPES[dtype] or model.dtype
    if tabulate and not model.is_tabulated:
        model = model.tabulated()  # a copy, built from the model's own precision
    if model.device != device or model.dtype != target:
        model = copy.deepcopy(model).to(device=device, dtype=target)
    return model.eval()


class NNPotCalculator(Calculator):
    """ASE calculator for an nnpot model.

    Args:
        model: a path to a ``.nnp`` model file or a loaded :class:`EnergyModel`.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        dtype: ``"float32"`` or ``"float64"``; default: the model's own.
        chunk_size: evaluate this many atoms at a time (bounds memory for large systems).
        skin: Angstrom; the neighbor list (cutoff + ``skin``) is kept from call to call and
            rebuilt only when an atom has moved more than ``skin / 2``, the cell has strained as
            much, or the atoms changed (:class:`~nnpot.potentials.evaluator.Evaluator`); 0
            rebuilds it whenever an atom moved.
        tabulate: use the descriptor's tabulated form (se_e2_a: DeePMD-kit's model compression,
            :meth:`EnergyModel.tabulated`): agrees with the exact model to ~1e-12 relative in
            float64 and is several times faster on CUDA.
        min_distance: Angstrom; atoms closer than this raise
            :class:`~nnpot.errors.AtomsTooCloseError` (overlapping atoms are outside any
            training set); 0 turns the check off. Non-finite positions and singular periodic
            cells raise :class:`~nnpot.errors.InvalidStructureError` (``check_structure``).

    Results: ``energy``/``free_energy`` (eV), ``energies`` (eV per atom), ``forces`` (eV/A),
    ``stress`` (eV/A^3, Voigt xx yy zz yz xz xy, only when the cell has a volume). With an
    ensemble (a list of model files, an ensemble folder or an
    :class:`~nnpot.potentials.ensemble.EnsembleModel`) these are the members' means, and the
    results also hold the uncertainty: ``max_devi_f``, ``min_devi_f``, ``avg_devi_f`` (eV/A),
    ``devi_e`` (eV/atom) and the per-atom ``devi_f``.
    More neighbors of an element than the model's ``sel`` raise
    :class:`~nnpot.errors.NeighborOverflowError`, never a silent truncation.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        model: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | torch.nn.Module,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        chunk_size: int | None = 8192,
        tabulate: bool = False,
        skin: float = 1.0,
        min_distance: float = 0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if skin < 0 or min_distance < 0 or (chunk_size is not None and chunk_size < 1):
            raise ConfigError(f"need skin >= 0, min_distance >= 0 and chunk_size >= 1 (or None), got {skin}, "
                              f"{min_distance} and {chunk_size}")
        self.model = prepare_model(model, device, dtype, tabulate)
        self.device = self.model.device
        self.chunk_size = chunk_size
        self.skin = float(skin)
        self.min_distance = float(min_distance)
        self._evaluator: tuple[tuple, Evaluator] | None = None  # (numbers, pbc) -> its evaluator

    def evaluator(self, atoms: Atoms) -> Evaluator:
        """The evaluator of structures with ``atoms``' elements and pbc (kept between calls)."""
        key = (atoms.numbers.tobytes(), tuple(bool(p) for p in atoms.pbc))
        if self._evaluator is None or self._evaluator[0] != key:
            self._evaluator = (key, Evaluator(self.model, [atoms], skin=self.skin, chunk_size=self.chunk_size))
        return self._evaluator[1]

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        check_structure(atoms.positions, atoms.cell.array, atoms.pbc, self.min_distance)
        as_tensor = lambda x: torch.as_tensor(np.asarray(x), dtype=self.model.dtype, device=self.device)  # noqa: E731
        out = self.evaluator(atoms)(as_tensor(atoms.positions), as_tensor(atoms.cell.array)[None])
        host = {k: v.detach().cpu().double().numpy() for k, v in out.items()}
        energy = float(host["energy"][0])
        self.results = {"energy": energy, "free_energy": energy, "energies": host["atom_energy"],
                        "forces": host["forces"]}
        stress = stress_from_virial(host["virial"][0], atoms.cell.array)
        if stress is not None:
            self.results["stress"] = stress
        if "devi_f" in host:  # an ensemble: its disagreement (nnpot.potentials.ensemble)
            self.results["devi_f"] = host["devi_f"]
            self.results.update({k: float(host[k][0]) for k in UNCERTAINTY})


class EnsembleCalculator(NNPotCalculator):
    """:class:`NNPotCalculator` for an ensemble: ``EnsembleCalculator(["a.nnp", "b.nnp", ...])``
    or an ensemble folder; mean results plus the uncertainty keys of :data:`UNCERTAINTY`."""

    def __init__(self, models: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | torch.nn.Module,
                 **kwargs):
        super().__init__(models, **kwargs)
        if not hasattr(self.model, "members"):
            raise ConfigError("EnsembleCalculator needs several models (a list of files or an ensemble folder)")
