"""Write frames as DeePMD-kit npy systems, so the same data can train DeePMD-kit side by side."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from nnpot.data.frame import Frame
from nnpot.errors import DatasetError

__all__ = ["write_deepmd"]


def write_deepmd(frames: Iterable[Frame], folder: str | os.PathLike[str], type_map: Sequence[str] | None = None,
                 set_size: int = 5000, dtype=np.float64) -> list[Path]:
    """Write ``frames`` into DeePMD-kit systems under ``folder``, one system per distinct
    (atom order, periodicity); returns the system folders. Written into a temporary folder and
    moved into place at the end."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
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
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return systems
