"""A model's type map and neighbor capacity from its training data (zero-config training).

* ``type_map`` (when empty): the elements of the training data, ordered by atomic number. An
  explicit type map must hold every element of the training and validation data.
* ``descriptor.sel`` (when ``"auto"``): per neighbor element, the largest number found within
  ``rcut`` around any atom of (a random sample of at most ``sample`` frames of) the training
  and validation data (the model must evaluate both), plus 10 percent, rounded up to an even
  number (:func:`suggest_sel`: ``sel[t] = ceil(max_t * (1 + margin))``, ``margin = 0.1``, rounded up
  to a multiple of 2, at least 1), as DeePMD-kit's ``sel: "auto"`` does, so a structure slightly
  denser than any in the data still fits. :func:`neighbor_counts` gives the counts (also behind
  ``nnpot data stats``).
* ``fitting.scale`` (when ``fitting.scale_from_data``): the RMS of the force components of a
  sample of the training frames, so that the fitting nets work at unit size (MACE scales its
  outputs the same way).

Elements of the validation data that the training data lacks are reported: the model has
never seen them, so its errors there mean little.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols

from nnpot.errors import UnknownElementError
from nnpot.potentials.config import ModelConfig
from nnpot.potentials.neighbors import neighbor_pairs

__all__ = ["resolve_model_config", "dataset_elements", "neighbor_counts", "suggest_sel", "SEL_MARGIN"]

log = logging.getLogger(__name__)

SEL_MARGIN = 0.1  #: the fraction added to the largest count (DeePMD-kit's "auto" adds about this)


def dataset_elements(datasets: Sequence) -> list[str]:
    """The elements of ``datasets`` (anything with ``numbers()``), by atomic number."""
    found = sorted({int(z) for ds in datasets for z in np.unique(ds.numbers())})
    return [chemical_symbols[z] for z in found]


def resolve_model_config(config: ModelConfig, train: Sequence, valid: Sequence = (), sample: int = 1000,
                         seed: int = 0) -> tuple[ModelConfig, dict]:
    """A copy of ``config`` with its type map and ``sel`` set from the ``train`` datasets (see
    the module docstring), and a report of what was chosen: ``type_map``, ``sel``,
    ``max_counts`` (when counted), ``unseen_in_training`` (validation elements the training
    data lacks)."""
    config = copy.deepcopy(config)
    elements = dataset_elements(train)
    report: dict = {"type_map_from_data": not config.type_map, "sel_from_data": config.descriptor.sel == "auto"}
    if not config.type_map:
        config.type_map = elements
    missing = [e for e in elements if e not in config.type_map]
    valid_elements = dataset_elements(valid) if valid else []
    unseen = [e for e in valid_elements if e not in elements]
    missing += [e for e in unseen if e not in config.type_map and e not in missing]
    if missing:
        raise UnknownElementError(f"element(s) {', '.join(missing)} of the data are not in the type map "
                                  f"{list(config.type_map)}; add them or leave type_map empty to take it from the data")
    if unseen:
        log.warning("validation element(s) %s do not occur in the training data", ", ".join(unseen))
    report["unseen_in_training"] = unseen
    if config.descriptor.sel == "auto":
        frames = _sample_frames([*train, *valid], sample, seed)
        counts = neighbor_counts(frames, config.descriptor.rcut,
                                 elements=[atomic_numbers[e] for e in config.type_map])
        config.descriptor.sel = [counts["suggested_sel"][e] for e in config.type_map]
        report["max_counts"] = [counts["max_counts"][e] for e in config.type_map]
        report["sel_frames"] = counts["frames"]
    if config.fitting.scale_from_data:
        frames = _sample_frames(list(train), sample, seed)
        forces = np.concatenate([np.asarray(f.forces, dtype=float).ravel() for f in frames])
        config.fitting.scale = float(np.sqrt(np.mean(forces ** 2))) or 1.0
        config.fitting.scale_from_data = False  # fixed now: fine-tuning keeps the scale its weights have
        report["fitting_scale"] = config.fitting.scale
    report["type_map"], report["sel"] = list(config.type_map), list(config.descriptor.sel)
    return config.validate(), report


def _sample_frames(datasets: Sequence, sample: int, seed: int) -> list:
    """At most ``sample`` frames drawn at random (without replacement) from all ``datasets``."""
    sizes = [len(ds) for ds in datasets]
    total = sum(sizes)
    picks = np.sort(np.random.default_rng(seed).choice(total, size=min(sample, total), replace=False))
    offsets = np.cumsum([0] + sizes)
    frames = []
    for k in picks:
        d = int(np.searchsorted(offsets, k, side="right") - 1)
        frames.append(datasets[d][int(k - offsets[d])])
    return frames


def suggest_sel(max_counts: Sequence[int], margin: float = SEL_MARGIN) -> list[int]:
    """``sel`` per neighbor element from the largest counts found (see the module docstring)."""
    return [max(1, 2 * math.ceil(math.ceil(int(m) * (1 + margin)) / 2)) for m in max_counts]


def neighbor_counts(frames: Iterable, rcut: float, elements: Sequence[int] | None = None,
                    margin: float = SEL_MARGIN) -> dict:
    """Per center element and neighbor element: mean and max count within ``rcut`` (Angstrom)
    over ``frames`` (:class:`~nnpot.data.Frame` objects), the closest pair, and the suggested
    ``sel`` (:func:`suggest_sel`) per element of ``elements`` (atomic numbers; default: those
    found)."""
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
