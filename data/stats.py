"""Summary statistics of a dataset (``nnpot data info``)."""

from __future__ import annotations

import os

import numpy as np
from ase.data import chemical_symbols

from nnpot.data.h5format import H5Dataset

__all__ = ["dataset_info"]


def dataset_info(path: str | os.PathLike[str], max_frames: int = 200, seed: int = 0) -> dict:
    """Frames, atoms, elements and energy/force statistics; ``"sampled"`` lists the (at most
    ``max_frames``) random frames that the force statistics used.

    Neighbor counts need a neighbor search, which lives above the data layer
    (:func:`nnpot.training.auto_config.neighbor_counts`).
    """
    ds = H5Dataset(path).check_not_empty()
    numbers = ds.numbers()
    n_atoms = ds.n_atoms
    z, counts = np.unique(numbers, return_counts=True)
    e_per_atom = ds.energy / n_atoms
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(ds), size=min(max_frames, len(ds)), replace=False))
    forces = np.concatenate([ds[int(i)].forces for i in sample])
    info = {
        "file": str(path),
        "frames": len(ds),
        "atoms": int(n_atoms.sum()),
        "atoms_per_frame": {"min": int(n_atoms.min()), "max": int(n_atoms.max()), "mean": float(n_atoms.mean())},
        "elements": {(chemical_symbols[int(a)] if 0 < a < len(chemical_symbols) else f"Z={int(a)}"): int(c)
                     for a, c in zip(z, counts)},
        "periodic_frames": int(ds.pbc.any(axis=1).sum()),
        "frames_with_virial": int(ds.has_virial.sum()) if ds.has_virial is not None else 0,
        "energy_per_atom": {"mean": float(e_per_atom.mean()), "std": float(e_per_atom.std()),
                            "min": float(e_per_atom.min()), "max": float(e_per_atom.max())},
        "force_component": {"mean": float(forces.mean()), "std": float(forces.std()),
                            "max_abs": float(np.abs(forces).max()), "sampled_frames": int(len(sample))},
        "sources": ds.sources,
        "sampled": [int(i) for i in sample],
    }
    return info
