"""One labelled structure (a *frame*) and the checks every reader applies to it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from nnpot.errors import DatasetError

__all__ = ["Frame", "validate_frame", "periodic_volume", "MAX_Z"]

MAX_Z = 118  # the periodic table ends here; anything else is not an element


@dataclass
class Frame:
    """A structure with its QM labels, in ASE units.

    Attributes:
        numbers: ``[n]`` int, atomic numbers.
        positions: ``[n, 3]`` float, Angstrom.
        cell: ``[3, 3]`` float, Angstrom, rows are the cell vectors (zeros if non-periodic).
        pbc: ``[3]`` bool.
        energy: total energy, eV.
        forces: ``[n, 3]`` float, eV/Angstrom.
        virial: ``[3, 3]`` float, eV (DeePMD convention, ``-stress * volume``), or None.
        weight: per-frame weight in the loss (1 by default).
        atom_labels: further per-atom labels by name, ``[n, k]`` float each (DeePMD-kit's
            ``spin``, ``force_mag``, ``aparam``, ``atomic_dipole``, ...), kept through conversion.
        frame_labels: further per-frame labels by name, ``[k]`` float each (``fparam``,
            ``dipole``, ``polarizability``, ...).
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float
    forces: np.ndarray
    virial: np.ndarray | None = None
    weight: float = 1.0
    info: dict = field(default_factory=dict)
    atom_labels: dict[str, np.ndarray] = field(default_factory=dict)
    frame_labels: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return int(len(self.numbers))

    def to_atoms(self) -> Atoms:
        """The frame as an ``ase.Atoms`` with a SinglePointCalculator holding the labels."""
        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        results = {"energy": float(self.energy), "forces": np.array(self.forces)}
        if self.virial is not None and atoms.cell.volume > 0:
            results["stress"] = -np.asarray(self.virial) / atoms.cell.volume
        atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms


def periodic_volume(cell: np.ndarray, pbc: np.ndarray) -> float:
    """Volume (area, length) spanned by the periodic cell vectors: ``sqrt(det(V V^T))`` over the
    rows ``V`` of ``cell`` whose ``pbc`` is set; 1 when no direction is periodic. Vectors along
    non-periodic directions do not matter (a slab may leave its third vector zero)."""
    rows = np.asarray(cell, dtype=np.float64)[np.asarray(pbc, dtype=bool)]
    if len(rows) == 0:
        return 1.0
    return float(np.sqrt(max(np.linalg.det(rows @ rows.T), 0.0)))


def _fail(where: str, problem: str) -> DatasetError:
    return DatasetError(f"{where}: {problem}")


def validate_frame(frame: Frame, where: str) -> Frame:
    """Check shapes, finiteness, elements and cell of ``frame``; return it with canonical dtypes.

    ``where`` names the file and frame for the error message, e.g. ``"water.xyz: frame 3"``.
    Raises :class:`~nnpot.errors.DatasetError` with a one-line message on the first problem.
    """
    numbers = np.asarray(frame.numbers)
    n = numbers.shape[0] if numbers.ndim == 1 else -1
    if numbers.ndim != 1 or n == 0:
        raise _fail(where, f"atomic numbers must be a non-empty 1-D array, got shape {numbers.shape}")
    if not np.issubdtype(numbers.dtype, np.integer):
        raise _fail(where, f"atomic numbers must be integers, got dtype {numbers.dtype}")
    bad = numbers[(numbers < 1) | (numbers > MAX_Z)]
    if bad.size:
        raise _fail(where, f"unknown element with atomic number {int(bad[0])}")
    arrays = {}
    for name, shape in (("positions", (n, 3)), ("forces", (n, 3)), ("cell", (3, 3))):
        value = np.asarray(getattr(frame, name))
        if value.shape != shape:
            raise _fail(where, f"{name} has shape {value.shape}, expected {shape} for {n} atoms")
        arrays[name] = value.astype(np.float64)
    pbc = np.asarray(frame.pbc, dtype=bool).reshape(-1)
    if pbc.shape != (3,):
        raise _fail(where, f"pbc must hold 3 flags, got {pbc.shape}")
    virial = None
    if frame.virial is not None:
        virial = np.asarray(frame.virial, dtype=np.float64)
        if virial.size != 9:
            raise _fail(where, f"virial has shape {virial.shape}, expected (3, 3) or (9,)")
        virial = virial.reshape(3, 3)
    try:
        energy = float(np.asarray(frame.energy).reshape(()))
    except (TypeError, ValueError):
        raise _fail(where, f"energy must be one number, got {np.asarray(frame.energy).shape}") from None
    scalars = {"energy": energy, "weight": float(frame.weight)}
    for name, value in {**arrays, **scalars, "virial": virial}.items():
        if value is not None and not np.all(np.isfinite(value)):
            raise _fail(where, f"{name} contains NaN or inf")
    if scalars["weight"] < 0:
        raise _fail(where, f"weight must be >= 0, got {scalars['weight']}")
    if periodic_volume(arrays["cell"], pbc) < 1e-6:
        raise _fail(where, "the cell is singular: its periodic vectors span no volume (area, length)")
    atom_labels = {k: _label(v, (n, -1), where, k) for k, v in frame.atom_labels.items()}
    frame_labels = {k: _label(v, (-1,), where, k) for k, v in frame.frame_labels.items()}
    return Frame(
        numbers=numbers.astype(np.int32),
        positions=arrays["positions"],
        cell=arrays["cell"],
        pbc=pbc,
        energy=energy,
        forces=arrays["forces"],
        virial=virial,
        weight=scalars["weight"],
        info=dict(frame.info),
        atom_labels=atom_labels,
        frame_labels=frame_labels,
    )


def _label(value, shape: tuple[int, ...], where: str, name: str) -> np.ndarray:
    """A further label as float64 of ``shape`` (-1: any width), finite."""
    try:
        array = np.asarray(value, dtype=np.float64).reshape(shape)
    except (TypeError, ValueError):
        raise _fail(where, f"label {name!r} has shape {np.shape(value)}, expected {shape}") from None
    if not np.all(np.isfinite(array)):
        raise _fail(where, f"label {name!r} contains NaN or inf")
    return array
