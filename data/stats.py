"""Summary statistics of a dataset (``nnpot data info``)."""

from __future__ import annotations

import os

import numpy as np

from nnpot.data.h5format import H5Dataset

__all__ = ["dataset_info", "neighbor_counts"]


def dataset_info(path: str | os.PathLike[str], rcut: float | None = None, max_frames: int = 200,
                 seed: int = 0) -> dict:
    """Frames, atoms, elements, energy/force statistics and (with ``rcut``) neighbor counts.

    Force and neighbor statistics use at most ``max_frames`` random frames.
    """
    from ase.data import chemical_symbols

    ds = H5Dataset(path)
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
        "elements": {chemical_symbols[int(a)]: int(c) for a, c in zip(z, counts)},
        "periodic_frames": int(ds.pbc.any(axis=1).sum()),
        "frames_with_virial": int(ds.has_virial.sum()) if ds.has_virial is not None else 0,
        "energy_per_atom": {"mean": float(e_per_atom.mean()), "std": float(e_per_atom.std()),
                            "min": float(e_per_atom.min()), "max": float(e_per_atom.max())},
        "force_component": {"mean": float(forces.mean()), "std": float(forces.std()),
                            "max_abs": float(np.abs(forces).max()), "sampled_frames": int(len(sample))},
        "sources": ds.sources,
    }
    if rcut is not None:
        info["neighbors"] = neighbor_counts(ds, rcut, sample)
    return info


def neighbor_counts(ds: H5Dataset, rcut: float, frames) -> dict:
    """Per center element and neighbor element: mean and max count within ``rcut``, and the
    ``sel`` to use (the max over the sample, rounded up by 10 percent, as DeePMD users do)."""
    import torch
    from ase.data import chemical_symbols

    from nnpot.potentials.neighbors import neighbor_pairs

    elements = sorted({int(z) for z in ds.numbers()})
    col = {z: k for k, z in enumerate(elements)}
    maxima = np.zeros((len(elements), len(elements)), dtype=np.int64)
    sums = np.zeros((len(elements), len(elements)))
    n_centers = np.zeros(len(elements))
    min_dist = np.inf
    for f in frames:
        fr = ds[int(f)]
        pos = torch.as_tensor(fr.positions)
        i, j, s = neighbor_pairs(pos, torch.as_tensor(fr.cell), torch.as_tensor(fr.pbc), rcut)
        if len(i):
            d = (pos[j] + s.double() @ torch.as_tensor(fr.cell) - pos[i]).norm(dim=-1)
            min_dist = min(min_dist, float(d.min()))
        zc = np.array([col[z] for z in fr.numbers])
        per = np.zeros((fr.n_atoms, len(elements)), dtype=np.int64)
        np.add.at(per, (i.numpy(), zc[j.numpy()]), 1)
        for c in range(len(elements)):
            rows = per[zc == c]
            if len(rows):
                maxima[c] = np.maximum(maxima[c], rows.max(0))
                sums[c] += rows.sum(0)
                n_centers[c] += len(rows)
    sym = [chemical_symbols[z] for z in elements]
    table = {
        sym[c]: {sym[t]: {"mean": float(sums[c, t] / max(n_centers[c], 1)), "max": int(maxima[c, t])} for t in range(len(sym))}
        for c in range(len(sym))
    }
    sel = {sym[t]: int(np.ceil(maxima[:, t].max() * 1.1)) for t in range(len(sym))}
    return {"rcut": rcut, "per_center": table, "suggested_sel": sel, "min_distance": min_dist}
