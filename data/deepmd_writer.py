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

__all__ = ["write_deepmd"]


MARKER = ".nnpot-deepmd-export"  #: written into every folder nnpot exports, so a later --force may replace it


def _is_deepmd_system(path: Path) -> bool:
    """A folder with DeePMD-kit's files only: type.raw, type_map.raw, nopbc and set.* folders."""
    if not path.is_dir() or not (path / "type.raw").is_file():
        return False
    return all(p.name in ("type.raw", "type_map.raw", "nopbc") or (p.is_dir() and p.name.startswith("set."))
               for p in path.iterdir())


def check_export_target(folder: Path, force: bool) -> None:
    """Refuse a target that nnpot must not replace: a file; a non-empty folder unless ``force``;
    even with ``force``, a folder holding anything but DeePMD-kit systems."""
    if folder.exists() and not folder.is_dir():
        raise DatasetError(f"{folder}: exists and is not a folder; choose another output folder")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    if not force:
        raise DatasetError(f"{folder}: the folder exists and is not empty; use a new folder, or --force to replace "
                           "an earlier export (only folders that hold DeePMD-kit systems alone are replaced)")
    foreign = [p.name for p in folder.iterdir() if p.name != MARKER and not _is_deepmd_system(p)]
    if foreign:
        raise DatasetError(f"{folder}: holds {', '.join(sorted(foreign)[:3])}{' ...' if len(foreign) > 3 else ''}, "
                           "which is not a DeePMD-kit system; nnpot replaces only its own exports, even with --force")


def write_deepmd(frames: Iterable[Frame], folder: str | os.PathLike[str], type_map: Sequence[str] | None = None,
                 set_size: int = 5000, dtype: type = np.float64, force: bool = False) -> list[Path]:
    """Write ``frames`` into DeePMD-kit systems under ``folder``, one system per distinct
    (atom order, periodicity); returns the system folders. Written into a temporary folder
    beside ``folder`` and moved into place at the end, so a failure leaves nothing behind.

    ``folder`` must be new or empty; ``force`` replaces an earlier export (a folder that holds
    DeePMD-kit systems and nothing else), never any other folder (:func:`check_export_target`).
    """
    folder = Path(os.path.abspath(folder))
    check_export_target(folder, force)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        systems = _write_systems(frames, folder, tmp, type_map, set_size, dtype)
        (tmp / MARKER).write_text("written by nnpot data export\n")
        _swap_in(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nnpot made it in this call
    return systems


def _swap_in(tmp: Path, folder: Path) -> None:
    """Move ``tmp`` to ``folder``; an earlier export there (already checked) is moved aside first
    and removed only once the new one is in place."""
    old = None
    if folder.is_dir() and any(folder.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
        os.replace(folder, old / "export")
    elif folder.is_dir():
        folder.rmdir()  # empty
    os.replace(tmp, folder)
    if old is not None:
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
        systems.append(folder / sysdir.name)
    return systems
