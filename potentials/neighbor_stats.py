"""Neighbor counts of a dataset within a cutoff, and the ``sel`` they call for.

DeePMD-kit's ``sel: "auto"`` takes the largest count of each neighbor element found around any
atom of the training data and adds a margin. nnpot does the same: ``sel[t] = ceil(max_t *
(1 + margin))`` with ``margin = 0.1`` by default, then rounded up to a multiple of 2 (at least
1), so a structure slightly denser than any in the data still fits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from nnpot.potentials.neighbors import neighbor_pairs

__all__ = ["neighbor_counts", "suggest_sel", "SEL_MARGIN"]

SEL_MARGIN = 0.1  #: the fraction added to the largest count (DeePMD-kit's "auto" adds about this)


def suggest_sel(max_counts: Sequence[int], margin: float = SEL_MARGIN) -> list[int]:
    """``sel`` per neighbor element from the largest counts found (see the module docstring)."""
    return [max(1, 2 * math.ceil(math.ceil(int(m) * (1 + margin)) / 2)) for m in max_counts]


def neighbor_counts(frames: Iterable, rcut: float, elements: Sequence[int] | None = None,
                    margin: float = SEL_MARGIN) -> dict:
    """Per center element and neighbor element: mean and max count within ``rcut`` (Angstrom)
    over ``frames`` (:class:`~nnpot.data.Frame` objects), the closest pair, and the suggested
    ``sel`` (:func:`suggest_sel`) per element of ``elements`` (atomic numbers; default: those
    found)."""
    from ase.data import chemical_symbols

    frames = list(frames)
    if elements is None:
        elements = sorted({int(z) for f in frames for z in f.numbers})
    col = {int(z): k for k, z in enumerate(elements)}
    n_el = len(elements)
    maxima = np.zeros((n_el, n_el), dtype=np.int64)
    sums = np.zeros((n_el, n_el))
    n_centers = np.zeros(n_el)
    min_dist = math.inf
    for fr in frames:
        pos, cell = torch.as_tensor(fr.positions), torch.as_tensor(fr.cell)
        i, j, s = neighbor_pairs(pos, cell, torch.as_tensor(fr.pbc), rcut)
        if len(i):
            d = (pos[j] + s.double() @ cell - pos[i]).norm(dim=-1)
            min_dist = min(min_dist, float(d.min()))
        zc = np.array([col[int(z)] for z in fr.numbers])
        per = np.zeros((len(zc), n_el), dtype=np.int64)
        np.add.at(per, (i.numpy(), zc[j.numpy()]), 1)
        for c in range(n_el):
            rows = per[zc == c]
            if len(rows):
                maxima[c] = np.maximum(maxima[c], rows.max(0))
                sums[c] += rows.sum(0)
                n_centers[c] += len(rows)
    sym = [chemical_symbols[z] for z in elements]
    table = {sym[c]: {sym[t]: {"mean": float(sums[c, t] / max(n_centers[c], 1)), "max": int(maxima[c, t])}
                      for t in range(n_el)} for c in range(n_el)}
    sel = suggest_sel(maxima.max(axis=0) if n_el else [], margin)
    return {"rcut": rcut, "per_center": table, "max_counts": dict(zip(sym, maxima.max(axis=0).tolist() if n_el else [])),
            "suggested_sel": dict(zip(sym, sel)), "min_distance": min_dist, "frames": len(frames)}
