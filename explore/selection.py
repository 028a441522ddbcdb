"""Which explored frames to label: DP-GEN's trust window and a simple diversity criterion.

A frame's ``max_devi_f`` (the ensemble's largest per-atom force deviation,
:mod:`nnpot.potentials.ensemble`) places it:

* below ``lo``: *accurate*, the ensemble agrees; nothing to learn;
* in ``[lo, hi)``: a *candidate*, worth a reference calculation;
* at or above ``hi``: *failed*, too far from the data (often unphysical); not labelled.

Of the candidates at most ``max_select`` are chosen: the ``pool`` x ``max_select`` most uncertain
ones are spread by farthest-point sampling on a structural fingerprint (per element pair, a
smoothed histogram of the distances up to ``r_max``), starting from the most uncertain. The labels
go where the ensemble disagrees most, and spread over different structures instead of many
neighbouring frames of one trajectory. (Farthest-point sampling over all candidates alone favours
outliers of the fingerprint, such as the unrattled seed, over the frames the models know least.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

__all__ = ["trust_window", "fingerprint", "farthest_point", "select"]


def trust_window(max_devi_f: Sequence[float], lo: float, hi: float) -> np.ndarray:
    """``0`` accurate, ``1`` candidate, ``2`` failed for each frame."""
    d = np.asarray(max_devi_f, dtype=np.float64)
    return np.where(d < lo, 0, np.where(d < hi, 1, 2))


def fingerprint(atoms: Atoms, elements: Sequence[int], r_max: float = 6.0, bins: int = 24) -> np.ndarray:
    """Per element pair (of ``elements``), the Gaussian-smoothed histogram of the distances below
    ``r_max`` (minimum image for periodic cells), per atom."""
    i, j, d = neighbor_list("ijd", atoms, r_max)
    z = atoms.numbers
    index = {e: k for k, e in enumerate(elements)}
    n_el = len(elements)
    centers = np.linspace(0.5, r_max, bins)
    width = centers[1] - centers[0]
    out = np.zeros((n_el, n_el, bins))
    weights = np.exp(-0.5 * ((d[:, None] - centers[None]) / width) ** 2)
    a = np.array([index[v] for v in z[i]], dtype=int)
    b = np.array([index[v] for v in z[j]], dtype=int)
    np.add.at(out, (a, b), weights)
    return out.reshape(-1) / max(len(atoms), 1)


def farthest_point(features: np.ndarray, k: int, first: int = 0) -> list[int]:
    """``k`` rows of ``features`` chosen greedily, each the farthest from those already chosen."""
    n = len(features)
    if k >= n:
        return list(range(n))
    chosen = [first]
    dist = np.linalg.norm(features - features[first], axis=1)
    while len(chosen) < k:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(features - features[nxt], axis=1))
    return chosen


def select(images: Sequence[Atoms], max_devi_f: Sequence[float], lo: float, hi: float, max_select: int,
           r_max: float = 6.0, pool: float = 3.0,
           rank: Sequence[float] | None = None) -> tuple[np.ndarray, list[int]]:
    """The trust-window classes of all frames and the indices of the frames to label: of the
    ``ceil(pool * max_select)`` most uncertain candidates, the most uncertain first, then
    farthest-point sampling (``pool=inf``: over all candidates). Uncertainty is ``rank`` where
    given (for example each frame's ``avg_devi_f``), else ``max_devi_f``."""
    classes = trust_window(max_devi_f, lo, hi)
    devi = np.asarray(max_devi_f if rank is None else rank, dtype=np.float64)
    candidates = np.flatnonzero(classes == 1)
    if len(candidates) == 0 or max_select < 1:
        return classes, []
    candidates = candidates[np.argsort(-devi[candidates], kind="stable")]  # most uncertain first
    candidates = candidates[: max(max_select, int(min(np.ceil(pool * max_select), len(candidates))))]
    elements = sorted({int(z) for a in images for z in a.numbers})
    features = np.stack([fingerprint(images[c], elements, r_max) for c in candidates])
    return classes, [int(candidates[k]) for k in farthest_point(features, max_select, 0)]
