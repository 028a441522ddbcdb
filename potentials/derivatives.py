"""Energy, forces and virial of any per-atom-energy model, by one autograd call.

The model is a function of the neighbor vectors ``r_ij = r_j + S_ij @ cell - r_i`` alone. With
``g_ij = dE/dr_ij`` (one backward pass):

* forces ``F_k = sum_j g_kj - sum_i g_ik`` (``dr_ij/dr_i = -1``, ``dr_ij/dr_j = +1``);
* virial ``W = -sum_ij r_ij (x) g_ij`` (eV; ``W = -dE/d(strain)`` as DeePMD-kit defines it, so
  the stress is ``-W / volume``);
* per-atom virial: half of ``-r_ij (x) g_ij`` to each of ``i`` and ``j`` (sums to ``W``).

When the energy of atom i depends only on the vectors of atom i's own neighbor slots (every
local model), the atoms can be processed in chunks with exact results and bounded memory.
The same property lets a batch hold ghost atoms (domain decomposition, :mod:`nnpot.lammps`):
the neighbor list has rows for the first ``n_centers`` atoms only, the others are neighbors
whose own energies another process counts. The energy and virial are then those of the
centers' energies, and the forces on ghosts are the gradients their owners must receive. A
model with message passing (``model.is_local`` False) is evaluated on the whole batch at once
and gets the neighbor indices; the formulas above hold unchanged, since its energy is still a
function of the same edge vectors. Under domain decomposition such a model needs the features of
its ghost atoms: they get neighbor rows too, and ``batch.counted`` says how many centers (the
owned atoms, first) have their energies counted; the rest only feed the messages.
"""

from __future__ import annotations

import torch

from nnpot.potentials.batch import AtomsBatch

__all__ = ["derivatives", "chunk_slices", "add_edge_gradients"]


def chunk_slices(n: int, chunk_size: int | None) -> list[slice]:
    """The center-atom chunks :func:`derivatives` processes one at a time."""
    if chunk_size is None or chunk_size >= n:
        return [slice(0, n)]
    return [slice(a, min(n, a + chunk_size)) for a in range(0, n, chunk_size)]


def add_edge_gradients(forces: torch.Tensor, virial: torch.Tensor, g: torch.Tensor, rij: torch.Tensor,
                       index: torch.Tensor, centers: torch.Tensor, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Add the forces ``[N, 3]`` and virials ``[B, 3, 3]`` of the edge gradients ``g = dE/dr_ij``
    ``[n, K, 3]`` (zero in empty slots) of the centers ``centers`` (in structures ``frame``)
    with neighbors ``index`` (the formulas of the module docstring)."""
    forces = forces.index_add(0, centers, g.sum(dim=1))
    forces = forces.index_add(0, index.clamp(min=0).reshape(-1), -g.reshape(-1, 3))
    pair_w = -torch.einsum("nka,nkb->nab", rij, g)  # [n, 3, 3], each atom's edges
    return forces, virial.index_add(0, frame, pair_w)


def derivatives(
    model: torch.nn.Module,
    batch: AtomsBatch,
    create_graph: bool = False,
    chunk_size: int | None = None,
    atom_virial: bool = False,
) -> dict[str, torch.Tensor]:
    """Energy ``[B]`` (eV), forces ``[N, 3]`` (eV/A), virial ``[B, 3, 3]`` (eV), atom energies
    ``[n_centers]`` (every atom unless the batch has ghosts: see the module docstring; the
    first ``batch.counted`` when set).

    Args:
        model: an :class:`~nnpot.potentials.EnergyModel` (per-atom energies from
            ``(rij, mask, types, capacity, groups, **descriptor inputs)``).
        batch: the structures and their neighbors. With ``batch.groups`` (the atoms of each
            type per chunk) nothing here waits on the device, so the call can be captured in a
            CUDA graph.
        create_graph: keep the graph so losses on forces/virials can be differentiated
            (training); forces training needs it.
        chunk_size: process this many center atoms at a time (inference only; local models).
        atom_virial: also return ``"atom_virial"`` ``[N, 3, 3]``.
    """
    n = batch.positions.shape[0]
    chunks = chunk_slices(batch.n_centers, None if create_graph or not model.is_local else chunk_size)
    dtype = batch.positions.dtype
    forces = torch.zeros(n, 3, dtype=dtype, device=batch.positions.device)
    virial = torch.zeros(batch.n_frames, 3, 3, dtype=dtype, device=forces.device)
    atom_vir = torch.zeros(n, 3, 3, dtype=dtype, device=forces.device) if atom_virial else None
    energies = []
    for c, sl in enumerate(chunks):
        centers = torch.arange(sl.start, sl.stop, device=forces.device)
        with torch.enable_grad():
            rij = batch.edge_vectors(centers=sl)
            if not rij.requires_grad:
                rij.requires_grad_(True)
            index = batch.neighbors.index[sl]
            mask = index >= 0
            inputs = model.descriptor.inputs(batch, sl, whole=len(chunks) == 1)
            groups = None if batch.groups is None else batch.groups[c]
            e_atom = model(rij, mask, batch.types[sl], batch.neighbors.capacity, groups=groups, **inputs)
            if batch.counted is not None:  # ghost centers: features for the messages, no energy here
                e_atom = e_atom[:batch.counted]
            (g,) = torch.autograd.grad(e_atom.sum(), rij, create_graph=create_graph)
        if not create_graph:
            rij, e_atom = rij.detach(), e_atom.detach()
        g = g * mask[..., None]  # [n, K, 3]
        forces, virial = add_edge_gradients(forces, virial, g, rij, index, centers, batch.frame[sl])
        if atom_vir is not None:
            per_edge = -0.5 * torch.einsum("nka,nkb->nkab", rij, g)
            atom_vir = atom_vir.index_add(0, centers, per_edge.sum(1))
            atom_vir = atom_vir.index_add(0, index.clamp(min=0).reshape(-1), per_edge.reshape(-1, 3, 3))
        energies.append(e_atom)
    e_atom = torch.cat(energies)
    energy = torch.zeros(batch.n_frames, dtype=e_atom.dtype, device=e_atom.device).index_add(
        0, batch.frame[:e_atom.shape[0]], e_atom)
    out = {"energy": energy, "forces": forces, "virial": virial, "atom_energy": e_atom}
    if atom_vir is not None:
        out["atom_virial"] = atom_vir
    return out
