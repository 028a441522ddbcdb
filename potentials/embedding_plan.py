"""One se_e2_a embedding evaluation per distinct input, not per neighbor slot.

The embedding of slot ``(i, j)`` is ``g_{t_j}(s_ij)``, a net of one normalised scalar
``s_ij = (sw(r)/r - davg[t_i, t_j, 0]) / dstd[t_i, t_j, 0]``. Many slots hold the same input:

* a pair and its reverse when ``i`` and ``j`` have the same type: ``|r_ij| = |r_ji|`` and both
  are normalised by the same ``(t, t)`` statistics (O-O and H-H pairs in water: about half of
  all real slots hold a value that its reverse slot also holds);
* every empty slot around centers of one type: ``-davg/dstd``.

:func:`plan_embeddings` finds these from the neighbor indices and cell shifts, and
:class:`~nnpot.potentials.descriptor.SeE2A` then evaluates each embedding net once per distinct
input and gathers the result into the slots. The energy is the same function of the positions
(a shared value is used where the slot would have computed an equal one), so forces, virials and
their parameter gradients are unchanged; what changes is the work, most of all in training,
where the embedding nets' double backward dominates the step.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch

from nnpot.potentials.cache import ByteBudgetCache

__all__ = ["EmbeddingPlan", "PlanCache", "plan_embeddings"]


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
