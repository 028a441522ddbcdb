"""Checks of a structure before a model sees it: the errors a user gets instead of NaNs.

A calculator or driver hands a structure to :func:`check_structure` first: non-finite
positions or cell, a periodic cell whose periodic vectors span no volume, and atoms closer
than ``min_distance`` (out of any training set; usually overlapping atoms from a bad build)
each raise an error that names the problem and the atoms.
"""

from __future__ import annotations

import numpy as np
import torch

from nnpot.data.frame import periodic_volume
from nnpot.errors import AtomsTooCloseError, InvalidStructureError
from nnpot.potentials.neighbors import neighbor_pairs

__all__ = ["check_structure"]


def check_structure(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, min_distance: float = 0.0) -> None:
    """Raise :class:`~nnpot.errors.InvalidStructureError` or
    :class:`~nnpot.errors.AtomsTooCloseError` for a structure no model can evaluate.

    Args:
        positions: ``[n, 3]`` Angstrom.
        cell: ``[3, 3]`` Angstrom, rows are cell vectors.
        pbc: ``[3]`` bool.
        min_distance: Angstrom; two atoms (or an atom and a periodic image) closer than this
            are an error. 0 skips the search.
    """
    positions, cell = np.asarray(positions, dtype=np.float64), np.asarray(cell, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1:] != (3,) or len(positions) == 0:
        raise InvalidStructureError(f"the structure holds no atoms (positions of shape {positions.shape})")
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        raise InvalidStructureError(f"atom {int(bad[0])} has a non-finite position {positions[bad[0]].tolist()}"
                                    + (f" ({bad.size} atoms in all)" if bad.size > 1 else ""))
    if not np.isfinite(cell).all():
        raise InvalidStructureError(f"the cell is not finite: {cell.tolist()}")
    if periodic_volume(cell, pbc) < 1e-6:
        raise InvalidStructureError(f"the cell is singular: its periodic vectors (pbc {np.asarray(pbc).tolist()}) "
                                    f"span no volume: {cell.tolist()}")
    if min_distance <= 0 or (len(positions) < 2 and not np.any(pbc)):
        return
    i, j, s = neighbor_pairs(torch.from_numpy(positions), torch.from_numpy(cell), torch.as_tensor(np.asarray(pbc)),
                             min_distance)
    if len(i):
        d = np.linalg.norm(positions[j] + s.numpy() @ cell - positions[i], axis=1)
        k = int(np.argmin(d))
        raise AtomsTooCloseError(f"atoms {int(i[k])} and {int(j[k])} are {d[k]:.3f} A apart, closer than "
                                 f"min_distance {min_distance} A (overlapping atoms?)")
