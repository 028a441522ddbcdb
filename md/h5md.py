"""H5MD trajectory output (de Buyl, Colberg, Hoefling, Comput. Phys. Commun. 185, 1546 (2014)).

Layout written (H5MD 1.1): ``/h5md`` (version, author, creator), ``/particles/all`` with
``species`` (atomic numbers), ``box`` (``dimension``, ``boundary``, time-dependent ``edges``
holding the 3x3 cell, rows are vectors), and time-dependent ``position``, ``velocity`` and
``force`` (each a group of ``step``, ``time``, ``value``), plus ``/observables`` with the
potential and kinetic energy per frame. Units: Angstrom, ps, Angstrom/ps, eV/Angstrom, eV.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import h5py
import numpy as np
from ase import units

from nnpot._version import __version__

if TYPE_CHECKING:
    from ase import Atoms


__all__ = ["H5MDWriter"]

_PS = 1000 * units.fs


class H5MDWriter:
    """Appends frames of ``atoms`` (with momenta and a calculator holding energy and forces)."""

    def __init__(self, path: str | os.PathLike[str], atoms: Atoms, author: str = "nnpot user"):
        self.fh = h5py.File(path, "w")
        h5 = self.fh.create_group("h5md")
        h5.attrs["version"] = np.array([1, 1], dtype=np.int32)
        h5.create_group("author").attrs["name"] = author
        creator = h5.create_group("creator")
        creator.attrs["name"], creator.attrs["version"] = "nnpot", __version__
        part = self.fh.create_group("particles/all")
        part.create_dataset("species", data=np.asarray(atoms.numbers, dtype=np.int32))
        box = part.create_group("box")
        box.attrs["dimension"] = 3
        box.attrs["boundary"] = np.array([b"periodic" if p else b"none" for p in atoms.pbc])
        n = len(atoms)
        self.elements = {
            "particles/all/box/edges": ((3, 3), "Angstrom"),
            "particles/all/position": ((n, 3), "Angstrom"),
            "particles/all/velocity": ((n, 3), "Angstrom ps-1"),
            "particles/all/force": ((n, 3), "eV Angstrom-1"),
            "observables/potential_energy": ((), "eV"),
            "observables/kinetic_energy": ((), "eV"),
        }
        for name, (shape, unit) in self.elements.items():
            g = self.fh.create_group(name)
            g.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(256,))
            t = g.create_dataset("time", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(256,))
            t.attrs["unit"] = "ps"
            v = g.create_dataset("value", shape=(0, *shape), maxshape=(None, *shape), dtype=np.float64,
                                 chunks=(max(1, 65536 // max(1, int(np.prod(shape)))), *shape))
            v.attrs["unit"] = unit

    def write(self, atoms: Atoms, step: int, time: float) -> None:
        """Append a frame; ``time`` in ASE units."""
        values = {
            "particles/all/box/edges": atoms.cell.array,
            "particles/all/position": atoms.positions,
            "particles/all/velocity": atoms.get_velocities() * _PS,
            "particles/all/force": atoms.get_forces(),
            "observables/potential_energy": atoms.get_potential_energy(),
            "observables/kinetic_energy": atoms.get_kinetic_energy(),
        }
        for name, value in values.items():
            g = self.fh[name]
            k = g["step"].shape[0]
            for key, item in (("step", step), ("time", time / _PS), ("value", value)):
                g[key].resize(k + 1, axis=0)
                g[key][k] = item
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()
