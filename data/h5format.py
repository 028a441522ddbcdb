"""The nnpot HDF5 dataset format: reading (lazy) and writing (atomic, appendable).

Schema, version 1 (all arrays chunked and compressed)::

    /numbers        [n_atoms_total]       int32    atomic numbers
    /positions      [n_atoms_total, 3]    float64  Angstrom
    /forces         [n_atoms_total, 3]    float64  eV/Angstrom
    /frame_offsets  [n_frames + 1]        int64    frame f owns atoms offsets[f]:offsets[f+1]
    /energy         [n_frames]            float64  eV
    /cell           [n_frames, 3, 3]      float64  Angstrom, rows are cell vectors
    /pbc            [n_frames, 3]         bool
    /weight         [n_frames]            float64  loss weight
    /virial         [n_frames, 3, 3]      float64  eV (only if some frame has one)
    /has_virial     [n_frames]            bool     (only with /virial)
    /atom_labels/NAME   [n_atoms_total, k]  float64  further per-atom labels (optional; DeePMD-kit's
                                                     spin, force_mag, aparam, atomic_dipole, ...)
    /frame_labels/NAME  [n_frames, k]       float64  further per-frame labels (optional; fparam,
                                                     dipole, polarizability, ...)

Every frame of a file carries the same further labels (a file is one kind of data).

File attributes: ``format = "nnpot-dataset"``, ``format_version = 1``, ``length_unit``,
``energy_unit``, ``force_unit``, ``virial_unit``, ``sources`` (JSON list of provenance
records), ``nnpot_version``.

Per-atom arrays are concatenated so frames of any size and composition share one file;
per-frame arrays are small and are read into memory when the file is opened, per-atom arrays
are read one frame at a time, so files larger than memory work.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from nnpot._version import __version__
from nnpot.atomic import atomic_path, write_isolated
from nnpot.data.frame import MAX_Z, Frame, periodic_volume, validate_frame
from nnpot.errors import DatasetError, FrameIndexError

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "UNITS", "H5Dataset", "write_h5", "append_h5"]

FORMAT_NAME = "nnpot-dataset"
FORMAT_VERSION = 1
UNITS = {"length_unit": "Angstrom", "energy_unit": "eV", "force_unit": "eV/Angstrom", "virial_unit": "eV"}
_ATOM_CHUNK = 4096  # rows per chunk of a per-atom array (96 KiB of float64 x3): small chunks keep
# random access cheap, since every read decompresses whole chunks
_CACHE_BYTES = 32 * 2**20  # HDF5 chunk cache per open dataset
_FRAME_CHUNK = 4096
_COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
_REQUIRED = ("numbers", "positions", "forces", "frame_offsets", "energy", "cell", "pbc")


def is_nnpot_h5(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an nnpot dataset file (what ``--force`` may replace)."""
    try:
        with h5py.File(path, "r") as fh:
            return _attr(fh.attrs.get("format", "")) == FORMAT_NAME
    except (OSError, ValueError, TypeError):
        return False


