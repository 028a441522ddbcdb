"""nnpot models as metatomic ``AtomisticModel`` files (``nnpot convert m.nnp -o m.pt --format metatomic``).

A metatomic file is one TorchScript archive that metatomic-ase, metatomic-torchsim, i-PI's
driver, PLUMED, GROMACS, OpenMM and LAMMPS's metatomic build load without nnpot. The export
has two parts:

* the model's per-atom energies from padded neighbor slots (nnpot's own layout, see
  :class:`~nnpot.potentials.descriptors.base.Descriptor`), recorded by ``torch.jit.trace``:
  nnpot's descriptors are written for speed in eager PyTorch, not in the TorchScript
  subset. A trace records one path through the code, so the export checks it on probe
  structures of other sizes and element mixes against the eager model (energies and forces)
  and refuses, naming the descriptor, where they differ;
* a scripted wrapper, :class:`MetatomicEnergy`, that turns the engine's full neighbor list
  (pairs and their distance vectors, which carry the gradients to positions and cell) into
  those slots, and the per-atom energies into metatomic's ``energy`` output (per system or
  per atom, only the ``selected_atoms`` counted), and for an ensemble its mean with
  ``energy_ensemble`` (every member) and ``energy_uncertainty`` (their standard deviation).

Forces and stress are the engine's: metatomic differentiates the energy with respect to
positions and strain, through the distance vectors of the neighbor list.
"""

import errno
import os
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple  # noqa: UP035  (TorchScript reads these annotations)

import numpy as np
import torch
from torch import nn

from nnpot.atomic import disk_full
from nnpot.errors import NNPotError
from nnpot.potentials.ensemble import EnsembleModel
from nnpot.potentials.model import EnergyModel

from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput, NeighborListOptions, System

__all__ = ["export_metatomic", "MetatomicEnergy", "pad_neighbors"]


