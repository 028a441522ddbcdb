"""Readers that turn QM data of other formats into validated :class:`Frame` streams.

Supported sources (``read_source`` picks by path):

* DeePMD-kit npy systems: a folder with ``type.raw``, ``type_map.raw`` and ``set.*/`` folders
  (``coord.npy``, ``box.npy``, ``energy.npy``, ``force.npy``, optional ``virial.npy``; an
  empty ``nopbc`` file for molecules), or a folder holding several such systems.
* Any file ASE can read (extxyz first): energy, forces and stress from the calculator
  results or from ``info``/``arrays`` keys (``energy``, ``REF_energy``, ``forces``, ...).
* ASE databases (``*.db``).
* MD17-style ``*.npz`` (``R``, ``z``, ``E``, ``F``; rMD17's long names too).
* nnpot's own HDF5 files (for merging).

Every reader names the file and frame in its error messages.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import ase.db
import ase.io
import numpy as np
from ase import units
from ase.data import atomic_numbers
from ase.io.formats import UnknownFileTypeError
from ase.stress import voigt_6_to_full_3x3_stress

from nnpot.data.frame import Frame, validate_frame
from nnpot.data.h5format import H5Dataset
from nnpot.errors import DatasetError

__all__ = ["Reader", "READERS", "register_reader", "reader_for", "read_source", "read_deepmd", "read_ase", "read_ase_db", "read_npz", "find_deepmd_systems", "ENERGY_UNITS"]

#: energy units a source may declare, in eV; forces follow as (unit)/Angstrom
ENERGY_UNITS = {"eV": 1.0, "ev": 1.0}
_ENERGY_KEYS = ("energy", "REF_energy", "Energy", "energy_dft", "DFT_energy")
_FORCE_KEYS = ("forces", "REF_forces", "force", "DFT_forces")
_STRESS_KEYS = ("stress", "REF_stress")
_VIRIAL_KEYS = ("virial", "REF_virial")
_UNIT_KEYS = ("energy_unit", "energy_units", "units", "unit")


@dataclass(frozen=True)
class Reader:
    """A source format: its name (recorded in a converted file's provenance) and
    ``read(path, energy_unit) -> frames``."""

    name: str
    read: Callable[[Path, str | None], Iterable[Frame]]


#: readers by file suffix; a folder is a DeePMD-kit system tree, anything else goes to ASE.
#: Adding a format is one reader function and one :func:`register_reader` line.
READERS: dict[str, Reader] = {}
FOLDER_READER = Reader("deepmd-npy", lambda path, unit: read_deepmd(path))
FALLBACK_READER = Reader("ase", lambda path, unit: read_ase(path))


def register_reader(suffixes: Sequence[str], reader: Reader) -> None:
    for suffix in suffixes:
        READERS[suffix.lower()] = reader


def reader_for(path: str | os.PathLike[str]) -> Reader:
    """The reader of ``path``: by what it is (a folder) and its suffix."""
    path = Path(path)
    return FOLDER_READER if path.is_dir() else READERS.get(path.suffix.lower(), FALLBACK_READER)


def read_source(path: str | os.PathLike[str], energy_unit: str | None = None) -> Iterator[Frame]:
    """Frames of one source, the reader chosen from what ``path`` is (:data:`READERS`)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    return iter(reader_for(path).read(path, energy_unit))


def _read_nnpot_h5(path: Path, energy_unit: str | None = None) -> Iterator[Frame]:
    return (validate_frame(f, f"{path}: frame {i}") for i, f in enumerate(H5Dataset(path)))


# --- DeePMD-kit npy -----------------------------------------------------------------------


def find_deepmd_systems(root: Path) -> list[Path]:
    """Every folder under ``root`` (itself included) that holds a ``type.raw``, sorted."""
    root = Path(root)
    if (root / "type.raw").is_file():
        return [root]
    return sorted(p.parent for p in root.rglob("type.raw"))


def read_deepmd(root: str | os.PathLike[str]) -> Iterator[Frame]:
    """Frames of every DeePMD-kit npy system at or under ``root``."""
    root = Path(root)
    systems = find_deepmd_systems(root)
    if not systems:
        raise DatasetError(f"{root}: no DeePMD-kit system found (no type.raw in it or below it)")
    for system in systems:
        yield from _read_deepmd_system(system)


def _load_npy(path: Path, where: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"{where}: cannot read {path.name}: {exc}") from None


#: DeePMD-kit's own label files, read into the frame's fields
_DEEPMD_CORE = {"coord", "box", "energy", "force", "virial"}
#: further DeePMD-kit labels that hold a row per atom (any other is per frame)
DEEPMD_PER_ATOM = {"spin", "force_mag", "aparam", "atomic_dipole", "atomic_polarizability", "atom_ener",
                   "atom_pref", "atomic_population", "efield", "atomic_charge"}


def _further_labels(set_dir: Path, nf: int, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The further label files of a set (spin.npy, fparam.npy, aparam.npy, atomic_dipole.npy,
    ...), kept as per-atom ``[nf, n, k]`` or per-frame ``[nf, k]`` arrays; a file whose size
    fits neither is named on stderr as not kept (a conversion never drops labels silently)."""
    atom, frame = {}, {}
    for f in sorted(set_dir.glob("*.npy")):
        name = f.stem
        if name in _DEEPMD_CORE:
            continue
        arr = _load_npy(f, str(set_dir))
        if arr.size and arr.size % nf == 0 and np.issubdtype(arr.dtype, np.number):
            per = arr.size // nf
            if name in DEEPMD_PER_ATOM and per % n == 0:
                atom[name] = arr.reshape(nf, n, per // n).astype(np.float64)
                continue
            if name not in DEEPMD_PER_ATOM:
                frame[name] = arr.reshape(nf, per).astype(np.float64)
                continue
        print(f"warning: {f}: shape {arr.shape} fits neither {nf} frames x {n} atoms nor {nf} frames; not kept",
              file=sys.stderr)
    return atom, frame


def _read_deepmd_system(system: Path) -> Iterator[Frame]:
    try:
        types = np.loadtxt(system / "type.raw", dtype=np.int64, ndmin=1)
    except ValueError as exc:
        raise DatasetError(f"{system}/type.raw: not a list of integer types: {exc}") from None
    type_map_file = system / "type_map.raw"
    if not type_map_file.is_file():
        raise DatasetError(f"{system}: type_map.raw is missing, so the element of each type is unknown")
    type_map = type_map_file.read_text().split()
    unknown = [s for s in type_map if s not in atomic_numbers or s == "X"]
    if unknown:
        raise DatasetError(f"{type_map_file}: unknown element symbol {unknown[0]!r}")
    if types.size == 0 or types.min() < 0 or types.max() >= len(type_map):
        raise DatasetError(f"{system}/type.raw: types must lie in 0..{len(type_map) - 1} (type_map has {len(type_map)} entries)")
    numbers = np.array([atomic_numbers[type_map[t]] for t in types], dtype=np.int32)
    n = len(types)
    periodic = not (system / "nopbc").exists()
    sets = sorted(p for p in system.glob("set.*") if p.is_dir())
    if not sets:
        raise DatasetError(f"{system}: no set.* folder")
    for set_dir in sets:
        where = str(set_dir)
        arrays = {}
        for key, required in (("coord", True), ("energy", True), ("force", True), ("box", periodic), ("virial", False)):
            f = set_dir / f"{key}.npy"
            if f.is_file():
                arrays[key] = _load_npy(f, where)
            elif required:
                raise DatasetError(f"{where}: {key}.npy is missing")
        nf = arrays["energy"].reshape(-1).shape[0]
        expected = {"coord": n * 3, "force": n * 3, "box": 9, "virial": 9, "energy": 1}
        for key, arr in arrays.items():
            if arr.size != nf * expected[key]:
                raise DatasetError(
                    f"{where}: {key}.npy has shape {arr.shape}, expected {nf} frames x {expected[key]} values "
                    f"for {n} atoms"
                )
        coord = arrays["coord"].reshape(nf, n, 3)
        force = arrays["force"].reshape(nf, n, 3)
        energy = arrays["energy"].reshape(nf)
        box = arrays["box"].reshape(nf, 3, 3) if "box" in arrays else np.zeros((nf, 3, 3))
        virial = arrays["virial"].reshape(nf, 3, 3) if "virial" in arrays else None
        atom_labels, frame_labels = _further_labels(set_dir, nf, n)
        for i in range(nf):
            frame = Frame(
                numbers=numbers,
                positions=coord[i],
                cell=box[i] if periodic else np.zeros((3, 3)),
                pbc=np.full(3, periodic),
                energy=energy[i],
                forces=force[i],
                virial=None if virial is None else virial[i],
                atom_labels={k: v[i] for k, v in atom_labels.items()},
                frame_labels={k: v[i] for k, v in frame_labels.items()},
            )
            yield validate_frame(frame, f"{where}: frame {i}")


# --- ASE files and databases --------------------------------------------------------------


def _check_unit(info: dict, where: str) -> None:
    for key in _UNIT_KEYS:
        if key in info and str(info[key]) not in ENERGY_UNITS:
            raise DatasetError(f"{where}: {key}={info[key]!r}, but nnpot reads energies in eV and forces in eV/Angstrom")


def _labels_from_atoms(atoms, where: str) -> Frame:
    info, arrays = atoms.info, atoms.arrays
    _check_unit(info, where)
    results = dict(getattr(atoms.calc, "results", {}) or {})
    energy = next((info[k] for k in _ENERGY_KEYS if k in info), results.get("energy", results.get("free_energy")))
    forces = next((arrays[k] for k in _FORCE_KEYS if k in arrays), results.get("forces"))
    if energy is None:
        raise DatasetError(f"{where}: no energy (looked for calculator results and info keys {', '.join(_ENERGY_KEYS)})")
    if forces is None:
        raise DatasetError(f"{where}: no forces (looked for calculator results and array keys {', '.join(_FORCE_KEYS)})")
    virial = next((np.asarray(info[k], float) for k in _VIRIAL_KEYS if k in info), None)
    stress = next((info[k] for k in _STRESS_KEYS if k in info), results.get("stress"))
    if virial is None and stress is not None:
        stress = np.asarray(stress, dtype=float)
        if stress.shape == (6,):
            stress = voigt_6_to_full_3x3_stress(stress)
        if stress.shape != (3, 3):
            raise DatasetError(f"{where}: stress has shape {stress.shape}, expected (6,) or (3, 3)")
        volume = abs(np.linalg.det(atoms.cell.array))
        if volume < 1e-6:
            raise DatasetError(f"{where}: stress given for a structure without a cell")
        virial = -stress * volume
    return Frame(
        numbers=atoms.numbers,
        positions=atoms.positions,
        cell=atoms.cell.array,
        pbc=atoms.pbc,
        energy=energy,
        forces=forces,
        virial=virial,
        weight=float(info.get("weight", info.get("config_weight", 1.0))),
    )


def read_ase(path: str | os.PathLike[str], index: str = ":", format: str | None = None) -> Iterator[Frame]:
    """Frames of any file ``ase.io.iread`` understands."""
    path = Path(path)
    try:
        images = ase.io.iread(path, index=index, format=format)
        for i, atoms in enumerate(images):
            yield validate_frame(_labels_from_atoms(atoms, f"{path}: frame {i}"), f"{path}: frame {i}")
    except DatasetError:
        raise
    except (ValueError, KeyError, IndexError, OSError, StopIteration, AssertionError, TypeError,
            UnknownFileTypeError) as exc:
        raise DatasetError(f"{path}: ASE cannot read it: {type(exc).__name__}: {exc}") from None


def read_ase_db(path: str | os.PathLike[str]) -> Iterator[Frame]:
    """Frames of every row of an ASE database (energy/forces/stress from the row's results)."""
    path = Path(path)
    try:
        db = ase.db.connect(str(path), create_indices=False)
        rows = list(db.select())
    except Exception as exc:  # sqlite3 and json errors have no common base
        raise DatasetError(f"{path}: not a readable ASE database: {exc}") from None
    for i, row in enumerate(rows):
        where = f"{path}: row {row.id}"
        atoms = row.toatoms()
        atoms.info.update(row.get("key_value_pairs", {}))
        yield validate_frame(_labels_from_atoms(atoms, where), where)


# --- MD17-style npz -----------------------------------------------------------------------

_NPZ_KEYS = {
    "R": ("R", "coords", "positions"),
    "z": ("z", "nuclear_charges", "numbers"),
    "E": ("E", "energies", "energy"),
    "F": ("F", "forces"),
}


def read_npz(path: str | os.PathLike[str], energy_unit: str | None = None) -> Iterator[Frame]:
    """Frames of an MD17/rMD17-style npz (non-periodic molecules of one composition).

    Energies and forces must be in eV unless ``energy_unit`` (or a ``units`` entry in the file)
    says otherwise; ``"kcal/mol"`` and ``"Hartree"`` are converted, anything else is an error.
    """
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        keys = set(data.files)
    except (ValueError, OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable npz file: {exc}") from None
    found = {}
    for key, names in _NPZ_KEYS.items():
        name = next((n for n in names if n in keys), None)
        if name is None:
            raise DatasetError(f"{path}: missing key {key!r} (accepted names: {', '.join(names)}); found {sorted(keys)}")
        found[key] = np.asarray(data[name])
    unit = energy_unit or (str(data["units"]) if "units" in keys else "eV")
    scale = {"eV": 1.0, "kcal/mol": units.kcal / units.mol, "Hartree": units.Hartree}.get(unit)
    if scale is None:
        raise DatasetError(f"{path}: energy unit {unit!r} is not known (use eV, kcal/mol or Hartree)")
    R, z, E, F = found["R"], found["z"].reshape(-1), found["E"].reshape(-1), found["F"]
    nf = E.shape[0]
    if R.shape != (nf, len(z), 3) or F.shape != (nf, len(z), 3):
        raise DatasetError(f"{path}: R {R.shape} and F {F.shape} must both be ({nf}, {len(z)}, 3) to match E and z")
    for i in range(nf):
        frame = Frame(
            numbers=z.astype(np.int32) if np.issubdtype(z.dtype, np.integer) else z,
            positions=R[i],
            cell=np.zeros((3, 3)),
            pbc=np.zeros(3, bool),
            energy=E[i] * scale,
            forces=F[i] * scale,
        )
        yield validate_frame(frame, f"{path}: frame {i}")


register_reader((".h5", ".hdf5"), Reader("nnpot-h5", _read_nnpot_h5))
register_reader((".npz",), Reader("npz", lambda path, unit: read_npz(path, energy_unit=unit)))
register_reader((".db",), Reader("ase-db", lambda path, unit: read_ase_db(path)))
