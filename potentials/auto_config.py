"""A model's type map and neighbor capacity from its training data (zero-config training).

* ``type_map`` (when empty): the elements of the training data, ordered by atomic number. An
  explicit type map must hold every element of the training and validation data.
* ``descriptor.sel`` (when ``"auto"``): per neighbor element, the largest number found within
  ``rcut`` around any atom of (a random sample of at most ``sample`` frames of) the training
  and validation data (the model must evaluate both), plus 10 percent, rounded up to an even
  number
  (:func:`~nnpot.potentials.neighbor_stats.suggest_sel`), as DeePMD-kit's ``sel: "auto"`` does.

Elements of the validation data that the training data lacks are reported: the model has
never seen them, so its errors there mean little.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from nnpot.errors import UnknownElementError
from nnpot.potentials.config import ModelConfig
from nnpot.potentials.neighbor_stats import neighbor_counts

__all__ = ["resolve_model_config", "dataset_elements"]

log = logging.getLogger(__name__)


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
