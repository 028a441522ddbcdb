"""Neighbor search: periodic (triclinic, any cell size), mixed or no pbc, O(N), CPU and CUDA.

Two layers:

* :func:`neighbor_pairs` finds every pair ``(i, j, S)`` with ``|r_j + S @ cell - r_i| < cutoff``
  (``S`` an integer cell shift; a pair and its reverse are both listed). Atoms are wrapped into
  the cell, the periodic images within ``cutoff`` of the cell are generated (as many image
  layers as a thin cell needs), and a cell list with bins of edge >= ``cutoff`` keeps the
  search linear in the number of atoms. Everything is tensor code, so the same function runs
  on any torch device. For CPU tensors vesin's cell list does the same search 5.8-12.8x faster
  on water boxes (``benchmarks/bench_neighbors.py``) and is used where it is installed; the
  tests hold both to ASE's ``neighbor_list``.
* :func:`padded_neighbors` turns pairs into the dense per-type layout that se_e2_a uses:
  ``[n_atoms, sum(sel)]`` slots, type ``t`` in its own block of ``sel[t]`` slots, sorted by
  distance within the block, ``-1`` for empty slots. More neighbors of a type than its block
  holds raises :class:`~nnpot.errors.NeighborOverflowError` (or, with ``on_overflow="count"``,
  drops the farthest and reports how many were dropped): never a silent truncation.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import torch

from nnpot.errors import NeighborOverflowError

__all__ = ["neighbor_pairs", "padded_neighbors", "PaddedNeighbors", "build_neighbors", "effective_cell",
           "check_capacity"]

_CENTER_CHUNK = 32768  # centers handled at once in the cell-list search (bounds memory)
# "auto": all centers against all images when there are at most this many (center, image) pairs:
# fewer, larger kernels than the cell list, which is what small systems on a GPU are bound by
_ALL_PAIRS_MAX = {"cuda": 1 << 23, "cpu": 1 << 18}


def effective_cell(cell: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
    """``cell`` with the vectors of non-periodic directions replaced by orthonormal fill-ins.

    Only the periodic vectors matter for shifts; the fill-ins make the matrix invertible so
    fractional coordinates along periodic directions are defined for mixed pbc.
    """
    eff = cell.clone()
    basis = []  # orthonormal basis of the span so far
    for k in range(3):
        if bool(pbc[k]):
            v = eff[k] - sum(((eff[k] @ b) * b for b in basis), torch.zeros_like(eff[k]))
            basis.append(v / v.norm())
    for k in range(3):
        if bool(pbc[k]):
            continue
        for axis in (k, (k + 1) % 3, (k + 2) % 3):  # the first axis not in the span so far
            n = torch.zeros(3, dtype=cell.dtype, device=cell.device)
            n[axis] = 1.0
            n = n - sum(((n @ b) * b for b in basis), torch.zeros_like(n))
            if float(n.norm()) > 0.1:
                break
        basis.append(n / n.norm())
        eff[k] = basis[-1]
    return eff


@torch.no_grad()
def neighbor_pairs(
    positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor, cutoff: float, method: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All pairs within ``cutoff``.

    Args:
        positions: ``[n, 3]`` Angstrom.
        cell: ``[3, 3]`` Angstrom, rows are cell vectors (ignored along non-periodic directions).
        pbc: ``[3]`` bool.
        cutoff: Angstrom.
        method: ``"cells"`` (O(N) cell list), ``"all"`` (every center against every periodic
            image, for small systems), ``"vesin"`` (vesin's cell list on the host: 5.8-12.8x
            faster than ``"cells"`` on CPU, ``benchmarks/bench_neighbors.py``) or ``"auto"``
            (vesin for CPU tensors where it is installed; else ``"all"`` below a size that
            depends on the device, ``"cells"`` above).

    Returns:
        ``(i, j, shifts)``: ``[n_pairs]`` int64 centers and neighbors and ``[n_pairs, 3]`` int64
        cell shifts such that ``r_ij = positions[j] + shifts @ cell - positions[i]``.
    """
    device, dtype = positions.device, positions.dtype
    n = positions.shape[0]
    pbc = torch.as_tensor(pbc, dtype=torch.bool).cpu()
    cell = cell.to(device=device, dtype=dtype)
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if method not in ("auto", "all", "cells", "vesin"):
        raise ValueError(f"method must be 'auto', 'all', 'cells' or 'vesin', got {method!r}")
    if n == 0:
        return empty, empty, torch.zeros(0, 3, dtype=torch.long, device=device)
    eff = effective_cell(cell, pbc)
    groups = _separate_groups(positions, eff, pbc, cutoff)
    if len(groups) > 1:  # searched apart: the cell lists never span the empty space between them
        parts = [neighbor_pairs(positions[g], cell, pbc, cutoff, method) for g in groups]
        return (torch.cat([g[i] for g, (i, _, _) in zip(groups, parts)]),
                torch.cat([g[j] for g, (_, j, _) in zip(groups, parts)]), torch.cat([p[2] for p in parts]))
    if method == "vesin" or (method == "auto" and device.type == "cpu" and _vesin() is not None):
        return _vesin_pairs(positions, eff, pbc, cutoff)
    im = _periodic_images(positions, eff, pbc, cutoff)
    if method == "all" or (method == "auto" and n * im.positions.shape[0] <= _ALL_PAIRS_MAX.get(device.type, 0)):
        return _all_pairs(im, cutoff)
    return _cell_list_pairs(im, cutoff)


