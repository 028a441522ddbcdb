"""Integrator steps replayed from CUDA graphs, with the neighbor-list decision on the device.

A block of ``k`` steps (forces, autograd and integrator together: a few hundred kernels per
step) is captured once and replayed with one launch. Inside the graph every force evaluation
records the largest displacement since the last neighbor build (a device scalar, no host
sync). After a block one small read tells whether any atom went further than ``skin / 2``
or anything became non-finite; if so, the state saved at the block's start is restored, the
list is rebuilt there and the block is run again. The trajectory is therefore exactly the one
an eager loop with a per-step check would produce. A thermostat's generator is part of the
saved state: the capture's warm-up step and a rolled-back block give their draws back, so a
stochastic run draws the same numbers, in the same order, as its eager twin.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from nnpot.md.state import DYNAMIC_FIELDS as _FIELDS
from nnpot.md.state import MDState

if TYPE_CHECKING:
    from nnpot.md.driver import ModelForces

__all__ = ["GraphedSteps"]


class GraphedSteps:
    """Replays captured blocks of integrator steps on a CUDA device.

    Args:
        state: the MD state (its tensors are rebound to fixed buffers).
        force_fn: the model's forces with a neighbor list; its :meth:`~nnpot.md.driver.ModelForces.evaluate_state`
            is what the graph calls.
        advance: ``advance(state, force_fn)`` performs one integrator step in place on a
            (shallow copy of the) state, without host synchronisation.
        block: steps per captured graph.
        generator: a CUDA generator the step draws from, registered with the graphs.
        The state's thermostat variables (updated in place by a step) are saved at each block's
        start and restored on a rollback with the rest of the state.
        capture: False replays the blocks eagerly instead (any device; the same bookkeeping,
            which is how the CPU tests exercise it).
    """

    def __init__(self, state: MDState, force_fn: ModelForces, advance: Callable, block: int = 10,
                 generator: torch.Generator | None = None, capture: bool = True):
        self.state, self.force_fn, self.advance = state, force_fn, advance
        self.extra = state.thermostat.tensors()
        self.block = max(1, int(block))
        self.generator = generator
        self.capture = capture
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.layout = force_fn.evaluator.nlist.layout_version
        self.static = {name: getattr(state, name).clone() for name in _FIELDS}
        self.backup = {name: t.clone() for name, t in {**self.static, **self.extra}.items()}
        self.rng_backup: torch.Tensor | None = None
        self.n_rollbacks = 0
        self.n_eager_blocks = 0

    # --- state buffers --------------------------------------------------------------------

    def _bind(self) -> None:
        """Point the state at the static buffers (copying in whatever an eager step left)."""
        for name in _FIELDS:
            value = getattr(self.state, name)
            if value is not self.static[name]:
                self.static[name].copy_(value)
                setattr(self.state, name, self.static[name])

    def _save(self) -> None:
        for name in _FIELDS:
            self.backup[name].copy_(self.static[name])
        for name, t in self.extra.items():
            self.backup[name].copy_(t)
        if self.generator is not None:  # host-side seed and offset: no device sync
            self.rng_backup = self.generator.get_state()

    def _restore(self) -> None:
        for name in _FIELDS:
            self.static[name].copy_(self.backup[name])
        for name, t in self.extra.items():
            t.copy_(self.backup[name])
        if self.generator is not None:
            self.generator.set_state(self.rng_backup)

    def _body(self, k: int) -> None:
        s = copy.copy(self.state)
        for _ in range(k):
            self.advance(s, self.force_fn.evaluate_state)
        for name in _FIELDS:
            self.static[name].copy_(getattr(s, name))

    def _capture(self, k: int) -> torch.cuda.CUDAGraph:
        if not self.capture:
            return _EagerBlock(self, k)
        self._save()
        disp = self.force_fn.evaluator.nlist.max_displacement.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture (autograd, cuBLAS handles)
            self._body(1)
        torch.cuda.current_stream().wait_stream(side)
        self._restore()
        graph = torch.cuda.CUDAGraph()
        if self.generator is not None:
            graph.register_generator_state(self.generator)
        with torch.cuda.graph(graph, pool=self.pool):
            self._body(k)
        self._restore()
        self.force_fn.evaluator.nlist.max_displacement.copy_(disp)
        return graph

    def _graph(self, k: int) -> torch.cuda.CUDAGraph:
        if self.force_fn.evaluator.nlist.layout_version != self.layout:  # the neighbor buffers were replaced
            self.graphs.clear()
            if self.capture:
                torch.cuda.synchronize()
                self.pool = torch.cuda.graph_pool_handle()
            self.layout = self.force_fn.evaluator.nlist.layout_version
        if k not in self.graphs:
            self.graphs[k] = self._capture(k)
        return self.graphs[k]

    # --- running ----------------------------------------------------------------------------

    def _replay(self, k: int) -> tuple[bool, bool]:
        """Run ``k`` steps; returns (the list stayed valid: moves within skin/2, inner blocks
        large enough; all finite)."""
        self._save()
        self._graph(k).replay()
        flags = torch.stack([(self.force_fn.evaluator.nlist.max_displacement <= 0.5 * self.force_fn.evaluator.nlist.skin) & ~self.force_fn.evaluator.nlist.overflow,
                             torch.isfinite(self.static["energy"]).all() & torch.isfinite(self.static["positions"]).all(),
                             self.force_fn.evaluator.nlist.closest < self.force_fn.evaluator.nlist.min_distance])
        ok_disp, finite, close = flags.tolist()
        if close:
            self._restore()  # back to the block's start, the last state known good
            self.force_fn.evaluator.raise_too_close()
        return bool(ok_disp), bool(finite)

    def _rebuild(self) -> None:
        self.force_fn.evaluator.nlist.build(self.state.positions, self.state.cell)

    def run(self, steps: int) -> None:
        """Advance ``steps`` steps (whole blocks from the graph, a remainder eagerly). Raises
        ``FloatingPointError`` (state left at the last good block start) when something became
        non-finite. A block in which some atom moves more than ``skin / 2`` even right after a
        build runs eagerly (counted in :attr:`n_eager_blocks`)."""
        self._bind()
        if self.force_fn.evaluator.nlist.neighbors is None:
            self._rebuild()
        left = int(steps)
        while left >= self.block:
            before = float(self.force_fn.evaluator.nlist.max_displacement)
            ok_disp, finite = self._replay(self.block)
            if not ok_disp:  # an atom went past skin/2 inside the block: redo it with a fresh list
                self.n_rollbacks += 1
                self._restore()
                self._rebuild()
                before = 0.0
                ok_disp, finite = self._replay(self.block)
                if not ok_disp:  # too fast for one block even right after a build: step eagerly
                    self._restore()
                    for _ in range(self.block):
                        self.advance(self.state, self.force_fn)
                    self._bind()
                    self.n_eager_blocks += 1
                    finite = bool(torch.isfinite(self.static["energy"]).all())
            if not finite:
                self._restore()
                raise FloatingPointError("non-finite energy or positions")
            left -= self.block
            # rebuild ahead of time when the next block could cross skin/2 (avoids a rollback)
            now = float(self.force_fn.evaluator.nlist.max_displacement)
            if now + 1.5 * max(now - before, 0.0) > 0.5 * self.force_fn.evaluator.nlist.skin:
                self._rebuild()
        for _ in range(left):  # the remainder, eagerly (the force call checks the list itself)
            self.advance(self.state, self.force_fn)
        self._bind()


class _EagerBlock:
    """Stands in for a captured graph: ``replay`` runs the block's steps eagerly."""

    def __init__(self, owner: GraphedSteps, k: int):
        self.owner, self.k = owner, k

    def replay(self) -> None:
        self.owner._body(self.k)
