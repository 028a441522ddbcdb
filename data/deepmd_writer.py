"""Write frames as DeePMD-kit npy systems, so the same data can train DeePMD-kit side by side."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from nnpot.data.frame import Frame
from nnpot.errors import DatasetError
from nnpot.outputs import check_output, owned_by_manifest, read_manifest, write_manifest

__all__ = ["write_deepmd"]


def check_export_target(folder: Path, force: bool, inputs: Sequence[str | os.PathLike[str]] = ()) -> list[str]:
    """Refuse a target that nnpot must not write into: a file; a non-empty folder unless
    ``force``; with ``force``, a folder without nnpot's manifest of an earlier export; any folder
    holding one of ``inputs``. Returns the earlier export's entries (to be replaced)."""
    if folder.exists() and not folder.is_dir():
        raise DatasetError(f"{folder}: exists and is not a folder; choose another output folder")
    if folder.is_dir() and not any(folder.iterdir()):
        check_output(folder, True, inputs)  # an empty folder is free to fill; only the inputs matter
        return []
    check_output(folder, force, inputs, owned=owned_by_manifest, what="output")
    return (read_manifest(folder) or []) if folder.is_dir() else []


def write_deepmd(frames: Iterable[Frame], folder: str | os.PathLike[str], type_map: Sequence[str] | None = None,
                 set_size: int = 5000, dtype: type = np.float64, force: bool = False,
                 inputs: Sequence[str | os.PathLike[str]] = ()) -> list[Path]:
    """Write ``frames`` into DeePMD-kit systems under ``folder``, one system per distinct
    (atom order, periodicity); returns the system folders. Written into a temporary folder
    beside ``folder`` and moved into place at the end, so a failure leaves nothing behind.

    ``folder`` must be new or empty; ``force`` replaces the systems of an earlier export there
    (those its manifest lists) and leaves anything else in the folder alone
    (:func:`check_export_target`); ``inputs`` (the source files) are never written over.
    """
    folder = Path(os.path.abspath(folder))
    earlier = check_export_target(folder, force, inputs)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        systems = _write_systems(frames, folder, tmp, type_map, set_size, dtype)
        clash = [p.name for p in systems if (folder / p.name).exists() and p.name not in earlier]
        if clash:
            raise DatasetError(f"{folder}: {', '.join(clash)} exists and is not from an earlier nnpot export; "
                               "choose another output folder")
        _swap_in(tmp, folder, earlier, [p.name for p in systems])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nnpot made it in this call
    return systems


def _swap_in(tmp: Path, folder: Path, earlier: Sequence[str], names: Sequence[str]) -> None:
    """Move the new systems from ``tmp`` into ``folder``. An earlier export's systems there are
    moved aside first and removed once the new ones are in place; nothing else is touched."""
    if not folder.exists():
        write_manifest(tmp, names, "nnpot data export")
        os.replace(tmp, folder)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
    try:
        for name in earlier:
            if (folder / name).exists():
                os.replace(folder / name, old / name)
        for name in names:
            os.replace(tmp / name, folder / name)
        write_manifest(folder, names, "nnpot data export")
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _write_systems(frames: Iterable[Frame], folder: Path, tmp: Path, type_map: Sequence[str] | None,
                   set_size: int, dtype) -> list[Path]:
    groups: dict[tuple, list[Frame]] = {}
    for f in frames:
        groups.setdefault((tuple(int(z) for z in f.numbers), bool(np.any(f.pbc))), []).append(f)
    if not groups:
        raise DatasetError(f"{folder}: no frames to write")
    symbols = type_map or sorted({chemical_symbols[z] for key in groups for z in key[0]})
    index = {s: k for k, s in enumerate(symbols)}
    systems = []
    for n, ((numbers, periodic), group) in enumerate(groups.items()):
        sysdir = tmp / f"system_{n:03d}"
        sysdir.mkdir(parents=True)
        try:
            types = [index[chemical_symbols[z]] for z in numbers]
        except KeyError as exc:
            raise DatasetError(f"{folder}: element {exc} is not in type_map {list(symbols)}") from None
        (sysdir / "type.raw").write_text("\n".join(map(str, types)) + "\n")
        (sysdir / "type_map.raw").write_text("\n".join(symbols) + "\n")
        if not periodic:
            (sysdir / "nopbc").write_text("")
        for k in range(0, len(group), set_size):
            chunk = group[k:k + set_size]
            s = sysdir / f"set.{k // set_size:03d}"
            s.mkdir()
            np.save(s / "coord.npy", np.stack([f.positions.reshape(-1) for f in chunk]).astype(dtype))
            np.save(s / "force.npy", np.stack([f.forces.reshape(-1) for f in chunk]).astype(dtype))
            np.save(s / "energy.npy", np.array([f.energy for f in chunk], dtype=dtype))
            if periodic:
                np.save(s / "box.npy", np.stack([f.cell.reshape(-1) for f in chunk]).astype(dtype))
            if all(f.virial is not None for f in chunk):
                np.save(s / "virial.npy", np.stack([f.virial.reshape(-1) for f in chunk]).astype(dtype))
            for kind in ("atom_labels", "frame_labels"):  # spin, fparam, aparam, ...: back to their files
                for name in getattr(chunk[0], kind):
                    np.save(s / f"{name}.npy", np.stack([getattr(f, kind)[name].reshape(-1) for f in chunk]).astype(dtype))
        systems.append(folder / sysdir.name)
    return systems