@dataclass
class _Images:
    """The atoms wrapped into the cell and their periodic images within ``cutoff`` of it."""

    wrapped: torch.Tensor  # [n, 3] positions wrapped into the cell
    wrap: torch.Tensor  # [n, 3] the cell shifts that wrapped them
    positions: torch.Tensor  # [n_img, 3] image positions
    shift: torch.Tensor  # [n_img, 3] each image's cell shift
    atom: torch.Tensor  # [n_img] the atom each image copies
    center: torch.Tensor  # [n] the zero-shift image of each atom


def _periodic_images(positions: torch.Tensor, eff: torch.Tensor, pbc: torch.Tensor, cutoff: float) -> _Images:
    device, dtype = positions.device, positions.dtype
    inv = torch.linalg.inv(eff)
    frac = positions @ inv
    wrap = torch.where(pbc.to(device), torch.floor(frac), torch.zeros_like(frac))  # [n, 3]
    pos_w = positions - wrap @ eff
    # layers of images needed along each periodic direction: cutoff / plane spacing
    spacing = 1.0 / torch.linalg.norm(inv, dim=0)  # distance between lattice planes [3]
    n_img = [int(math.ceil(cutoff / float(spacing[k]))) if bool(pbc[k]) else 0 for k in range(3)]
    shift_list = torch.tensor(
        list(itertools.product(*(range(-m, m + 1) for m in n_img))), dtype=dtype, device=device
    )  # [n_shifts, 3]
    # image positions, kept only if within cutoff of the cell (in fractional units per axis)
    margin = torch.tensor([cutoff / float(spacing[k]) if bool(pbc[k]) else math.inf for k in range(3)],
                          dtype=dtype, device=device)
    img_frac = (pos_w @ inv)[None, :, :] + shift_list[:, None, :]  # [n_shifts, n, 3]
    keep = ((img_frac >= -margin) & (img_frac < 1 + margin)).all(dim=-1)
    shift_idx, atom_idx = keep.nonzero(as_tuple=True)
    img_shift = shift_list[shift_idx]
    zero_shift = (img_shift == 0).all(dim=-1)  # the central copies are the centers
    center = torch.full((positions.shape[0],), -1, dtype=torch.long, device=device)
    center[atom_idx[zero_shift]] = torch.nonzero(zero_shift, as_tuple=True)[0]
    return _Images(pos_w, wrap, pos_w[atom_idx] + img_shift @ eff, img_shift, atom_idx, center)


