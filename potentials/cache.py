"""A store of values by the caller's key, bounded by a byte budget (see its users:
:class:`~nnpot.potentials.batch.NeighborCache`, :class:`~nnpot.potentials.embedding_plan.PlanCache`)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

__all__ = ["ByteBudgetCache"]


class ByteBudgetCache:
    """Values kept by key up to ``max_bytes`` in all; a value that does not fit is not kept."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = int(max_bytes), 0
        self._store: dict[Hashable, Any] = {}

    def _keep(self, key: Hashable, value: Any, size: int) -> None:
        if key in self._store or self.bytes + size > self.max_bytes:
            return
        self._store[key] = value
        self.bytes += size
