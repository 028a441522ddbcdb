"""Energy, forces and virial of any per-atom-energy model, by one autograd call.

The model is a function of the neighbor vectors ``r_ij = r_j + S_ij @ cell - r_i`` alone. With
``g_ij = dE/dr_ij`` (one backward pass):

* forces ``F_k = sum_j g_kj - sum_i g_ik`` (``dr_ij/dr_i = -1``, ``dr_ij/dr_j = +1``);
* virial ``W = -sum_ij r_ij (x) g_ij`` (eV; ``W = -dE/d(strain)`` as DeePMD-kit defines it, so
  the stress is ``-W / volume``);
* per-atom virial: half of ``-r_ij (x) g_ij`` to each of ``i`` and ``j`` (sums to ``W``).

When the energy of atom i depends only on the vectors of atom i's own neighbor slots (every
local model), the atoms can be processed in chunks with exact results and bounded memory. A
model with message passing (``model.is_local`` False) is evaluated on the whole batch at once
and gets the neighbor indices; the formulas above hold unchanged, since its energy is still a
function of the same edge vectors.
"""

from __future__ import annotations

from collections.abc import Hashable

import torch

from nnpot.potentials.batch import AtomsBatch
from nnpot.potentials.embedding_plan import PlanCache, plan_embeddings

__all__ = ["derivatives", "chunk_slices"]


def chunk_slices(n: int, chunk_size: int | None) -> list[slice]:
    """The center-atom chunks :func:`derivatives` processes one at a time."""
    if chunk_size is None or chunk_size >= n:
        return [slice(0, n)]
    return [slice(a, min(n, a + chunk_size)) for a in range(0, n, chunk_size)]


def derivatives(
    model: torch.nn.Module,
    batch: AtomsBatch,
    create_graph: bool = False,
    chunk_size: int | None = None,
    atom_virial: bool = False,
    groups: list[list[torch.Tensor]] | None = None,
    share_embeddings: bool | None = None,
    plan_cache: PlanCache | None = None,
    plan_key: Hashable = None,
) -> dict[str, torch.Tensor]:
    """Energy ``[B]`` (eV), forces ``[N, 3]`` (eV/A), virial ``[B, 3, 3]`` (eV), atom energies ``[N]``.

    Args:
        model: maps ``(rij, mask, types, capacity)`` to per-atom energies.
        batch: the structures and their neighbors.
        create_graph: keep the graph so losses on forces/virials can be differentiated
            (training); forces training needs it.
        chunk_size: process this many center atoms at a time (inference only).
        atom_virial: also return ``"atom_virial"`` ``[N, 3, 3]``.
        groups: for each chunk (see :func:`chunk_slices`), the atoms of each type relative to
            the chunk's start (``model.type_groups``); with them nothing here waits on the
            device, so the call can be captured in a CUDA graph.
        share_embeddings: for models that :attr:`~EnergyModel.shares_embeddings`, evaluate each
            embedding net once per distinct input (:mod:`nnpot.potentials.embedding_plan`):
            the same numbers with less work. ``None``: on for CPU tensors (1.5-1.9x faster
            energy+forces, about 15% faster training steps); off on GPUs until measured there.
            Its planning waits on the device, so it is always off when ``groups`` are given
            (CUDA graph captures).
        plan_cache, plan_key: reuse the batch's embedding plan from ``plan_cache`` under
            ``plan_key`` (for batches that recur, such as training frames; whole batches only).
    """
    n = batch.positions.shape[0]
    local = getattr(model, "is_local", True)
    chunks = chunk_slices(n, None if create_graph or not local else chunk_size)
    dtype = batch.positions.dtype
    forces = torch.zeros(n, 3, dtype=dtype, device=batch.positions.device)
    virial = torch.zeros(batch.n_frames, 3, 3, dtype=dtype, device=forces.device)
    atom_vir = torch.zeros(n, 3, 3, dtype=dtype, device=forces.device) if atom_virial else None
    energies = []
    if share_embeddings is None:
        share_embeddings = batch.positions.device.type == "cpu"
    share = getattr(model, "shares_embeddings", False) and share_embeddings and groups is None
    for c, sl in enumerate(chunks):
        centers = torch.arange(sl.start, sl.stop, device=forces.device)
        with torch.enable_grad():
            rij = batch.edge_vectors(centers=sl)
            if not rij.requires_grad:
                rij.requires_grad_(True)
            index = batch.neighbors.index[sl]
            mask = index >= 0
            kwargs = {} if groups is None else {"groups": groups[c]}
            if not local:
                kwargs["index"] = index
            if share:
                def make():  # called in this iteration, so the loop's names are current
                    return plan_embeddings(index, batch.neighbors.shifts[sl], centers, batch.types,
                                           batch.neighbors.capacity)

                cached = plan_cache is not None and plan_key is not None and len(chunks) == 1
                kwargs["plan"] = plan_cache.get(plan_key, make) if cached else make()
            e_atom = model(rij, mask, batch.types[sl], batch.neighbors.capacity, **kwargs)
            (g,) = torch.autograd.grad(e_atom.sum(), rij, create_graph=create_graph)
        if not create_graph:
            rij, e_atom = rij.detach(), e_atom.detach()
        g = g * mask[..., None]  # [n, K, 3]
        forces = forces.index_add(0, centers, g.sum(dim=1))
        forces = forces.index_add(0, index.clamp(min=0).reshape(-1), -g.reshape(-1, 3))
        pair_w = -torch.einsum("nka,nkb->nab", rij, g)  # [n, 3, 3], each atom's edges
        virial = virial.index_add(0, batch.frame[sl], pair_w)
        if atom_vir is not None:
            per_edge = -0.5 * torch.einsum("nka,nkb->nkab", rij, g)
            atom_vir = atom_vir.index_add(0, centers, per_edge.sum(1))
            atom_vir = atom_vir.index_add(0, index.clamp(min=0).reshape(-1), per_edge.reshape(-1, 3, 3))
        energies.append(e_atom)
    e_atom = torch.cat(energies)
    energy = torch.zeros(batch.n_frames, dtype=e_atom.dtype, device=e_atom.device).index_add(0, batch.frame, e_atom)
    out = {"energy": energy, "forces": forces, "virial": virial, "atom_energy": e_atom}
    if atom_vir is not None:
        out["atom_virial"] = atom_vir
    return out