def _all_pairs(im: _Images, cutoff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every center against every image (few, large kernels: small systems on a GPU)."""
    n = im.wrapped.shape[0]
    d = im.positions[None, :, :] - im.wrapped[:, None, :]  # [n, n_img, 3]
    hit = (d * d).sum(-1) < cutoff * cutoff
    hit[torch.arange(n, device=d.device), im.center] = False
    i, img = hit.nonzero(as_tuple=True)
    j = im.atom[img]
    return i, j, (im.shift[img] - im.wrap[j] + im.wrap[i]).round().long()


def _cell_list_pairs(im: _Images, cutoff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A cell list over the bounding box of all images, bins of edge >= ``cutoff``: O(N)."""
    device, n = im.positions.device, im.wrapped.shape[0]
    lo = im.positions.min(dim=0).values
    span = im.positions.max(dim=0).values - lo
    nbins = torch.clamp((span / cutoff).floor().long(), min=1)
    bin_size = span / nbins + 1e-9
    b3 = torch.minimum(((im.positions - lo) / torch.clamp(bin_size, min=1e-9)).long(), nbins - 1)
    strides = torch.tensor([nbins[1] * nbins[2], nbins[2], 1], device=device)
    bin_id = (b3 * strides).sum(-1)
    order = torch.argsort(bin_id, stable=True)
    total_bins = int(nbins.prod())
    counts = torch.bincount(bin_id, minlength=total_bins)
    starts = torch.cumsum(counts, 0) - counts
    offsets = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), device=device)  # [27, 3]
    out_i, out_j, out_s = [], [], []
    slot = torch.arange(int(counts.max()), device=device)
    for c0 in range(0, n, _CENTER_CHUNK):
        centers = torch.arange(c0, min(n, c0 + _CENTER_CHUNK), device=device)
        ci = im.center[centers]
        nb3 = b3[ci][:, None, :] + offsets[None]  # [c, 27, 3]
        valid_bin = ((nb3 >= 0) & (nb3 < nbins)).all(-1)
        nb = (nb3.clamp(min=0) * strides).sum(-1).clamp(max=total_bins - 1)
        cnt = torch.where(valid_bin, counts[nb], torch.zeros_like(nb))  # [c, 27]
        cand_mask = slot[None, None, :] < cnt[..., None]  # [c, 27, occ]
        cand = order[(starts[nb][..., None] + slot).clamp(max=order.numel() - 1)]  # image indices [c, 27, occ]
        d = im.positions[cand] - im.wrapped[centers][:, None, None, :]
        hit = cand_mask & ((d * d).sum(-1) < cutoff * cutoff) & (cand != ci[:, None, None])
        cc, _, _ = hit.nonzero(as_tuple=True)
        img = cand[hit]
        i, j = centers[cc], im.atom[img]
        out_i.append(i)
        out_j.append(j)
        out_s.append(im.shift[img] - im.wrap[j] + im.wrap[i])
    return torch.cat(out_i), torch.cat(out_j), torch.cat(out_s).round().long()


def _separate_groups(positions: torch.Tensor, eff: torch.Tensor, pbc: torch.Tensor,
                     cutoff: float) -> list[torch.Tensor]:
    """Atoms split into groups more than ``cutoff`` apart along the non-periodic directions.

    Along a non-periodic direction the fill-in vector of ``eff`` is a unit vector orthogonal to
    every periodic vector, so a gap wider than the cutoff in that coordinate separates two
    groups and all their periodic images: they share no pair and can be searched apart. This
    keeps the cell lists small when an atom sits far from the others (a cell list over the
    whole span would need a grid of astronomical size).
    """
    groups = [torch.arange(positions.shape[0], device=positions.device)]
    for k in range(3):
        if bool(pbc[k]):
            continue
        split = []
        for g in groups:
            x = positions[g] @ eff[k]
            order = torch.argsort(x)
            cuts = (torch.nonzero(torch.diff(x[order]) > cutoff, as_tuple=True)[0] + 1).tolist()
            split += [g[order[a:b]].sort().values for a, b in zip([0] + cuts, cuts + [len(g)])] if cuts else [g]
        groups = split
    return groups


@functools.cache
def _vesin():
    """vesin's ``NeighborList`` class, or None where vesin is not installed."""
    try:
        from vesin import NeighborList  # lazy: optional at run time; the fallback search runs without it
    except ImportError:
        return None
    return NeighborList


