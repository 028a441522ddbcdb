"""A neighbor list with a skin, allocated and updated apart from the energy function (as
JAX-MD's ``partition.neighbor_list``): :meth:`NeighborList.build` searches pairs within
``rcut + skin`` and lays them out in the padded per-type slots the model reads;
:meth:`NeighborList.displacement` says how far the structures have moved since (the list is
valid while that stays below ``skin / 2``); :meth:`NeighborList.inner` cuts the list to the
neighbors now inside ``rcut`` and reports an overflow of the model's ``sel`` as a flag on the
device (:attr:`NeighborList.overflow`, as JAX-MD's ``did_buffer_overflow``), never a silent
truncation.

Nothing here evaluates a model: :class:`~nnpot.potentials.evaluator.Evaluator` owns one list
and calls the model on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from nnpot.potentials.neighbors import (PaddedNeighbors, check_capacity, effective_cell, neighbor_pairs,
                                        padded_neighbors)

__all__ = ["NeighborList"]


class NeighborList:
    """The neighbors of ``n_centers`` atoms of a batch of structures (concatenated atoms).

    Args:
        structures: the structures (``numbers`` and ``pbc`` are read), in batch order.
        types: ``[N]`` model type of each atom, on the list's device.
        frame: ``[N]`` structure of each atom.
        type_map, cutoff, sel: the model's (``sel``: the most neighbors of each type inside
            ``cutoff`` the model accounts for; more is an overflow).
        skin: Angstrom beyond ``cutoff`` kept in the list.
        margin: spare slot capacity (a share) above the counts found at a build.
        n_centers: the atoms that have neighbor rows (the rest are ghost atoms).
        min_distance: track the closest pair inside ``cutoff`` (:attr:`closest`) when > 0.
    """

    def __init__(self, structures: Sequence, types: torch.Tensor, frame: torch.Tensor, type_map: Sequence[str],
                 cutoff: float, sel: Sequence[int], skin: float = 1.0, margin: float = 0.1,
                 n_centers: int | None = None, min_distance: float = 0.0, dtype: torch.dtype = torch.float64):
        self.type_map, self.cutoff, self.sel = list(type_map), float(cutoff), list(sel)
        self.skin, self.margin = float(skin), float(margin)
        self.types, self.frame = types, frame
        sizes = [len(s.numbers) for s in structures]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.n_centers = int(self.offsets[-1] if n_centers is None else n_centers)
        device = types.device
        self.pbc = [torch.as_tensor(np.asarray(s.pbc, dtype=bool)) for s in structures]
        self.pbc_all = torch.stack(self.pbc).to(device)
        self.capacity: tuple[int, ...] | None = None  #: slots per type in the list (within rcut + skin)
        self.inner_capacity: tuple[int, ...] | None = None  #: slots per type inside rcut, at most sel
        self.layout_version = 0  #: changes when the slot layout (and so tensor shapes) changes
        self.n_builds = 0
        self.neighbors: PaddedNeighbors | None = None
        self.ref_positions: torch.Tensor | None = None
        self.ref_inverse: torch.Tensor | None = None
        self.fill: torch.Tensor | None = None  # [B, 3, 3] cells with fill-ins along non-periodic directions
        self.max_displacement = torch.zeros((), dtype=dtype, device=device)
        self.overflow = torch.zeros((), dtype=torch.bool, device=device)
        self.min_distance = float(min_distance)
        self.closest = torch.full((), math.inf, dtype=dtype, device=device)

    # --- build ------------------------------------------------------------------------------

    def _pairs(self, positions: torch.Tensor, cells: torch.Tensor):
        """Pairs within ``cutoff + skin`` of every structure around its centers (not ghosts),
        with global atom indices."""
        cutoff = self.cutoff + self.skin
        parts = []
        for f, pbc in enumerate(self.pbc):
            a, b = int(self.offsets[f]), int(self.offsets[f + 1])
            i, j, s = neighbor_pairs(positions[a:b], cells[f], pbc, cutoff)
            parts.append((i + a, j + a, s))
        i, j, s = (torch.cat(x) for x in zip(*parts))
        if self.n_centers < positions.shape[0]:
            keep = i < self.n_centers
            i, j, s = i[keep], j[keep], s[keep]
        rij = positions[j] + torch.einsum("ps,psd->pd", s.to(positions.dtype), cells[self.frame[i]]) - positions[i]
        return i, j, s, rij.norm(dim=-1)

    def _grow(self, found: list[int], found_inner: list[int]) -> bool:
        """New slot counts when the found counts no longer fit (True if the layout changed)."""
        grow = lambda f: 8 * math.ceil((f * (1 + self.margin) + 4) / 8)  # noqa: E731
        if (self.capacity is not None and all(f <= c for f, c in zip(found, self.capacity))
                and all(f <= c for f, c in zip(found_inner, self.inner_capacity))):
            return False
        self.capacity = tuple(grow(f) for f in found)
        self.inner_capacity = tuple(min(grow(f), s, c) for f, s, c in zip(found_inner, self.sel, self.capacity))
        self.layout_version += 1
        return True

    @torch.no_grad()
    def build(self, positions: torch.Tensor, cells: torch.Tensor) -> None:
        """(Re)build the list at ``positions`` ``[N, 3]`` (``cells``: ``[B, 3, 3]``). A structure
        with more neighbors of a type inside the cutoff than ``sel`` is an error naming it."""
        n, n_types = self.n_centers, len(self.type_map)
        i, j, s, d = self._pairs(positions, cells)
        group = i * n_types + self.types[j]
        inner_counts = torch.bincount(group[d < self.cutoff], minlength=n * n_types).view(n, n_types)
        found_inner = inner_counts.max(dim=0).values.tolist() if n else [0] * n_types
        check_capacity(found_inner, self.sel, self.type_map, self.cutoff)
        found = torch.bincount(group, minlength=n * n_types).view(n, n_types).max(dim=0).values.tolist() if n \
            else [0] * n_types
        if self._grow(found, found_inner):
            self.neighbors = None
        nb = padded_neighbors(i, j, s, d, self.types, self.capacity, n, type_names=self.type_map)
        self.fill = torch.stack([effective_cell(c, p) for c, p in zip(cells, self.pbc)])
        if self.neighbors is None:
            self.neighbors = nb
            self.ref_positions = positions.detach().clone()
            self.ref_inverse = torch.linalg.inv(self._fill_cells(cells))
        else:  # same shapes: refill in place so captured graphs see the new list
            self.neighbors.index.copy_(nb.index)
            self.neighbors.shifts.copy_(nb.shifts)
            self.neighbors.max_counts = nb.max_counts
            self.ref_positions.copy_(positions)
            self.ref_inverse.copy_(torch.linalg.inv(self._fill_cells(cells)))
        self.max_displacement.zero_()
        self.overflow.zero_()
        self.n_builds += 1

    # --- staleness ------------------------------------------------------------------------

    def _fill_cells(self, cells: torch.Tensor) -> torch.Tensor:
        """Cells with the vectors of non-periodic directions replaced by the fill-ins of
        :func:`~nnpot.potentials.neighbors.effective_cell` at the last build (invertible)."""
        return torch.where(self.pbc_all[:, :, None], cells, self.fill)

    def displacement(self, positions: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """How far the list is from going stale, in Angstrom (a device scalar): the largest
        atom displacement beyond the cell's affine deformation since the build, plus half the
        deformation ``|F - 1|`` times ``rcut + skin`` (``F = cell_build^-1 cell``; zero at fixed
        cell). A pair's separation has then changed by at most twice this, so the list is valid
        while it stays below ``skin / 2``."""
        F = self.ref_inverse @ self._fill_cells(cells)  # [B, 3, 3]
        affine = torch.einsum("nd,nde->ne", self.ref_positions, F[self.frame])
        eye = torch.eye(3, dtype=F.dtype, device=F.device)
        strain = torch.linalg.matrix_norm(F - eye).max()
        moved = (positions.detach() - affine).norm(dim=-1)
        return (moved.max() if moved.numel() else moved.sum()) + 0.5 * strain * (self.cutoff + self.skin)

    def track(self, displacement: torch.Tensor) -> None:
        """Keep the largest displacement seen since the build (:attr:`max_displacement`)."""
        self.max_displacement.copy_(torch.maximum(self.max_displacement, displacement))

    # --- the list the model reads ------------------------------------------------------------

    @torch.no_grad()
    def inner(self, edge_vectors: torch.Tensor) -> PaddedNeighbors:
        """The list cut to the neighbors now inside ``cutoff`` (``edge_vectors``: ``[n, K, 3]``
        of the full list at the current positions): per type the ``inner_capacity[t]`` nearest
        (slots beyond the cutoff act as empty ones, so the energy is unchanged). Sets
        :attr:`overflow` when some atom has more neighbors of a type inside the cutoff than its
        slots (the list must be rebuilt with more), and :attr:`closest`. No host synchronisation."""
        nb = self.neighbors
        r = edge_vectors.norm(dim=-1)
        r = torch.where((nb.index >= 0) & (r < self.cutoff), r, torch.full_like(r, math.inf))
        if self.min_distance > 0 and r.numel():
            self.closest.copy_(torch.minimum(self.closest, r.min()))
        index, shifts, start = [], [], 0
        for cap, keep in zip(nb.capacity, self.inner_capacity):
            block = r[:, start:start + cap]
            counts = torch.isfinite(block).sum(dim=1)
            self.overflow.copy_(self.overflow | (counts > keep).any())
            dist, pick = torch.topk(block, keep, dim=1, largest=False)
            idx = torch.gather(nb.index[:, start:start + cap], 1, pick)
            index.append(torch.where(torch.isfinite(dist), idx, torch.full_like(idx, -1)))
            shifts.append(torch.gather(nb.shifts[:, start:start + cap], 1, pick[..., None].expand(-1, -1, 3)))
            start += cap
        return PaddedNeighbors(torch.cat(index, 1), torch.cat(shifts, 1), self.inner_capacity, nb.max_counts)
