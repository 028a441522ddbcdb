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

The embedding plan (end of this module) evaluates each embedding net once per distinct input
instead of once per slot.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from nnpot.errors import ConfigError
from nnpot.nn import ACTIVATIONS, MLP, is_activation
from nnpot.potentials.batch import ByteBudgetCache, make_batch
from nnpot.potentials.descriptors.base import Descriptor, DescriptorConfig, _check_widths, register_descriptor
from nnpot.potentials.descriptors.se_e2_a_kernels import (
    by_center_type,
    descriptor_from_sum,
    environment,
    smooth_switch,
    type_rows,
)
from nnpot.potentials.descriptors.se_e2_a_tables import TabulatedSeE2A

__all__ = ["SeE2A", "SeE2AConfig", "smooth_switch", "environment", "empty_slot_term", "by_center_type",
           "EmbeddingPlan", "PlanCache", "plan_embeddings"]

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


@register_descriptor("se_e2_a", SeE2AConfig)
class SeE2A(Descriptor):
    """se_e2_a: maps neighbor vectors to per-atom descriptors ``[n, M1 * M2]``."""

    @property
    def rcut_smth(self) -> float:
        """Where the smooth switch-off starts, Angstrom (owned by the config, as rcut and sel)."""
        return float(self.config.rcut_smth)

    @property
    def nnei(self) -> int:
        return sum(self.sel)

    def __init__(self, config: SeE2AConfig, n_types: int, dtype: torch.dtype = torch.float64):
        super().__init__(config, n_types, dtype)
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
        """The embedding plan of these centers (the embedding plan below), when
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
        davg, dstd = compute_env_stats(self, structures, type_map)
        self.davg.copy_(davg.to(self.davg))
        self.dstd.copy_(dstd.to(self.dstd))

    def tabulated(self, stride: float = 0.01, r_min: float = 0.5) -> Descriptor:
        """The same descriptor with quintic tables for the embedding nets
        (:mod:`nnpot.potentials.descriptors.se_e2_a_tables`, DeePMD-kit's model compression)."""
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
                the embedding plan below); the same result with less work.
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


def empty_slot_term(desc: nn.Module, embed: nn.Module, t: int) -> torch.Tensor:
    """``[n_types, 4, M1]``: what one empty slot of neighbor type ``t`` adds to ``T``, per center
    type (its row ``-davg/dstd`` times the embedding of that row's first entry)."""
    empty = -desc.davg[:, t] / desc.dstd[:, t]  # [T, 4]
    return empty[:, :, None] * embed(empty[:, :1])[:, None, :]


# --- embedding plans ----------------------------------------------------------------------------
#
# One se_e2_a embedding evaluation per distinct input, not per neighbor slot.
#
# The embedding of slot ``(i, j)`` is ``g_{t_j}(s_ij)``, a net of one normalised scalar
# ``s_ij = (sw(r)/r - davg[t_i, t_j, 0]) / dstd[t_i, t_j, 0]``. Many slots hold the same input:
#
# * a pair and its reverse when ``i`` and ``j`` have the same type: ``|r_ij| = |r_ji|`` and both
#   are normalised by the same ``(t, t)`` statistics (O-O and H-H pairs in water: about half of
#   all real slots hold a value that its reverse slot also holds);
# * every empty slot around centers of one type: ``-davg/dstd``.
#
# :func:`plan_embeddings` finds these from the neighbor indices and cell shifts, and
# :class:`~nnpot.potentials.descriptors.se_e2_a.SeE2A` then evaluates each embedding net once per distinct
# input and gathers the result into the slots. The energy is the same function of the positions
# (a shared value is used where the slot would have computed an equal one), so forces, virials and
# their parameter gradients are unchanged; what changes is the work, most of all in training,
# where the embedding nets' double backward dominates the step.


@dataclass
class EmbeddingPlan:
    """Per neighbor type ``t``: ``first[t]`` ``[U_t]`` the flat slot (into ``[n * capacity[t]]``)
    whose input each distinct row takes, and ``rows[t]`` ``[n * capacity[t]]`` the distinct row
    each slot reads."""

    first: list[torch.Tensor]
    rows: list[torch.Tensor]

    @property
    def n_evaluations(self) -> int:
        return sum(int(f.numel()) for f in self.first)


def _canonical_sign(shift: torch.Tensor) -> torch.Tensor:
    """+1 or -1 per shift ``[..., 3]``: the sign of its first non-zero component (+1 for 0)."""
    sign = torch.ones(shift.shape[:-1], dtype=torch.long, device=shift.device)
    for k in (2, 1, 0):  # the first non-zero component decides, so it is applied last
        s = shift[..., k]
        sign = torch.where(s != 0, torch.sign(s), sign)
    return sign


