"""Write frames as extended XYZ that ASE (and every other extxyz reader) understands.

ASE's own writer prints coordinates with 8 decimals, which loses bits of small force
components; this writer prints every float with 17 significant digits so a round trip
through text is exact in float64.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from nnpot.atomic import atomic_path
from nnpot.data.frame import Frame

__all__ = ["write_extxyz"]


def _num(x: float) -> str:
    return repr(float(x))  # shortest string that reads back to the same float64


def _header(frame: Frame) -> str:
    parts = []
    if np.any(frame.pbc) or np.any(frame.cell):
        parts.append('Lattice="' + " ".join(_num(v) for v in np.asarray(frame.cell).reshape(-1)) + '"')
    parts.append("Properties=species:S:1:pos:R:3:forces:R:3")
    parts.append(f"energy={_num(frame.energy)}")
    if frame.virial is not None:
        # 3x3 info values are column-major in extxyz (ASE and QUIP read them that way)
        parts.append('virial="' + " ".join(_num(v) for v in np.asarray(frame.virial).reshape(-1, order="F")) + '"')
    if frame.weight != 1.0:
        parts.append(f"weight={_num(frame.weight)}")
    parts.append('pbc="' + " ".join("T" if p else "F" for p in frame.pbc) + '"')
    parts.append(f"written_by={WRITER}")  # what lets a later --force replace this file, and nothing else
    return " ".join(parts)


WRITER = "nnpot"


def is_nnpot_extxyz(path: Path) -> bool:
    """Whether ``path`` is an extxyz file :func:`write_extxyz` wrote (its first header says so)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).split(b"\n")
    except OSError:
        return False
    return len(head) > 1 and f"written_by={WRITER}".encode() in head[1]


def write_extxyz(frames: Iterable[Frame], path: str | os.PathLike[str]) -> int:
    """Write ``frames`` to ``path`` atomically; return how many were written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        for frame in frames:
            fh.write(f"{frame.n_atoms}\n{_header(frame)}\n")
            for z, r, f in zip(frame.numbers, frame.positions, frame.forces):
                fh.write(f"{chemical_symbols[z]} " + " ".join(_num(v) for v in (*r, *f)) + "\n")
            n += 1
    return n