def pad_neighbors(first: torch.Tensor, second: torch.Tensor, vectors: torch.Tensor, types: torch.Tensor,
                  n_atoms: int, sel: List[int], rcut: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """nnpot's padded slots from a full list of pairs ``first -> second`` with distance vectors
    ``vectors`` ``[P, 3]``: ``rij`` ``[n_atoms, sum(sel), 3]`` (differentiable in ``vectors``),
    ``mask`` and ``index`` (the neighbor atom, -1 for empty), per neighbor type nearest first.
    Raises when an atom has more neighbors of a type than ``sel`` allows."""
    n_types = len(sel)
    dist = torch.linalg.vector_norm(vectors.detach(), dim=1)
    inside = torch.nonzero(dist < rcut).squeeze(1)
    first, second, vectors, dist = first[inside], second[inside], vectors[inside], dist[inside]
    neighbor_type = types[second]
    group = first * n_types + neighbor_type
    order = torch.argsort(dist, stable=True)  # nearest first within each (center, neighbor type) group
    order = order[torch.argsort(group[order], stable=True)]
    first, second, vectors = first[order], second[order], vectors[order]
    neighbor_type, group = neighbor_type[order], group[order]
    counts = torch.bincount(group, minlength=n_atoms * n_types)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(group.shape[0], device=group.device) - starts[group]
    limit = torch.tensor(sel, device=group.device)
    over = torch.nonzero(rank >= limit[neighbor_type])
    if over.shape[0] > 0:
        k = int(over[0, 0])
        raise ValueError("nnpot model: atom " + str(int(first[k])) + " has more than "
                         + str(sel[int(neighbor_type[k])]) + " neighbors of its model type "
                         + str(int(neighbor_type[k])) + " within the cutoff (sel); the model was not trained "
                         "on environments this dense (overlapping atoms?)")
    n_slots = int(limit.sum())
    column = (torch.cumsum(limit, 0) - limit)[neighbor_type] + rank
    flat = first * n_slots + column
    rij = vectors.new_zeros(n_atoms * n_slots, 3).index_add(0, flat, vectors)
    mask = torch.zeros(n_atoms * n_slots, dtype=torch.bool, device=flat.device).index_fill(0, flat, True)
    index = torch.full((n_atoms * n_slots,), -1, dtype=torch.long, device=flat.device)
    index = index.index_copy(0, flat, second)
    return rij.view(n_atoms, n_slots, 3), mask.view(n_atoms, n_slots), index.view(n_atoms, n_slots)


class SlotEnergies(nn.Module):
    """Eager: per-atom energies ``[members, n]`` of one model or an ensemble's members from
    padded slots; what :func:`export_metatomic` traces."""

    def __init__(self, models: List[EnergyModel]):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.capacity = tuple(models[0].sel)
        self.local = bool(models[0].is_local)

    def forward(self, rij: torch.Tensor, mask: torch.Tensor, types: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        extra = {} if self.local else {"index": index}
        return torch.stack([m(rij, mask, types, self.capacity, **extra) for m in self.models])


class MetatomicEnergy(nn.Module):
    """The scripted part of the export: metatomic systems in, ``energy`` (and for ensembles
    ``energy_ensemble`` and ``energy_uncertainty``) out."""

    def __init__(self, core: torch.jit.ScriptModule, numbers: List[int], sel: List[int], rcut: float, members: int):
        super().__init__()
        self.core = core
        lookup = torch.full((119,), -1, dtype=torch.long)
        lookup[torch.tensor(numbers)] = torch.arange(len(numbers))
        self.register_buffer("lookup", lookup)
        self.numbers = list(numbers)
        self.sel = list(sel)
        self.rcut = float(rcut)
        self.members = int(members)
        self.neighbors = NeighborListOptions(cutoff=self.rcut, full_list=True, strict=True, requestor="nnpot")

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.neighbors]

    def _model_types(self, numbers: torch.Tensor) -> torch.Tensor:
        known = (numbers >= 0) & (numbers < 119)
        types = torch.where(known, self.lookup[numbers.clamp(0, 118)], torch.full_like(numbers, -1))
        bad = torch.nonzero(types < 0)
        if bad.shape[0] > 0:
            raise ValueError("nnpot model: atomic number " + str(int(numbers[int(bad[0, 0])]))
                             + " is not among the model's elements " + str(self.numbers))
        return types

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        if len(systems) == 0:
            return {}
        device = systems[0].positions.device
        firsts: List[torch.Tensor] = []
        seconds: List[torch.Tensor] = []
        vectors: List[torch.Tensor] = []
        types: List[torch.Tensor] = []
        system_of: List[torch.Tensor] = []
        atom_of: List[torch.Tensor] = []
        offset = 0
        for s, system in enumerate(systems):
            n = system.positions.shape[0]
            nl = system.get_neighbor_list(self.neighbors)
            pairs = nl.samples.values.to(torch.long)
            firsts.append(pairs[:, 0] + offset)
            seconds.append(pairs[:, 1] + offset)
            vectors.append(nl.values.reshape(-1, 3))
            types.append(self._model_types(system.types.to(torch.long)))
            system_of.append(torch.full((n,), s, dtype=torch.long, device=device))
            atom_of.append(torch.arange(n, dtype=torch.long, device=device))
            offset += n
        all_types = torch.cat(types)
        rij, mask, index = pad_neighbors(torch.cat(firsts), torch.cat(seconds), torch.cat(vectors), all_types,
                                         offset, self.sel, self.rcut)
        atom_energy = self.core(rij, mask, all_types, index)  # [members, N]
        system_ids = torch.cat(system_of)
        atom_ids = torch.cat(atom_of)
        if selected_atoms is not None:
            chosen = selected_atoms.values.to(torch.long).to(device)
            keep = torch.zeros(len(systems), offset, dtype=torch.bool, device=device)
            keep[chosen[:, 0], chosen[:, 1]] = True
            counted = keep[system_ids, atom_ids]
            atom_energy = atom_energy[:, counted]
            system_ids = system_ids[counted]
            atom_ids = atom_ids[counted]

        results: Dict[str, TensorMap] = {}
        for name, request in outputs.items():
            per_atom = request.sample_kind == "atom"
            if per_atom:
                values = atom_energy.transpose(0, 1)  # [atoms, members]
                samples = Labels(["system", "atom"], torch.stack([system_ids, atom_ids], dim=1).to(torch.int32))
            else:
                values = atom_energy.new_zeros(len(systems), self.members).index_add(0, system_ids,
                                                                                    atom_energy.transpose(0, 1))
                samples = Labels(["system"], torch.arange(len(systems), device=device).to(torch.int32)[:, None])
            if name == "energy":
                values = values.mean(dim=1, keepdim=True)
            elif name == "energy_uncertainty":
                values = values.std(dim=1, unbiased=False, keepdim=True)
            elif name != "energy_ensemble":
                continue
            properties = Labels(["energy"], torch.arange(values.shape[1], device=device).to(torch.int32)[:, None])
            block = TensorBlock(values=values, samples=samples, components=[], properties=properties)
            results[name] = TensorMap(Labels(["_"], torch.zeros(1, 1, dtype=torch.int32, device=device)), [block])
        return results


def _probe(model: EnergyModel, counts: List[int], seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """A non-periodic cluster with ``counts[t]`` atoms of model type ``t``, at least 0.9 A
    apart, in a ball of diameter 0.9 cutoff (widened when the atoms do not fit)."""
    rng = np.random.default_rng(seed)
    types = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(types)
    radius = 0.45 * model.cutoff
    positions: list[np.ndarray] = []
    tries = 0
    while len(positions) < len(types):
        p = rng.uniform(-radius, radius, 3)
        if np.linalg.norm(p) < radius and all(np.linalg.norm(p - q) > 0.9 for q in positions):
            positions.append(p)
        tries += 1
        if tries % 1000 == 0:
            radius *= 1.1
    return np.array(positions), types


def _slots(model: EnergyModel, positions: np.ndarray, types: np.ndarray) -> Tuple[torch.Tensor, ...]:
    """Padded slots of every pair of a probe cluster (a full list), in the model's dtype."""
    pos = torch.tensor(positions, dtype=model.dtype, requires_grad=True)
    n = len(types)
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    first, second = torch.tensor(i), torch.tensor(j)
    t = torch.tensor(types)
    rij, mask, index = pad_neighbors(first, second, pos[second] - pos[first], t, n, list(model.sel), model.cutoff)
    return pos, rij, mask, t, index


def _trace_checked(models: List[EnergyModel], name: str) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of :class:`SlotEnergies`, checked against the eager module on
    clusters of other sizes and element mixes (energies and forces)."""
    model = models[0]
    eager = SlotEnergies(models).eval()
    sel = list(model.sel)
    full = [max(1, min(s, 3)) for s in sel]
    _, *example = _slots(model, *_probe(model, full, seed=0))
    try:
        with warnings.catch_warnings():  # the trace's warnings are what the probes below check
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(eager, tuple(example), check_trace=False)
    except Exception as exc:  # noqa: BLE001  (anything tracing meets is a reason to refuse)
        raise NNPotError(f"the {name} descriptor cannot be exported to TorchScript: {exc}") from None
    tol = 1e-9 if model.dtype == torch.float64 else 1e-4
    checks = [[max(1, min(s, 2)) for s in sel], [min(s, 4) if t == 0 else 0 for t, s in enumerate(sel)],
              [max(1, min(s, 5)) for s in sel]]
    for k, counts in enumerate(checks):
        pos, *inputs = _slots(model, *_probe(model, counts, seed=k + 1))
        want = eager(*inputs)
        got = traced(*inputs)
        f_want = torch.autograd.grad(want.sum(), pos, retain_graph=True)[0]
        f_got = torch.autograd.grad(got.sum(), pos)[0]
        scale = 1.0 + float(want.detach().abs().max()) + float(f_want.abs().max())
        err = max(float((want - got).detach().abs().max()), float((f_want - f_got).abs().max()))
        if got.shape != want.shape or not err <= tol * scale:
            raise NNPotError(f"the {name} descriptor cannot be exported to TorchScript: its traced form differs from "
                             f"the model by {err:.3g} on a {len(pos)}-atom probe (it depends on the input in a way a "
                             "trace does not record)")
    return traced


def _devices(core: torch.jit.ScriptModule) -> List[str]:
    """The devices the traced energies can move to, in order of preference: CPU first (where
    the export is traced and checked), CUDA too unless the trace holds a fixed device (a
    tensor made with ``device=`` inside the model)."""
    fixed = any("Device = prim::Constant" in line for line in str(core.inlined_graph).splitlines())
    return ["cpu"] if fixed else ["cpu", "cuda"]


def export_metatomic(model: EnergyModel | EnsembleModel, path: str | os.PathLike[str]) -> AtomisticModel:
    """Write ``model`` (or an ensemble) to ``path`` as a metatomic ``AtomisticModel`` and return it.

    Raises :class:`~nnpot.errors.NNPotError` when metatomic-torch is missing or the descriptor
    cannot be exported (named in the message).
    """
    from ase.data import atomic_numbers  # lazy: ase is heavy and only the export needs it

    models = list(model.members) if isinstance(model, EnsembleModel) else [model]
    first = models[0]
    name = first.config.descriptor.type
    cpu = [m.to("cpu").eval() for m in models]
    for m in cpu:
        for p in m.parameters():
            p.requires_grad_(False)
    core = _trace_checked(cpu, name)
    numbers = [atomic_numbers[e] for e in first.type_map]
    wrapper = MetatomicEnergy(core, numbers, list(first.sel), first.cutoff, len(models)).eval()
    dtype = "float64" if first.dtype == torch.float64 else "float32"
    energy = {"energy": ModelOutput(unit="eV", sample_kind="atom", explicit_gradients=[])}
    if len(models) > 1:
        energy["energy_ensemble"] = ModelOutput(unit="eV", sample_kind="atom", explicit_gradients=[])
        energy["energy_uncertainty"] = ModelOutput(unit="eV", sample_kind="atom", explicit_gradients=[])
    capabilities = ModelCapabilities(outputs=energy, atomic_types=numbers,
                                     interaction_range=float(first.receptive_field), length_unit="angstrom",
                                     supported_devices=_devices(core), dtype=dtype)
    meta = getattr(first, "meta", {}) or {}
    description = (f"nnpot {name} model, elements {' '.join(first.type_map)}, cutoff {first.cutoff} A"
                   + (f", ensemble of {len(models)}" if len(models) > 1 else ""))
    metadata = ModelMetadata(name=f"nnpot-{name}", description=description,
                             references={"implementation": ["nnpot " + str(meta.get("nnpot_version", ""))]})
    atomistic = AtomisticModel(wrapper, metadata, capabilities)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # staged under the final name (TorchScript names the archive's folder after the file), then renamed
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staged = Path(tmp) / out.name
        try:
            atomistic.save(str(staged))
        except RuntimeError as exc:  # torch's archive writer reports a full disk this way
            if disk_full(out.parent):
                raise OSError(errno.ENOSPC, "no space left on device (the previous file is kept)", str(out)) from None
            raise NNPotError(f"{out}: could not be written ({str(exc).splitlines()[0]}); nothing was replaced") from None
        os.replace(staged, out)
    return atomistic
