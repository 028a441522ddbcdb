"""The smooth-edition Deep Potential descriptor ``se_e2_a``.

For a center atom i with neighbors j within ``rcut`` (Zhang et al., NeurIPS 2018; DeePMD-kit):

* switch ``sw(r)``: 1 below ``rcut_smth``, ``u^3 (-6u^2 + 15u - 10) + 1`` with
  ``u = (r - rcut_smth)/(rcut - rcut_smth)`` up to ``rcut``, 0 beyond (C2-continuous);
* environment row ``R_ij = sw(r)/r * [1, x/r, y/r, z/r]``, normalised per (center type,
  neighbor type) as ``(R_ij - davg) / dstd``;
* embedding ``G_ij = g_{t_j}(R_ij[0])`` of width M1, one net per neighbor type
  (``type_one_side``, the default), or ``g_{t_i t_j}``, one per (center, neighbor) type pair;
* ``T_i = R_i^T G_i / N_sel`` ``[4, M1]`` and the descriptor ``D_i = T_i^T T_i[:, :M2]``
  ``[M1, M2]``, flattened, with ``M2 = axis_neuron``.

As in DeePMD-kit, every one of the ``sel[t]`` slots of a type contributes, and an empty slot
holds the normalised zero row ``-davg/dstd``. This implementation accepts a neighbor layout
of any capacity (e.g. a longer MD list with a skin) and adds the exact correction
``(sel[t] - capacity[t])`` times an empty slot's contribution, so energies equal DeePMD-kit's
definition for every capacity, provided no type has more than ``sel[t]`` neighbors inside
``rcut``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nnpot.errors import ConfigError
from nnpot.nn import ACTIVATIONS, is_activation, MLP
from nnpot.potentials.descriptor_base import Descriptor, DescriptorConfig, _check_widths, register_descriptor
from nnpot.potentials.embedding_plan import EmbeddingPlan, PlanCache, plan_embeddings

__all__ = ["SeE2A", "SeE2AConfig", "smooth_switch", "environment", "empty_slot_term", "by_center_type"]

#: ``share_embeddings`` setting -> on (True), off (False) or by device (None: on for CPU tensors)
SHARE_EMBEDDINGS = {"auto": None, "on": True, "off": False}


@dataclass
class SeE2AConfig(DescriptorConfig):
    """se_e2_a (Zhang et al., "End-to-end symmetry preserving inter-atomic potential energy
    model for finite and extended systems", NeurIPS 2018); defaults are DeePMD-kit's water
    example."""

    type: str = "se_e2_a"
    neuron: list[int] = field(default_factory=lambda: [25, 50, 100])  #: embedding widths
    axis_neuron: int = 16  #: columns of G used in the contraction
    activation: str = "tanh"
    resnet_dt: bool = False
    #: one embedding net per neighbor type (True), or one per (center, neighbor) type pair
    #: (False; DeePMD-kit's default for se_e2_a, n_types times the embedding work)
    type_one_side: bool = True
    #: evaluate each embedding net once per distinct input (the same numbers with less work):
    #: "auto" (on for CPU, off on GPUs until measured there), "on" or "off"
    share_embeddings: str = "auto"

    def validate(self, n_types: int) -> None:
        super().validate(n_types)
        _check_widths("descriptor.neuron", self.neuron)
        if not 0 < self.axis_neuron <= self.neuron[-1]:
            raise ConfigError(f"descriptor.axis_neuron must lie in 1..{self.neuron[-1]}, got {self.axis_neuron}")
        if not is_activation(self.activation):
            raise ConfigError(f"descriptor.activation: {self.activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        # YAML reads on/off/yes/no as booleans, which arrive here as "True"/"False"
        self.share_embeddings = {"true": "on", "false": "off"}.get(str(self.share_embeddings).lower(),
                                                                   self.share_embeddings)
        if self.share_embeddings not in SHARE_EMBEDDINGS:
            raise ConfigError(f"descriptor.share_embeddings must be one of {', '.join(SHARE_EMBEDDINGS)}, "
                              f"got {self.share_embeddings!r}")


def smooth_switch(r: torch.Tensor, rcut_smth: float, rcut: float) -> torch.Tensor:
    """DeePMD's switching function ``sw(r)`` (see the module docstring)."""
    u = ((r - rcut_smth) / (rcut - rcut_smth)).clamp(0.0, 1.0)
    return u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0


def environment(rij: torch.Tensor, mask: torch.Tensor, rcut_smth: float, rcut: float) -> torch.Tensor:
    """Raw environment rows ``sw(r)/r [1, x/r, y/r, z/r]``, zero for empty slots.

    Args:
        rij: ``[n, nnei, 3]`` neighbor vectors, Angstrom.
        mask: ``[n, nnei]`` True for real neighbors.
    Returns:
        ``[n, nnei, 4]``.
    """
    safe = torch.where(mask[..., None], rij, torch.ones_like(rij))  # no 0/0 in empty slots
    r = safe.norm(dim=-1, keepdim=True)
    sw = smooth_switch(r, rcut_smth, rcut) * mask[..., None]
    inv_r = 1.0 / r
    return torch.cat([sw * inv_r, sw * safe * inv_r * inv_r], dim=-1)


@register_descriptor("se_e2_a", SeE2AConfig)
class SeE2A(Descriptor):
    """se_e2_a: maps neighbor vectors to per-atom descriptors ``[n, M1 * M2]``."""

    def __init__(self, config: SeE2AConfig, n_types: int, dtype: torch.dtype = torch.float64):
        super().__init__(config, n_types, dtype)
        self.rcut_smth = float(config.rcut_smth)
        self.nnei = sum(self.sel)
        self.axis_neuron = int(config.axis_neuron)
        widths = [1, *config.neuron]
        self.type_one_side = bool(config.type_one_side)
        #: embedding nets: index t_j (one side), or t_i * n_types + t_j (DeePMD-kit's order)
        self.embeddings = nn.ModuleList(
            MLP(widths, act=config.activation, resnet=True, resnet_dt=config.resnet_dt, final_linear=False,
                init="deepmd", dtype=dtype)
            for _ in range(n_types if self.type_one_side else n_types * n_types)
        )
        # per (center type, neighbor type) statistics of the 4 environment components
        self.register_buffer("davg", torch.zeros(n_types, n_types, 4, dtype=dtype))
        self.register_buffer("dstd", torch.ones(n_types, n_types, 4, dtype=dtype))

        self.plan_cache = PlanCache()  # embedding plans of recurring batches (training frames)

    @property
    def dim_out(self) -> int:
        return self.config.neuron[-1] * self.axis_neuron

    def inputs(self, batch: Any, centers: slice, whole: bool) -> dict[str, Any]:
        """The embedding plan of these centers (:mod:`nnpot.potentials.embedding_plan`), when
        sharing embeddings is on; cached under ``batch.key`` for whole batches. Planning waits
        on the device, so it is off when ``batch.groups`` is set (CUDA-graph capture)."""
        share = SHARE_EMBEDDINGS[self.config.share_embeddings]
        if share is None:
            share = batch.positions.device.type == "cpu"
        if not share or batch.groups is not None or not self.type_one_side:
            return {}
        nb = batch.neighbors

        def make() -> EmbeddingPlan:
            ids = torch.arange(centers.start, centers.stop, device=nb.index.device)
            return plan_embeddings(nb.index[centers], nb.shifts[centers], ids, batch.types, nb.capacity)

        if whole and batch.key is not None:
            return {"plan": self.plan_cache.get(batch.key, make)}
        return {"plan": make()}

    def fit_statistics(self, structures: Sequence, type_map: Sequence[str]) -> None:
        """``davg``/``dstd`` of the environment rows, as DeePMD-kit computes them."""
        from nnpot.potentials.stats import compute_env_stats

        davg, dstd = compute_env_stats(self, structures, type_map)
        self.davg.copy_(davg.to(self.davg))
        self.dstd.copy_(dstd.to(self.dstd))

    def tabulated(self, stride: float = 0.01, r_min: float = 0.5) -> Descriptor:
        """The same descriptor with quintic tables for the embedding nets
        (:mod:`nnpot.potentials.tabulate`, DeePMD-kit's model compression)."""
        from nnpot.potentials.tabulate import TabulatedSeE2A

        return TabulatedSeE2A(self, stride=stride, r_min=r_min)

    def forward(self, rij: torch.Tensor, mask: torch.Tensor, center_types: torch.Tensor,
                capacity: tuple[int, ...], plan: EmbeddingPlan | None = None) -> torch.Tensor:
        """Descriptors of the centers.

        Args:
            rij: ``[n, sum(capacity), 3]`` neighbor vectors, Angstrom, per-type blocks.
            mask: ``[n, sum(capacity)]`` True for real neighbors.
            center_types: ``[n]`` model types of the centers.
            capacity: slots per neighbor type in ``rij``.
            plan: evaluate each embedding net once per distinct input (see
                :mod:`nnpot.potentials.embedding_plan`); the same result with less work.
        Returns:
            ``[n, M1 * M2]``.
        """
        T = rij.new_zeros(rij.shape[0], 4, self.config.neuron[-1])
        for t, rows in type_rows(self, rij, mask, center_types, capacity):
            if rows.shape[1]:
                G = self._embed(t, rows, center_types, plan)  # [n, cap, M1]
                T = T + torch.einsum("nsc,nsm->ncm", rows, G)
            if rows.shape[1] != self.sel[t]:  # slots beyond capacity, as DeePMD-kit would have them
                T = T + (self.sel[t] - rows.shape[1]) * self.empty_slot_terms(t)[center_types]
        return descriptor_from_sum(self, T)

    def _embed(self, t: int, rows: torch.Tensor, center_types: torch.Tensor,
               plan: EmbeddingPlan | None) -> torch.Tensor:
        """Embeddings ``[n, cap, M1]`` of neighbor type ``t``'s rows ``[n, cap, 4]``."""
        if not self.type_one_side:  # one net per center type
            return by_center_type(center_types, self.n_types, lambda c, idx: self.embedding_net(c, t)(
                rows[..., :1] if idx is None else rows.index_select(0, idx)[..., :1]))
        embed = self.embeddings[t]
        if plan is None:
            return embed(rows[..., :1])
        x = rows[..., :1].reshape(-1, 1).index_select(0, plan.first[t])
        return embed(x).index_select(0, plan.rows[t]).view(*rows.shape[:2], -1)

    def embedding_net(self, center_type: int, t: int) -> nn.Module:
        """The embedding net that neighbors of type ``t`` of a center of type ``center_type`` use."""
        return self.embeddings[t if self.type_one_side else center_type * self.n_types + t]

    def empty_slot_terms(self, t: int) -> torch.Tensor:
        """``[n_types, 4, M1]``: what one empty slot of neighbor type ``t`` adds to ``T``, per
        center type."""
        if self.type_one_side:
            return empty_slot_term(self, self.embeddings[t], t)
        return torch.stack([empty_slot_term(self, self.embedding_net(c, t), t)[c] for c in range(self.n_types)])


def by_center_type(center_types: torch.Tensor, n_types: int, fn: Callable[[int, torch.Tensor | None], torch.Tensor],
                   sync_free: bool | None = None) -> torch.Tensor:
    """Rows ``[n, ...]`` made per center type: ``fn(c, idx)`` gives the rows of the centers
    ``idx`` of type ``c``. With ``sync_free`` (default: on CUDA, where finding ``idx`` would wait
    on the device, which CUDA graphs forbid) ``idx`` is None, ``fn`` gives every row and each
    type's rows are kept."""
    if sync_free is None:
        sync_free = center_types.is_cuda
    if sync_free or center_types.numel() == 0:
        out = None
        for c in range(n_types):
            rows = fn(c, None)
            keep = (center_types == c).view(-1, *[1] * (rows.dim() - 1))
            out = rows if out is None else torch.where(keep, rows, out)
        return out
    out = None
    for c in range(n_types):
        idx = torch.nonzero(center_types == c).squeeze(1)
        if idx.numel():
            rows = fn(c, idx)
            out = rows.new_zeros(center_types.shape[0], *rows.shape[1:]) if out is None else out
            out = out.index_copy(0, idx, rows)
    return out


def empty_slot_term(desc: nn.Module, embed: nn.Module, t: int) -> torch.Tensor:
    """``[n_types, 4, M1]``: what one empty slot of neighbor type ``t`` adds to ``T``, per center
    type (its row ``-davg/dstd`` times the embedding of that row's first entry)."""
    empty = -desc.davg[:, t] / desc.dstd[:, t]  # [T, 4]
    return empty[:, :, None] * embed(empty[:, :1])[:, None, :]


def type_rows(desc: nn.Module, rij: torch.Tensor, mask: torch.Tensor, center_types: torch.Tensor,
              capacity: tuple[int, ...]) -> Iterator[tuple[int, torch.Tensor]]:
    """``(t, rows)`` per neighbor type: the normalised environment rows ``[n, capacity[t], 4]``
    of ``desc`` (an se_e2_a descriptor with ``davg``/``dstd``, ``rcut_smth``, ``rcut``)."""
    env = environment(rij, mask, desc.rcut_smth, desc.rcut)  # [n, nnei, 4]
    davg, dstd = desc.davg[center_types], desc.dstd[center_types]  # [n, T, 4]
    start = 0
    for t, cap in enumerate(capacity):
        yield t, (env[:, start:start + cap] - davg[:, t, None]) / dstd[:, t, None]
        start += cap


def descriptor_from_sum(desc: nn.Module, T: torch.Tensor) -> torch.Tensor:
    """``D = T^T T[:, :M2]`` flattened ``[n, M1 * M2]`` from the summed ``T`` ``[n, 4, M1]``
    (before division by the slot count ``desc.nnei``)."""
    T = T / desc.nnei
    D = torch.einsum("ncm,nca->nma", T, T[:, :, : desc.axis_neuron])  # [n, M1, M2]
    return D.reshape(T.shape[0], -1)