class H5Dataset(Sequence[Frame]):
    """Random access to the frames of an nnpot HDF5 file, read lazily.

    ``len(ds)`` is the number of frames and ``ds[i]`` a :class:`Frame`. The file handle is
    opened on first use in each process, so the object can be handed to DataLoader workers.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        where = str(self.path)
        if self.path.is_dir():
            raise DatasetError(f"{where}: is a folder, not an nnpot HDF5 file; convert it first: "
                               f"nnpot data convert {where} -o data.h5")
        if not self.path.is_file():
            raise DatasetError(f"{where}: no such file")
        try:
            with h5py.File(self.path, "r") as fh:
                self.attrs = {k: _attr(v) for k, v in fh.attrs.items()}
                self._check_header(fh, where)
                _check_shapes(fh, where)  # before anything is read: declared sizes must match
                self.frame_offsets = np.asarray(fh["frame_offsets"][:], dtype=np.int64)
                self.energy = np.asarray(fh["energy"][:], dtype=np.float64)
                self.cell = np.asarray(fh["cell"][:], dtype=np.float64)
                self.pbc = np.asarray(fh["pbc"][:], dtype=bool)
                self.weight = np.asarray(fh["weight"][:], dtype=np.float64) if "weight" in fh else np.ones(len(self.energy))
                self.has_virial = np.asarray(fh["has_virial"][:], bool) if "has_virial" in fh else None
                n_atoms_total = fh["numbers"].shape[0]
                self.atom_label_names = sorted(fh["atom_labels"]) if "atom_labels" in fh else []
                self.frame_labels = ({k: np.asarray(v[:], dtype=np.float64) for k, v in fh["frame_labels"].items()}
                                     if "frame_labels" in fh else {})
        except _READ_ERRORS as exc:
            raise DatasetError(f"{where}: not a readable nnpot HDF5 file (truncated or corrupt?): {exc}") from None
        n = len(self.energy)
        offsets = self.frame_offsets
        if offsets[0] != 0 or offsets[-1] != n_atoms_total or np.any(np.diff(offsets) <= 0):
            raise DatasetError(f"{where}: /frame_offsets is inconsistent with {n} frames of {n_atoms_total} atoms")
        self._fh: h5py.File | None = None
        self._ds: dict = {}
        self._pid = -1

    @staticmethod
    def _check_header(fh: h5py.File, where: str) -> None:
        fmt = _attr(fh.attrs.get("format", ""))
        if fmt != FORMAT_NAME:
            raise DatasetError(f"{where}: not an nnpot dataset (format attribute is {fmt!r})")
        version = int(fh.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise DatasetError(
                f"{where}: dataset format version {version} is not supported by this nnpot "
                f"(reads version {FORMAT_VERSION})"
            )
        for key, unit in UNITS.items():
            found = _attr(fh.attrs.get(key, unit))
            if found != unit:
                raise DatasetError(f"{where}: {key} is {found!r}, nnpot datasets hold {unit!r}")
        missing = [k for k in _REQUIRED if k not in fh]
        if missing:
            raise DatasetError(f"{where}: missing dataset(s) {', '.join('/' + k for k in missing)}")

    def _file(self) -> h5py.File:
        if self._fh is None or self._pid != os.getpid():
            try:
                self._fh = h5py.File(self.path, "r", rdcc_nbytes=_CACHE_BYTES, rdcc_nslots=10007)
                self._pid = os.getpid()
                # dataset handles are kept: the chunk cache lives and dies with them
                self._ds = {k: self._fh[k] for k in ("numbers", "positions", "forces")
                            + (("virial",) if "virial" in self._fh else ())}
                self._ds.update({f"atom_labels/{k}": self._fh["atom_labels"][k] for k in self.atom_label_names})
            except _READ_ERRORS as exc:
                raise DatasetError(f"{self.path}: unreadable (changed, truncated or corrupt?): {exc}") from None
        return self._fh

    def close(self) -> None:
        if self._fh is not None and self._pid == os.getpid():
            self._fh.close()
        self._fh, self._ds = None, {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fh"], state["_pid"], state["_ds"] = None, -1, {}
        return state

    def __len__(self) -> int:
        return len(self.energy)

    @property
    def n_atoms(self) -> np.ndarray:
        """``[n_frames]`` number of atoms per frame."""
        return np.diff(self.frame_offsets)

    @property
    def sources(self) -> list:
        return json.loads(self.attrs.get("sources", "[]"))

    def numbers(self) -> np.ndarray:
        """All atomic numbers, concatenated (``[n_atoms_total]``; small enough to load)."""
        try:
            return np.asarray(self._file()["numbers"][:])
        except _READ_ERRORS as exc:
            raise DatasetError(f"{self.path}: /numbers is unreadable (truncated or corrupt file?): {exc}") from None

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise FrameIndexError(f"{self.path}: frame {index} is out of range for its {len(self)} frames")
        a, b = int(self.frame_offsets[i]), int(self.frame_offsets[i + 1])
        self._file()
        ds = self._ds
        try:
            virial = None
            if self.has_virial is not None and self.has_virial[i]:
                virial = np.asarray(ds["virial"][i])
            return Frame(
                numbers=np.asarray(ds["numbers"][a:b]),
                positions=np.asarray(ds["positions"][a:b]),
                cell=self.cell[i],
                pbc=self.pbc[i],
                energy=float(self.energy[i]),
                forces=np.asarray(ds["forces"][a:b]),
                virial=virial,
                weight=float(self.weight[i]),
                atom_labels={k: np.asarray(ds[f"atom_labels/{k}"][a:b]) for k in self.atom_label_names},
                frame_labels={k: v[i] for k, v in self.frame_labels.items()},
            )
        except _READ_ERRORS as exc:
            raise DatasetError(f"{self.path}: frame {i}: unreadable (truncated or corrupt file?): {exc}") from None

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]

    def problems(self, block_atoms: int = 1 << 20) -> dict[int, str]:
        try:
            return self._problems(block_atoms)
        except _READ_ERRORS as exc:
            raise DatasetError(f"{self.path}: unreadable (truncated or corrupt file?): {exc}") from None

    def _problems(self, block_atoms: int) -> dict[int, str]:
        """What no model can train on, per bad frame (index -> problem):
        non-finite positions, forces, energies, cells, virials or weights, negative weights,
        atomic numbers outside the periodic table, and singular periodic cells. Per-atom
        arrays are read in blocks of about ``block_atoms`` atoms."""
        found: dict[int, str] = {}

        def note(frames, problem: str) -> None:
            for i in np.atleast_1d(frames):
                found.setdefault(int(i), problem)

        note(np.flatnonzero(~np.isfinite(self.energy)), "energy is NaN or inf")
        note(np.flatnonzero(~np.isfinite(self.cell).all(axis=(1, 2))), "cell contains NaN or inf")
        note(np.flatnonzero(~np.isfinite(self.weight) | (self.weight < 0)), "weight must be a finite number >= 0")
        finite_cells = np.isfinite(self.cell).all(axis=(1, 2))
        singular = [i for i in np.flatnonzero(finite_cells) if periodic_volume(self.cell[i], self.pbc[i]) < 1e-6]
        note(singular, "the cell is singular: its periodic vectors span no volume (area, length)")
        fh = self._file()
        start = 0
        while start < len(self):
            stop = int(np.searchsorted(self.frame_offsets, self.frame_offsets[start] + block_atoms, side="right"))
            stop = min(max(stop - 1, start + 1), len(self))
            a, b = int(self.frame_offsets[start]), int(self.frame_offsets[stop])
            frame_of = lambda atoms: np.searchsorted(self.frame_offsets, a + atoms, side="right") - 1  # noqa: E731
            z = np.asarray(fh["numbers"][a:b])
            note(frame_of(np.flatnonzero((z < 1) | (z > MAX_Z))), "atomic number outside the periodic table (1-118)")
            for key in ("positions", "forces"):
                note(frame_of(np.flatnonzero(~np.isfinite(np.asarray(fh[key][a:b])).all(axis=1))),
                     f"{key} contain NaN or inf")
            if self.has_virial is not None and self.has_virial[start:stop].any():
                vir = np.asarray(fh["virial"][start:stop])
                bad = ~np.isfinite(vir.reshape(len(vir), -1)).all(axis=1) & self.has_virial[start:stop]
                note(start + np.flatnonzero(bad), "virial contains NaN or inf")
            start = stop
        return dict(sorted(found.items()))

    def check_not_empty(self) -> H5Dataset:
        """Raise :class:`~nnpot.errors.DatasetError` when the file holds no frames."""
        if len(self) == 0:
            raise DatasetError(f"{self.path}: holds no frames")
        return self

    def check(self) -> H5Dataset:
        """Raise :class:`~nnpot.errors.DatasetError` on the first of :meth:`problems` (and say
        how many frames are bad); return the dataset otherwise."""
        self.check_not_empty()
        bad = self.problems()
        if bad:
            i, problem = next(iter(bad.items()))
            more = f" ({len(bad)} bad frames in all; nnpot data info lists them)" if len(bad) > 1 else ""
            raise DatasetError(f"{self.path}: frame {i}: {problem}{more}")
        return self


#: what h5py raises on a damaged file
_READ_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError)


def _check_shapes(fh: h5py.File, where: str) -> None:
    """Every array's declared shape agrees with the others and is backed by stored data, so a
    crafted header cannot make the reader allocate more than the file holds."""
    n_atoms = fh["numbers"].shape[0] if fh["numbers"].ndim == 1 else -1
    n = fh["energy"].shape[0] if fh["energy"].ndim == 1 else -1
    expected = {"numbers": (n_atoms,), "positions": (n_atoms, 3), "forces": (n_atoms, 3), "energy": (n,),
                "frame_offsets": (n + 1,), "cell": (n, 3, 3), "pbc": (n, 3), "weight": (n,), "has_virial": (n,),
                "virial": (n, 3, 3)}
    if n_atoms < 0 or n < 0 or n > n_atoms:
        raise DatasetError(f"{where}: /numbers {fh['numbers'].shape} and /energy {fh['energy'].shape} do not describe "
                           "frames of at least one atom")
    for group, rows in (("atom_labels", n_atoms), ("frame_labels", n)):
        for name, dset in (fh[group].items() if group in fh else ()):
            if not isinstance(dset, h5py.Dataset) or dset.ndim != 2 or dset.shape[0] != rows:
                raise DatasetError(f"{where}: /{group}/{name} must be a [{rows}, k] array")
            _check_stored(dset, where)
    for key, shape in expected.items():
        if key not in fh:
            continue
        dset = fh[key]
        if dset.shape != shape:
            raise DatasetError(f"{where}: /{key} has shape {dset.shape}, expected {shape}")
        _check_stored(dset, where)
    for key in ("numbers", "frame_offsets"):  # indices: whole numbers only
        if fh[key].dtype.kind not in "iu":
            raise DatasetError(f"{where}: /{key} holds {fh[key].dtype} values; nnpot files store them as integers "
                               "(a crafted or foreign file?)")


def _check_stored(dset: h5py.Dataset, where: str) -> None:
    """Refuse a dataset whose declared size is not backed by data in the file (unwritten chunks
    of a crafted or truncated file)."""
    if dset.size == 0:
        return
    if dset.chunks is None:
        stored, needed = dset.id.get_storage_size(), dset.size * dset.dtype.itemsize
        ok = stored >= needed or dset.id.get_offset() is None and stored > 0
    else:
        needed = int(np.prod([-(-s // c) for s, c in zip(dset.shape, dset.chunks)]))
        ok = dset.id.get_num_chunks() >= needed
    if not ok:
        raise DatasetError(f"{where}: /{dset.name.lstrip('/')} declares {dset.shape} values that the file does not "
                           "hold (truncated or crafted file)")


def _attr(value):
    return value.decode() if isinstance(value, bytes) else value


class _Writer:
    """Appends frames to an open h5py file in blocks (keeps memory flat for huge sources)."""

    def __init__(self, fh: h5py.File, block: int = 2048):
        self.fh = fh
        self.block = block
        self.buffer: list[Frame] = []
        if "energy" not in fh:
            self._create()

    def _create(self) -> None:
        fh = self.fh
        for name, shape, dtype, chunk in (
            ("numbers", (0,), np.int32, (_ATOM_CHUNK,)),
            ("positions", (0, 3), np.float64, (_ATOM_CHUNK, 3)),
            ("forces", (0, 3), np.float64, (_ATOM_CHUNK, 3)),
            ("energy", (0,), np.float64, (_FRAME_CHUNK,)),
            ("cell", (0, 3, 3), np.float64, (_FRAME_CHUNK, 3, 3)),
            ("pbc", (0, 3), bool, (_FRAME_CHUNK, 3)),
            ("weight", (0,), np.float64, (_FRAME_CHUNK,)),
        ):
            fh.create_dataset(name, shape=shape, maxshape=(None,) + shape[1:], dtype=dtype, chunks=chunk, **_COMPRESSION)
        fh.create_dataset("frame_offsets", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(_FRAME_CHUNK,))

    def add(self, frame: Frame) -> None:
        self.buffer.append(frame)
        if len(self.buffer) >= self.block:
            self.flush()

    def _labels(self, frames: list[Frame], n_old: int, per_atom: dict, per_frame: dict) -> None:
        """Further labels: every frame of a file carries the same names (made at the first write)."""
        fh = self.fh
        for group in ("atom_labels", "frame_labels"):
            target = per_atom if group == "atom_labels" else per_frame
            have = sorted(fh[group]) if group in fh else ([] if n_old else None)
            for k, f in enumerate(frames):
                names = sorted(getattr(f, group))
                have = names if have is None else have
                if names != have:
                    raise DatasetError(f"frame {n_old + k} carries {group.replace('_', ' ')} {names or 'none'}, the "
                                       f"frames before it {have or 'none'}; keep data with different labels in "
                                       "separate files")
            for name in have or []:
                stack = np.concatenate if group == "atom_labels" else np.stack
                values = stack([getattr(f, group)[name] for f in frames])
                path = f"{group}/{name}"
                if path not in fh:
                    rows = _ATOM_CHUNK if group == "atom_labels" else _FRAME_CHUNK
                    fh.create_dataset(path, shape=(0, values.shape[1]), maxshape=(None, values.shape[1]),
                                      dtype=np.float64, chunks=(rows, values.shape[1]), **_COMPRESSION)
                if fh[path].shape[1] != values.shape[1]:
                    raise DatasetError(f"label {name!r} has {values.shape[1]} values per row here, "
                                       f"{fh[path].shape[1]} before")
                target[path] = values

    def flush(self) -> None:
        if not self.buffer:
            return
        fh, frames = self.fh, self.buffer
        n_old = fh["energy"].shape[0]
        if any(f.virial is not None for f in frames) and "virial" not in fh:
            fh.create_dataset("virial", data=np.zeros((n_old, 3, 3)), maxshape=(None, 3, 3), chunks=(_FRAME_CHUNK, 3, 3), **_COMPRESSION)
            fh.create_dataset("has_virial", data=np.zeros(n_old, bool), maxshape=(None,), chunks=(_FRAME_CHUNK,), **_COMPRESSION)
        per_atom = {
            "numbers": np.concatenate([f.numbers for f in frames]),
            "positions": np.concatenate([f.positions for f in frames]),
            "forces": np.concatenate([f.forces for f in frames]),
        }
        per_frame = {
            "energy": np.array([f.energy for f in frames]),
            "cell": np.stack([f.cell for f in frames]),
            "pbc": np.stack([f.pbc for f in frames]),
            "weight": np.array([f.weight for f in frames]),
        }
        if "virial" in fh:
            per_frame["virial"] = np.stack([f.virial if f.virial is not None else np.zeros((3, 3)) for f in frames])
            per_frame["has_virial"] = np.array([f.virial is not None for f in frames])
        self._labels(frames, n_old, per_atom, per_frame)
        end = int(fh["frame_offsets"][-1])
        offsets = end + np.cumsum([f.n_atoms for f in frames])
        per_frame_offsets = {"frame_offsets": offsets}
        for group in (per_atom, per_frame, per_frame_offsets):
            for name, values in group.items():
                ds = fh[name]
                old = ds.shape[0]
                ds.resize((old + len(values),) + ds.shape[1:])
                ds[old:] = values
        self.buffer = []


def _stamp(fh: h5py.File, sources: list[dict]) -> None:
    fh.attrs["format"] = FORMAT_NAME
    fh.attrs["format_version"] = FORMAT_VERSION
    for key, unit in UNITS.items():
        fh.attrs[key] = unit
    fh.attrs["sources"] = json.dumps(sources)
    fh.attrs["nnpot_version"] = __version__


def write_h5(
    frames: Iterable[Frame],
    path: str | os.PathLike[str],
    sources: list[dict] | None = None,
    validate: bool = True,
    progress: bool = False,
) -> int:
    """Write ``frames`` to a new nnpot HDF5 file atomically; return the number of frames.

    Nothing is left at ``path`` if a frame fails validation or the source breaks.
    """
    def work() -> int:
        with h5py.File(tmp, "w") as fh:
            n = _write_frames(fh, frames, str(path), validate, progress)
            if n == 0:
                raise DatasetError(f"{path}: no frames to write (the sources are empty)")
            _stamp(fh, sources or [])
        return n

    with atomic_path(path) as tmp:
        return write_isolated(work, path)


def append_h5(
    frames: Iterable[Frame],
    path: str | os.PathLike[str],
    sources: list[dict] | None = None,
    validate: bool = True,
    progress: bool = False,
) -> int:
    """Append ``frames`` to an existing nnpot file; on failure the file is unchanged."""
    existing = H5Dataset(path)  # validates the header
    old_sources = existing.sources
    def work() -> int:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as fh:
            n = _write_frames(fh, frames, str(path), validate, progress)
            _stamp(fh, old_sources + (sources or []))
        return n

    with atomic_path(path) as tmp:
        return write_isolated(work, path)


def _write_frames(fh: h5py.File, frames: Iterable[Frame], where: str, validate: bool, progress: bool) -> int:
    writer = _Writer(fh)
    n = 0
    for frame in tqdm(frames, desc=f"writing {Path(where).name}", unit=" frames", disable=not progress):
        writer.add(validate_frame(frame, f"{where}: frame {n}") if validate else frame)
        n += 1
    writer.flush()
    return n


class DatasetUnion(Sequence[Frame]):
    """Several datasets read as one: frame ``i`` runs through them in order (e.g. water boxes
    and a molecule set in one training run)."""

    def __init__(self, datasets: Sequence[H5Dataset]):
        if not datasets:
            raise DatasetError("no dataset given")
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(ds) for ds in self.datasets])
        self.path = ", ".join(str(ds.path) for ds in self.datasets)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = int(index) + (len(self) if int(index) < 0 else 0)
        if not 0 <= i < len(self):
            raise FrameIndexError(f"{self.path}: frame {index} is out of range for their {len(self)} frames")
        d = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.datasets[d][i - int(self.offsets[d])]

    @property
    def n_atoms(self) -> np.ndarray:
        return np.concatenate([ds.n_atoms for ds in self.datasets])

    def numbers(self) -> np.ndarray:
        return np.concatenate([ds.numbers() for ds in self.datasets])

    def check(self) -> DatasetUnion:
        for ds in self.datasets:
            ds.check()
        return self


def open_datasets(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> H5Dataset | DatasetUnion:
    """One dataset file, or several read as one (:class:`DatasetUnion`)."""
    if isinstance(paths, (str, os.PathLike)):
        return H5Dataset(paths)
    paths = list(paths)
    return H5Dataset(paths[0]) if len(paths) == 1 else DatasetUnion([H5Dataset(p) for p in paths])
