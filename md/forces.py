"""Force providers for the MD drivers: an nnpot model kept on the device with a reused
neighbor list (skin), or any ASE calculator as a slow but general fallback."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from nnpot.errors import AtomsTooCloseError, NeighborOverflowError
from nnpot.potentials.batch import AtomsBatch, types_from_numbers
from nnpot.potentials.derivatives import chunk_slices, derivatives
from nnpot.potentials.neighbors import PaddedNeighbors, neighbor_pairs, padded_neighbors

__all__ = ["ModelForces", "ASEForces"]


class ModelForces:
    """Energy, forces and virial of an :class:`~nnpot.potentials.EnergyModel` on device tensors,
    for one structure or for several independent replicas integrated together.

    The neighbor list is built on the model's device with cutoff ``rcut + skin`` and reused
    until some atom has moved more than ``skin / 2`` since the build (then no pair can have
    crossed into the cutoff unseen). Each type's block of slots is cut to the largest count
    found plus a fraction ``margin`` (rounded up to 8) instead of padding to ``sel``; the se_e2_a
    descriptor corrects exactly for any slot count, so energies are those of the model's
    ``sel`` as long as no atom has more than ``sel[t]`` neighbors of type ``t`` inside
    ``rcut`` (checked at every build, :class:`~nnpot.errors.NeighborOverflowError` otherwise).

    Each evaluation first cuts the list (on the device) to the neighbors inside ``rcut``, keeping
    per type the ``inner[t]`` nearest (the largest count at the build plus ``margin``), so the
    model works on about as many slots as for a single evaluation however large the skin.

    The index buffers keep their addresses from build to build while the slot counts fit,
    so a CUDA graph that captured :meth:`evaluate` stays valid; :attr:`layout_version` changes
    when they had to grow. :attr:`max_displacement` (a device scalar) holds the largest
    displacement since the last build seen by any :meth:`evaluate`.

    Args:
        model: the potential (its device and dtype are used).
        images: one ASE ``Atoms`` or a list of them (replicas; cells may differ).
        skin: Angstrom.
        chunk_size: evaluate this many atoms at a time (bounds memory).
        margin: spare slots per type, as a fraction of the largest count at a build.
        compile: evaluate the model through ``torch.compile`` (fuses the elementwise work of
            forward and backward; the first steps pay for the compilation).
        min_distance: Angstrom; every evaluation records the closest pair on the device
            (:attr:`closest`) and :meth:`__call__` raises
            :class:`~nnpot.errors.AtomsTooCloseError` below it (0: no check).
    """

    def __init__(self, model, images, skin: float = 2.0, chunk_size: int | None = None, margin: float = 0.1,
                 compile: bool = False, min_distance: float = 0.0):
        self.model = model
        self.single = not isinstance(images, Sequence)
        images = [images] if self.single else list(images)
        self.skin, self.margin = float(skin), float(margin)
        self.chunk_size = chunk_size if model.is_local else None  # message passing sees the whole system
        device = model.device
        self.sizes = [len(a) for a in images]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        numbers = np.concatenate([a.numbers for a in images])
        self.types = torch.as_tensor(types_from_numbers(numbers, model.type_map), device=device)
        self.frame = torch.repeat_interleave(torch.arange(len(images), device=device),
                                             torch.as_tensor(self.sizes, device=device))
        self.pbc = [torch.as_tensor(np.asarray(a.pbc, dtype=bool)) for a in images]
        self.pbc_all = torch.stack(self.pbc).to(device)
        n = int(self.offsets[-1])
        self.chunks = chunk_slices(n, self.chunk_size)
        self.groups = [model.type_groups(self.types[sl]) for sl in self.chunks]
        self.capacity: tuple[int, ...] | None = None
        self.layout_version = 0
        self.n_builds = 0
        self.neighbors: PaddedNeighbors | None = None
        self.ref_positions: torch.Tensor | None = None
        self.ref_inverse: torch.Tensor | None = None
        self.max_displacement = torch.zeros((), dtype=model.dtype, device=device)
        self.inner: tuple[int, ...] | None = None
        self.overflow = torch.zeros((), dtype=torch.bool, device=device)
        self.min_distance = float(min_distance)
        self.closest = torch.full((), math.inf, dtype=model.dtype, device=device)
        self.compiled = torch.compile(model, dynamic=False) if compile else None

    # --- neighbor list ----------------------------------------------------------------------

    def _pairs(self, positions: torch.Tensor, cells: torch.Tensor):
        """Pairs within ``rcut + skin`` of every replica, with global atom indices."""
        cutoff = self.model.cutoff + self.skin
        parts = []
        for f, pbc in enumerate(self.pbc):
            a, b = int(self.offsets[f]), int(self.offsets[f + 1])
            i, j, s = neighbor_pairs(positions[a:b], cells[f], pbc, cutoff)
            parts.append((i + a, j + a, s))
        i, j, s = (torch.cat(x) for x in zip(*parts))
        rij = positions[j] + torch.einsum("ps,psd->pd", s.to(positions.dtype), cells[self.frame[i]]) - positions[i]
        return i, j, s, rij.norm(dim=-1)

    def _check_sel(self, counts: torch.Tensor) -> None:
        sel = torch.as_tensor(self.model.sel, device=counts.device)
        over = counts.max(dim=0).values > sel
        if bool(over.any()):
            t = int(torch.nonzero(over)[0])
            raise NeighborOverflowError(
                f"an atom has {int(counts[:, t].max())} neighbors of {self.model.type_map[t]} within the model's "
                f"cutoff {self.model.cutoff} A but sel allows {int(sel[t])}; the structure is denser than the "
                f"training data (or atoms collapsed)")

    @torch.no_grad()
    def build(self, positions: torch.Tensor, cells: torch.Tensor) -> None:
        """(Re)build the neighbor list at ``positions`` (``cells``: ``[B, 3, 3]``)."""
        n, n_types = positions.shape[0], len(self.model.type_map)
        i, j, s, d = self._pairs(positions, cells)
        group = i * n_types + self.types[j]
        inner = d < self.model.cutoff
        inner_counts = torch.bincount(group[inner], minlength=n * n_types).view(n, n_types)
        self._check_sel(inner_counts)
        found = torch.bincount(group, minlength=n * n_types).view(n, n_types).max(dim=0).values.tolist()
        found_inner = inner_counts.max(dim=0).values.tolist()
        grow = lambda f: 8 * math.ceil((f * (1 + self.margin) + 4) / 8)  # noqa: E731
        if (self.capacity is None or any(f > c for f, c in zip(found, self.capacity))
                or any(f > c for f, c in zip(found_inner, self.inner))):
            self.capacity = tuple(grow(f) for f in found)
            self.inner = tuple(min(grow(f), s, c) for f, s, c in zip(found_inner, self.model.sel, self.capacity))
            self.layout_version += 1
            self.neighbors = None
        nb = padded_neighbors(i, j, s, d, self.types, self.capacity, n, type_names=self.model.type_map)
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

    def _fill_cells(self, cells: torch.Tensor) -> torch.Tensor:
        """Cells with the vectors of non-periodic directions replaced by unit vectors (invertible)."""
        eye = torch.eye(3, dtype=cells.dtype, device=cells.device).expand_as(cells)
        return torch.where(self.pbc_all[:, :, None], cells, eye)

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
        return (positions.detach() - affine).norm(dim=-1).max() + 0.5 * strain * (self.model.cutoff + self.skin)

    @torch.no_grad()
    def inner_neighbors(self, batch: AtomsBatch) -> PaddedNeighbors:
        """The list cut to the neighbors now inside ``rcut``: per type the ``inner[t]`` nearest
        (slots beyond ``rcut`` act as empty ones, so the energy is unchanged). Sets
        :attr:`overflow` when some atom has more than ``inner[t]`` neighbors of type ``t`` inside
        ``rcut`` (the list must then be rebuilt with more slots). No host synchronisation."""
        nb = self.neighbors
        r = batch.edge_vectors().norm(dim=-1)
        r = torch.where((nb.index >= 0) & (r < self.model.cutoff), r, torch.full_like(r, math.inf))
        if self.min_distance > 0 and r.numel():
            self.closest.copy_(torch.minimum(self.closest, r.min()))
        index, shifts, start = [], [], 0
        for cap, keep in zip(nb.capacity, self.inner):
            block = r[:, start:start + cap]
            counts = torch.isfinite(block).sum(dim=1)
            self.overflow.copy_(self.overflow | (counts > keep).any())
            dist, pick = torch.topk(block, keep, dim=1, largest=False)
            idx = torch.gather(nb.index[:, start:start + cap], 1, pick)
            index.append(torch.where(torch.isfinite(dist), idx, torch.full_like(idx, -1)))
            shifts.append(torch.gather(nb.shifts[:, start:start + cap], 1, pick[..., None].expand(-1, -1, 3)))
            start += cap
        return PaddedNeighbors(torch.cat(index, 1), torch.cat(shifts, 1), self.inner, nb.max_counts)

    # --- evaluation ---------------------------------------------------------------------------

    def evaluate_all(self, positions: torch.Tensor, cells: torch.Tensor) -> dict[str, torch.Tensor]:
        """:func:`~nnpot.potentials.derivatives` with the current list (energy, forces, virial,
        atom energies); never waits on the device. Tracks :attr:`max_displacement`."""
        self.max_displacement.copy_(torch.maximum(self.max_displacement, self.displacement(positions, cells)))
        batch = AtomsBatch(positions, self.types, self.frame, cells, self.pbc_all, self.neighbors)
        batch.neighbors = self.inner_neighbors(batch)
        model = self.model if self.compiled is None else self.compiled
        return derivatives(model, batch, chunk_size=self.chunk_size, groups=self.groups)

    def evaluate(self, positions: torch.Tensor, cells: torch.Tensor):
        """Energies ``[B]``, forces ``[N, 3]``, virials ``[B, 3, 3]`` (see :meth:`evaluate_all`)."""
        out = self.evaluate_all(positions, cells)
        return out["energy"], out["forces"], out["virial"]

    def compute(self, positions: torch.Tensor, cells: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`evaluate_all` for a structure that may have moved anywhere: the staleness of
        the list is checked first (one host synchronisation), so a far jump costs a rebuild
        but no wasted evaluation (the calculator's path)."""
        if self.neighbors is None or bool(self.displacement(positions, cells) > 0.5 * self.skin):
            self.build(positions, cells)
        out = self.evaluate_all(positions, cells)
        if bool(self.overflow):
            self.build(positions, cells)
            out = self.evaluate_all(positions, cells)
        return out

    def batched(self, cell: torch.Tensor) -> torch.Tensor:
        """``[B, 3, 3]`` cells from the driver's ``cell`` (``[3, 3]`` for one structure)."""
        return cell[None] if self.single else cell

    def evaluate_state(self, positions: torch.Tensor, cell: torch.Tensor):
        """:meth:`evaluate` in the driver's shapes: for one structure a scalar energy and a
        ``[3, 3]`` virial, for replicas ``[B]`` and ``[B, 3, 3]``."""
        e, f, w = self.evaluate(positions, self.batched(cell))
        return (e[0], f, w[0]) if self.single else (e, f, w)

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor):
        """``(energy, forces [N, 3], virial)`` at ``positions`` (eV, eV/A, eV), rebuilding the list
        when needed (shapes as :meth:`evaluate_state`). One host synchronisation per call: if the
        list turns out stale (see :meth:`displacement`) or the inner blocks overflowed, it is
        rebuilt and the evaluation repeated."""
        if self.neighbors is None:
            self.build(positions, self.batched(cell))
        out = self.evaluate_state(positions, cell)
        stale, close = torch.stack([(self.max_displacement > 0.5 * self.skin) | self.overflow,
                                    self.closest < self.min_distance]).tolist()
        if close:
            self.raise_too_close()
        if stale:
            self.build(positions, self.batched(cell))
            out = self.evaluate_state(positions, cell)
        return out

    def raise_too_close(self) -> None:
        raise AtomsTooCloseError(f"two atoms came {float(self.closest):.3f} A apart, closer than min_distance "
                                 f"{self.min_distance} A (the structure is collapsing, or the time step is too long)")


class ASEForces:
    """Any ASE calculator behind the same interface (positions go through the host)."""

    def __init__(self, calc, atoms):
        self.calc = calc
        self.atoms = atoms.copy()
        self.atoms.calc = calc

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor):
        self.atoms.positions = positions.detach().cpu().double().numpy()
        self.atoms.cell = cell.detach().cpu().double().numpy()
        e = self.atoms.get_potential_energy()
        f = self.atoms.get_forces()
        try:
            vol = self.atoms.get_volume()
            from ase.stress import voigt_6_to_full_3x3_stress

            virial = -voigt_6_to_full_3x3_stress(self.atoms.get_stress()) * vol
        except Exception:  # non-periodic systems and calculators without stress
            virial = np.zeros((3, 3))
        to = lambda x: torch.as_tensor(np.asarray(x), dtype=positions.dtype, device=positions.device)  # noqa: E731
        return to(e), to(f), to(virial)
