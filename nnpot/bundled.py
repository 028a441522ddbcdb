"""Datasets that ship with nnpot, found through ``importlib.resources`` so that an installed
nnpot (not only a source checkout) has them.

* ``water``: 320 frames of liquid water, 192 atoms each (O64 H128, periodic 12.445 A cubic
  box), energies and forces from DFT; DeePMD-kit's examples/water data
  (github.com/deepmodeling/deepmd-kit, LGPL-3.0).
* ``molecule_C3H3O4``: 485 frames of a 10-atom C3H3O4 molecule in vacuum (non-periodic),
  energies and forces from the methane-combustion DFT data of Zeng et al., Nat. Commun. 11,
  5713 (2020), as shipped in DeePMD-kit's examples/nopbc (LGPL-3.0).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from nnpot.errors import DatasetError

__all__ = ["bundled_dataset", "BUNDLED"]

BUNDLED = ("water", "molecule_C3H3O4")


def bundled_dataset(name: str = "water") -> Path:
    """The path of bundled dataset ``name`` (one of :data:`BUNDLED`), an nnpot HDF5 file."""
    if name not in BUNDLED:
        raise DatasetError(f"no bundled dataset {name!r}; there are {', '.join(BUNDLED)}")
    path = resources.files("nnpot") / "bundled_data" / f"{name}.h5"
    return Path(str(path))
