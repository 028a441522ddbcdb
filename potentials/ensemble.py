"""Ensembles of potentials: mean predictions and their disagreement (DP-GEN's model deviation).

Members are :class:`~nnpot.potentials.EnergyModel` objects with the same type map, cutoff and
``sel`` (trained from different seeds and data orders, ``nnpot train --ensemble N``), so one
neighbor list serves them all. For ``M`` members with forces ``F_i^m`` on atom ``i``:

* force deviation of atom ``i``: ``sqrt(mean_m |F_i^m - <F_i>|^2)`` (eV/A), and per structure
  its maximum, minimum and mean over the atoms (``max_devi_f`` is DP-GEN's selection measure);
* energy deviation per atom: ``std_m(E^m) / N`` (eV/atom, population standard deviation).

On disk an ensemble is a folder with ``ensemble.json`` (``{"format": "nnpot-ensemble",
"members": ["member_0/model.nnp", ...]}``, paths relative to the folder), read and written by
:mod:`nnpot.potentials.modelfile` (:func:`~nnpot.potentials.modelfile.load_ensemble`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from nnpot.errors import ConfigError
from nnpot.potentials.batch import AtomsBatch
from nnpot.potentials.derivatives import add_edge_gradients, derivatives

__all__ = ["EnsembleModel", "deviations"]


def deviations(members: Sequence[dict[str, torch.Tensor]], frame: torch.Tensor, n_frames: int) -> dict[str, torch.Tensor]:
    """Means and deviations of per-member results (``energy`` ``[B]``, ``forces`` ``[N, 3]``,
    ``virial`` ``[B, 3, 3]``, ``atom_energy`` ``[N]``) over the structures ``frame`` ``[N]``
    assigns atoms to."""
    stack = {k: torch.stack([m[k] for m in members]) for k in ("energy", "forces", "virial", "atom_energy")}
    out = {k: v.mean(dim=0) for k, v in stack.items()}
    devi = (stack["forces"] - out["forces"]).square().sum(dim=-1).mean(dim=0).sqrt()  # [N]
    blank = devi.new_zeros(n_frames)
    count = blank.index_add(0, frame, torch.ones_like(devi))
    out["devi_f"] = devi
    out["max_devi_f"] = blank.scatter_reduce(0, frame, devi, "amax", include_self=False)
    out["min_devi_f"] = blank.scatter_reduce(0, frame, devi, "amin", include_self=False)
    out["avg_devi_f"] = blank.index_add(0, frame, devi) / count
    out["devi_e"] = stack["energy"].std(dim=0, unbiased=False) / count
    out["energy_members"], out["forces_members"] = stack["energy"], stack["forces"]
    return out


class EnsembleModel(nn.Module):
    """Several potentials evaluated as one: :meth:`evaluate_batch` gives the mean energy,
    forces, virial and atom energies, the members' own, and the deviations of
    :func:`deviations`. Everything that takes a model (calculator, MD drivers, ``Replicas``)
    takes an ensemble."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least 2 models, got {len(members)}")
        first = members[0]
        for k, m in enumerate(members[1:], 1):
            same = (m.type_map == first.type_map and m.cutoff == first.cutoff and list(m.sel) == list(first.sel)
                    and m.dtype == first.dtype and m.is_local == first.is_local)
            if not same:
                raise ConfigError(f"ensemble member {k} differs from member 0 in type map, cutoff, sel, dtype or "
                                  "locality; members share one neighbor list, so these must agree")
        self.members = nn.ModuleList(members)
        self.config = first.config
        #: evaluate all members in one vectorised pass (torch.func.vmap over stacked weights, whole
        #: batches only): True, False (one after the other), None (on CUDA). Off by default: on
        #: CPU it measured 3.1-3.9x slower than one after the other (bench_ensemble.py); on
        #: GPUs it is not measured yet
        self.batched: bool | None = False
        self._stack: tuple | None = None

    type_map = property(lambda self: self.members[0].type_map)
    cutoff = property(lambda self: self.members[0].cutoff)
    sel = property(lambda self: self.members[0].sel)
    dtype = property(lambda self: self.members[0].dtype)
    device = property(lambda self: self.members[0].device)
    is_local = property(lambda self: self.members[0].is_local)
    receptive_field = property(lambda self: max(m.receptive_field for m in self.members))
    is_tabulated = property(lambda self: all(m.is_tabulated for m in self.members))

    def __len__(self) -> int:
        return len(self.members)

    def type_groups(self, types: torch.Tensor) -> list[torch.Tensor]:
        return self.members[0].type_groups(types)

    def tabulated(self, stride: float = 0.01, r_min: float = 0.5) -> EnsembleModel:
        """Every member tabulated (:meth:`EnergyModel.tabulated`)."""
        return EnsembleModel([m.tabulated(stride=stride, r_min=r_min) for m in self.members])

    def evaluate_batch(self, batch: AtomsBatch, chunk_size: int | None = None) -> dict[str, torch.Tensor]:
        """Means, members and deviations (see :func:`deviations`) on one neighbor list: the
        members one after the other, or (:attr:`batched`) all in one vectorised pass."""
        batched = self.batched if self.batched is not None else batch.positions.is_cuda
        if batched and (chunk_size is None or chunk_size >= batch.positions.shape[0]):
            outs = self._members_at_once(batch)
        else:
            outs = [derivatives(m, batch, chunk_size=chunk_size) for m in self.members]
        return deviations(outs, batch.frame, batch.n_frames)

    def _stacked(self) -> tuple[dict, dict, nn.Module]:
        """The members' parameters and buffers stacked along a new first axis, and a
        parameter-free copy of member 0 to call them with (rebuilt after a move or cast)."""
        key = tuple((p.data_ptr(), p.dtype) for m in self.members for p in m.parameters())
        if self._stack is None or self._stack[0] != key:
            params, buffers = stack_module_state(list(self.members))
            self._stack = (key, params, buffers, copy.deepcopy(self.members[0]).to("meta"))
        return self._stack[1:]

    def _members_at_once(self, batch: AtomsBatch) -> list[dict[str, torch.Tensor]]:
        """Every member's results from one vmapped forward pass and one batched backward pass."""
        params, buffers, base = self._stacked()
        n = batch.positions.shape[0]
        everything = slice(0, n)
        with torch.enable_grad():
            rij = batch.edge_vectors().detach().requires_grad_(True)
            index = batch.neighbors.index
            mask = index >= 0
            inputs = self.members[0].descriptor.inputs(batch, everything, whole=True)
            groups = None if batch.groups is None else batch.groups[0]

            def member(p: dict, b: dict) -> torch.Tensor:
                return functional_call(base, (p, b), (rij, mask, batch.types, batch.neighbors.capacity),
                                       {"groups": groups, **inputs})

            e_atom = vmap(member)(params, buffers)  # [M, n]
            eye = torch.eye(len(self.members), dtype=e_atom.dtype, device=e_atom.device)
            (g,) = torch.autograd.grad(e_atom.sum(dim=1), rij, grad_outputs=eye, is_grads_batched=True)
        centers = torch.arange(n, device=rij.device)
        outs = []
        for m in range(len(self.members)):
            forces = torch.zeros_like(batch.positions)
            virial = forces.new_zeros(batch.n_frames, 3, 3)
            forces, virial = add_edge_gradients(forces, virial, g[m] * mask[..., None], rij.detach(), index, centers,
                                                batch.frame)
            energy = forces.new_zeros(batch.n_frames).index_add(0, batch.frame, e_atom[m].detach())
            outs.append({"energy": energy, "forces": forces, "virial": virial, "atom_energy": e_atom[m].detach()})
        return outs