@torch.no_grad()
def plan_embeddings(index: torch.Tensor, shifts: torch.Tensor, centers: torch.Tensor, types: torch.Tensor,
                    capacity: tuple[int, ...]) -> EmbeddingPlan:
    """The distinct embedding inputs of the slots of ``centers``.

    Args:
        index: ``[n, sum(capacity)]`` neighbor atom of each slot (``-1`` empty), global ids.
        shifts: ``[n, sum(capacity), 3]`` integer cell shifts of the slots (any dtype).
        centers: ``[n]`` global ids of the center atoms.
        types: ``[N]`` types of all atoms (indexed by the global ids).
        capacity: slots per neighbor type.
    """
    center_types = types[centers]
    n_types, n_atoms = len(capacity), max(int(types.numel()), 1)
    reach = int(shifts.abs().max()) if shifts.numel() else 0
    base = 2 * reach + 1  # a shift component lies in [-reach, reach]
    shared_ok = (n_atoms * n_atoms * base ** 3) < (1 << 62) // 4  # keys fit in int64
    first, rows = [], []
    start = 0
    for t, cap in enumerate(capacity):
        idx = index[:, start:start + cap]
        sh = shifts[:, start:start + cap].round().long()
        start += cap
        n = idx.shape[0]
        real = idx >= 0
        slot = torch.arange(n * cap, device=idx.device).view(n, cap)
        # keys: empty slots by center type, [0, T); other slots their own, T + slot; a pair
        # (a, b, S) of two atoms of type t and its reverse (b, a, -S) one shared key, lower id
        # first (a periodic self-image (a, a, S) takes the sign of S that makes it canonical)
        keys = torch.where(real, n_types + slot, center_types[:, None].expand_as(idx))
        if shared_ok:
            a = centers[:, None].expand_as(idx)
            same = real & (center_types[:, None] == t)
            swap = (a > idx) | ((a == idx) & (_canonical_sign(sh) < 0))
            lo, hi = torch.where(swap, idx, a), torch.where(swap, a, idx)
            sh = torch.where(swap[..., None], -sh, sh) + reach
            code = ((lo * n_atoms + hi) * base + sh[..., 0]) * base + sh[..., 1]
            code = code * base + sh[..., 2]
            keys = torch.where(same, n_types + n * cap + code, keys)
        _, inverse = torch.unique(keys.view(-1), return_inverse=True)
        flat = slot.view(-1)
        n_rows = int(inverse.max()) + 1 if flat.numel() else 0
        head = torch.full((n_rows,), flat.numel(), dtype=torch.long, device=idx.device)
        first.append(head.scatter_reduce(0, inverse, flat, reduce="amin"))
        rows.append(inverse)
    return EmbeddingPlan(first, rows)


class PlanCache(ByteBudgetCache):
    """Plans of batches that recur (training frames, epoch after epoch), by the caller's key, up
    to ``max_bytes``; a cached plan is the one :func:`plan_embeddings` would make again."""

    def __init__(self, max_bytes: int = 1 << 30):
        super().__init__(max_bytes)

    def get(self, key: Hashable, make: Callable[[], EmbeddingPlan]) -> EmbeddingPlan:
        """The plan stored under ``key``, or ``make()``'s (stored while it fits)."""
        plan = self._store.get(key)
        if plan is None:
            plan = make()
            self._keep(key, plan, sum(x.numel() * x.element_size() for x in (*plan.first, *plan.rows)))
        return plan


_PROTECTION = 1e-2  # smallest std accepted (DeePMD-kit's protection)


@torch.no_grad()
def compute_env_stats(d: torch.nn.Module, structures: Sequence, type_map: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``davg, dstd`` ``[n_types, n_types, 4]`` of se_e2_a descriptor ``d`` over all ``sel`` slots (empty ones count as zero rows).

    The radial component gets its mean and standard deviation; the three angular components
    get mean 0 and the root mean square of all three, as in DeePMD-kit.
    """
    n_types = d.n_types
    sums = torch.zeros(n_types, n_types, 5, dtype=torch.float64)  # n, sum r, sum r^2, sum a, sum a^2


    for s in tqdm(structures, desc="statistics", unit=" frames", leave=False, disable=None):
        batch = make_batch([s], type_map, d.rcut, d.sel, dtype=torch.float64)
        env = environment(batch.edge_vectors(), batch.neighbors.mask, d.rcut_smth, d.rcut)  # [N, K, 4]
        start = 0
        for tj, cap in enumerate(d.sel):
            block = env[:, start:start + cap]
            start += cap
            for ti in range(n_types):
                b = block[batch.types == ti]
                if b.numel() == 0:
                    continue
                sums[ti, tj] += torch.stack([
                    torch.tensor(float(b.shape[0] * b.shape[1]), dtype=torch.float64),
                    b[..., 0].sum(), (b[..., 0] ** 2).sum(), b[..., 1:].sum(), (b[..., 1:] ** 2).sum(),
                ])
    count = sums[..., 0].clamp(min=1)
    avg_r = sums[..., 1] / count
    std_r = (sums[..., 2] / count - avg_r ** 2).clamp(min=0).sqrt()
    std_a = (sums[..., 4] / (3 * count)).sqrt()
    std_r = torch.where(std_r < _PROTECTION, torch.full_like(std_r, _PROTECTION), std_r)
    std_a = torch.where(std_a < _PROTECTION, torch.full_like(std_a, _PROTECTION), std_a)
    davg = torch.zeros(n_types, n_types, 4, dtype=torch.float64)
    davg[..., 0] = avg_r
    dstd = torch.stack([std_r, std_a, std_a, std_a], dim=-1)
    return davg, dstd
