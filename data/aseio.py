"""ASE I/O hooks for the nnpot HDF5 format (``format="nnpot-h5"``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ase import Atoms

from nnpot.data.h5format import H5Dataset, write_h5
from nnpot.data.readers import _labels_from_atoms
from nnpot.data.frame import validate_frame

__all__ = ["read_nnpot_h5", "write_nnpot_h5"]


def read_nnpot_h5(filename: str | os.PathLike[str], index: int | slice | str = -1) -> Atoms | list[Atoms]:
    """Frames ``index`` (an int or a slice) of an nnpot dataset as ``ase.Atoms``."""
    ds = H5Dataset(filename)
    if isinstance(index, int):
        return ds[index].to_atoms()
    return [f.to_atoms() for f in ds[index]]


def write_nnpot_h5(filename: str | os.PathLike[str], images: Atoms | list[Atoms]) -> None:
    """Write labelled Atoms (energy and forces in their calculators) as an nnpot dataset."""
    if not isinstance(images, (list, tuple)):
        images = [images]
    frames = (validate_frame(_labels_from_atoms(a, f"{filename}: image {i}"), f"{filename}: image {i}")
              for i, a in enumerate(images))
    write_h5(frames, filename, sources=[{"reader": "ase"}])
