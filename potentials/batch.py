"""A batch of structures laid out for the model: atoms of all frames concatenated.

Shapes (``N`` atoms in all, ``B`` frames, ``K = sum(capacity)`` neighbor slots):

=============  ==============  =======================================================
field          shape           meaning
=============  ==============  =======================================================
positions      [N, 3]          Angstrom
types          [N]             model type of each atom (index into the type map)
frame          [N]             frame of each atom
cell           [B, 3, 3]       Angstrom, rows are cell vectors
pbc            [B, 3]          periodic directions
neighbors      PaddedNeighbors indices into the concatenated atoms, shifts in cells; rows for
                               the first ``n_centers`` atoms (all but ghost atoms)
counted        int             optional: only the first ``counted`` centers' energies count;
                               the others are ghost atoms that a message-passing model
                               evaluates for their features (domain decomposition)
groups         per chunk, [T]  optional: the atoms of each type in each chunk (known
                               beforehand, so evaluation never waits on the device)
key            hashable        optional: identifies a batch that recurs (training frames),
                               so descriptors may cache work done for it
=============  ==============  =======================================================
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols

from nnpot.errors import UnknownElementError
from nnpot.potentials.neighbors import PaddedNeighbors, build_neighbors

__all__ = ["AtomsBatch", "make_batch", "types_from_numbers", "NeighborCache", "ByteBudgetCache"]


class ByteBudgetCache:
    """Values kept by key up to ``max_bytes`` in all; a value that does not fit is not kept (the
    store of :class:`NeighborCache` and of se_e2_a's :class:`~nnpot.potentials.descriptors.se_e2_a.PlanCache`)."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = int(max_bytes), 0
        self._store: dict[Hashable, Any] = {}

    def _keep(self, key: Hashable, value: Any, size: int) -> None:
        if key in self._store or self.bytes + size > self.max_bytes:
            return
        self._store[key] = value
        self.bytes += size


class NeighborCache(ByteBudgetCache):
    """Neighbor lists of structures that do not move (training frames), kept compactly (int32
    indices, int16 shifts) on their device up to ``max_bytes``; keys are the caller's (e.g. the
    frame index). A cached list is the one the search would return, so results are unchanged."""

    def __init__(self, max_bytes: int = 2 << 30):
        super().__init__(max_bytes)

    def get(self, key: Hashable, dtype: torch.dtype) -> PaddedNeighbors | None:
        item = self._store.get(key)
        if item is None:
            return None
        index, shifts, capacity, max_counts = item
        return PaddedNeighbors(index.long(), shifts.to(dtype), capacity, max_counts)

    def put(self, key: Hashable, nb: PaddedNeighbors) -> None:
        if not nb.n_dropped:  # a truncated list is never reused
            self._keep(key, (nb.index.int(), nb.shifts.to(torch.int16), nb.capacity, nb.max_counts),
                       nb.index.numel() * 10)


@dataclass
class AtomsBatch:
    positions: torch.Tensor
    types: torch.Tensor
    frame: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    neighbors: PaddedNeighbors
    groups: list[list[torch.Tensor]] | None = None
    key: Hashable | None = None
    counted: int | None = None

    @property
    def n_frames(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_centers(self) -> int:
        """Atoms whose energies the batch holds: all of them, except ghost atoms (neighbors
        only, at the end; a domain-decomposed engine counts their energies elsewhere)."""
        return int(self.neighbors.index.shape[0])

    def edge_vectors(self, positions: torch.Tensor | None = None, centers: slice | None = None) -> torch.Tensor:
        """``[n, K, 3]`` vectors ``r_j + S @ cell - r_i`` (zero in empty slots) for ``centers``."""
        pos = self.positions if positions is None else positions
        sl = centers if centers is not None else slice(0, self.n_centers)
        index = self.neighbors.index[sl]
        idx = index.clamp(min=0)
        cell = self.cell[self.frame[sl]]  # [n, 3, 3]
        shift = torch.einsum("nks,nsd->nkd", self.neighbors.shifts[sl].to(pos.dtype), cell.to(pos.dtype))
        rij = pos[idx] + shift - pos[sl][:, None, :]
        return rij * (index >= 0)[..., None]


def types_from_numbers(numbers: np.ndarray, type_map: Sequence[str]) -> np.ndarray:
    """Model types of atomic ``numbers``; an element not in ``type_map`` is a clear error."""
    lookup = np.full(119, -1, dtype=np.int64)
    for t, sym in enumerate(type_map):
        lookup[atomic_numbers[sym]] = t
    numbers = np.asarray(numbers)
    types = lookup[numbers]
    if np.any(types < 0):
        bad = sorted({chemical_symbols[z] for z in numbers[types < 0]})
        raise UnknownElementError(
            f"element(s) {', '.join(bad)} not known to the model, whose type map is {list(type_map)}"
        )
    return types


def make_batch(
    structures: Sequence,
    type_map: Sequence[str],
    cutoff: float,
    capacity: Sequence[int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
    on_overflow: str = "error",
    tight: bool = False,
    cache: NeighborCache | None = None,
    keys: Sequence | None = None,
) -> AtomsBatch:
    """Batch ``structures`` (ASE ``Atoms`` or :class:`~nnpot.data.Frame`) with their neighbors.

    With ``tight`` each type's block is cut to the largest neighbor count in the batch instead of
    its full ``capacity``: less padding, the same energies (the descriptor corrects for the slot
    count), but shapes that change from batch to batch. With one key per structure the batch
    is marked as recurring (``AtomsBatch.key``); with a ``cache`` too, neighbor lists are
    searched once per structure and reused.
    """
    pos_l, typ_l, frame_l, cell_l, pbc_l, idx_l, sh_l = [], [], [], [], [], [], []
    offset = 0
    max_counts = np.zeros(len(capacity), dtype=np.int64)
    dropped = 0
    for f, s in enumerate(structures):
        numbers = s.numbers
        cell_arr = s.cell.array if hasattr(s.cell, "array") else np.asarray(s.cell)
        pos = torch.as_tensor(np.asarray(s.positions), dtype=dtype, device=device)
        cell = torch.as_tensor(np.asarray(cell_arr), dtype=dtype, device=device)
        pbc = torch.as_tensor(np.asarray(s.pbc, dtype=bool))
        types = torch.as_tensor(types_from_numbers(numbers, type_map), device=device)
        key = None if cache is None or keys is None else (keys[f], float(cutoff), tuple(capacity))
        nb = cache.get(key, dtype) if key is not None else None
        if nb is None:
            nb = build_neighbors(pos, cell, pbc, types, cutoff, tuple(capacity), on_overflow, list(type_map))
            if key is not None:
                cache.put(key, nb)
        pos_l.append(pos)
        typ_l.append(types)
        frame_l.append(torch.full((len(numbers),), f, dtype=torch.long, device=device))
        cell_l.append(cell)
        pbc_l.append(pbc)
        idx_l.append(torch.where(nb.index >= 0, nb.index + offset, nb.index))
        sh_l.append(nb.shifts)
        offset += len(numbers)
        max_counts = np.maximum(max_counts, nb.max_counts)
        dropped += nb.n_dropped
    index, shifts = torch.cat(idx_l), torch.cat(sh_l)
    capacity = tuple(int(c) for c in capacity)
    if tight:
        keep = torch.cat([torch.arange(start, start + min(int(m), c), device=index.device)
                          for start, c, m in zip(np.cumsum((0,) + capacity[:-1]), capacity, max_counts)])
        index, shifts = index[:, keep], shifts[:, keep]
        capacity = tuple(min(int(m), c) for c, m in zip(capacity, max_counts))
    neighbors = PaddedNeighbors(index, shifts, capacity, tuple(int(m) for m in max_counts), dropped)
    return AtomsBatch(torch.cat(pos_l), torch.cat(typ_l), torch.cat(frame_l), torch.stack(cell_l),
                      torch.stack(pbc_l).to(device), neighbors, key=None if keys is None else tuple(keys))