def _vesin_pairs(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
                 cutoff: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`neighbor_pairs` by vesin's cell list (float64, on the host), for CPU tensors.

    ``cell`` has invertible fill-ins along non-periodic directions (:func:`effective_cell`).
    """
    cls = _vesin()
    if cls is None:
        raise ImportError("method='vesin' needs the vesin package: pip install vesin")
    i, j, s = cls(cutoff=cutoff, full_list=True).compute(
        positions.detach().cpu().double().numpy(), cell.detach().cpu().double().numpy(),
        [bool(p) for p in pbc], quantities="ijS")
    as_long = lambda a: torch.from_numpy(a.astype("int64", copy=False)).to(positions.device)  # noqa: E731
    return as_long(i), as_long(j), as_long(s).reshape(-1, 3)


@dataclass
class PaddedNeighbors:
    """Neighbors in se_e2_a's per-type padded layout.

    Attributes:
        index: ``[n_atoms, sum(capacity)]`` int64 neighbor atom index, ``-1`` where empty.
        shifts: ``[n_atoms, sum(capacity), 3]`` integer cell shifts (stored in the float dtype).
        capacity: slots per neighbor type.
        max_counts: ``[n_types]`` largest number of neighbors of each type seen around an atom.
        n_dropped: neighbors that did not fit (only non-zero with ``on_overflow="count"``).
    """

    index: torch.Tensor
    shifts: torch.Tensor
    capacity: tuple[int, ...]
    max_counts: tuple[int, ...]
    n_dropped: int = 0

    @property
    def mask(self) -> torch.Tensor:
        return self.index >= 0


def check_capacity(max_counts: torch.Tensor | list[int], sel: tuple[int, ...] | list[int],
                   type_names: list[str] | None = None, cutoff: float | None = None) -> None:
    """Raise :class:`~nnpot.errors.NeighborOverflowError` when some atom has more neighbors of a
    type (``max_counts[t]``, the largest count around any atom) than ``sel[t]`` allows, naming
    the ``sel`` to retrain with. The one overflow rule of every neighbor layout."""
    counts = [int(c) for c in (max_counts.tolist() if torch.is_tensor(max_counts) else max_counts)]
    over = [t for t, (c, s) in enumerate(zip(counts, sel)) if c > s]
    if not over:
        return
    t = over[0]
    name = type_names[t] if type_names else f"type {t}"
    where = "within the cutoff" if cutoff is None else f"within the model's cutoff {cutoff} A"
    suggestion = [max(int(s), c) for s, c in zip(sel, counts)]
    raise NeighborOverflowError(
        f"an atom has {counts[t]} neighbors of {name} {where} but sel allows {int(sel[t])}; the structure is denser "
        f"than the model was built for: use sel = {suggestion} or larger (nnpot data info --rcut gives the counts "
        "of a dataset)")


@torch.no_grad()
def padded_neighbors(
    i: torch.Tensor,
    j: torch.Tensor,
    shifts: torch.Tensor,
    distances: torch.Tensor,
    types: torch.Tensor,
    capacity: tuple[int, ...] | list[int],
    n_atoms: int,
    on_overflow: str = "error",
    type_names: list[str] | None = None,
) -> PaddedNeighbors:
    """Arrange pairs into ``[n_atoms, sum(capacity)]`` slots, per neighbor type, nearest first.

    ``types`` ``[n_atoms]`` holds the model type (0..n_types-1) of each atom.
    """
    device = i.device
    n_types = len(capacity)
    total = int(sum(capacity))
    cap = torch.tensor(list(capacity), device=device)
    block_start = torch.cumsum(cap, 0) - cap
    tj = types[j]
    group = i * n_types + tj
    # one sort by (center, neighbor type, distance): groups spaced wider than any distance
    stride = distances.max().double() + 1.0 if distances.numel() else 1.0  # a tensor: no wait on the device
    order = torch.argsort(group.double() * stride + distances.double(), stable=True)
    g_sorted = group[order]
    counts = torch.bincount(g_sorted, minlength=n_atoms * n_types)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.numel(), device=device) - first[g_sorted]
    per_type = counts.view(n_atoms, n_types)
    max_counts = per_type.max(dim=0).values if n_atoms else torch.zeros(n_types, dtype=torch.long)
    n_dropped = 0
    if on_overflow == "error":
        check_capacity(max_counts, capacity, type_names)
    else:
        n_dropped = int((per_type - cap).clamp(min=0).sum())
    keep = rank < cap[tj[order]]
    o = order[keep]
    slot = block_start[tj[o]] + rank[keep]
    index = torch.full((n_atoms, total), -1, dtype=torch.long, device=device)
    shift_out = torch.zeros(n_atoms, total, 3, dtype=distances.dtype, device=device)
    index[i[o], slot] = j[o]
    shift_out[i[o], slot] = shifts[o].to(shift_out.dtype)
    return PaddedNeighbors(index, shift_out, tuple(int(c) for c in capacity), tuple(int(m) for m in max_counts.tolist()), n_dropped)


def build_neighbors(
    positions: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor,
    types: torch.Tensor,
    cutoff: float,
    capacity: tuple[int, ...] | list[int],
    on_overflow: str = "error",
    type_names: list[str] | None = None,
) -> PaddedNeighbors:
    """:func:`neighbor_pairs` followed by :func:`padded_neighbors` for one structure."""
    i, j, s = neighbor_pairs(positions, cell, pbc, cutoff)
    rij = positions[j] + s.to(positions.dtype) @ cell.to(positions.dtype) - positions[i]
    return padded_neighbors(i, j, s, rij.norm(dim=-1), types, capacity, positions.shape[0], on_overflow, type_names)
