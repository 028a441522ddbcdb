"""Tabulated se_e2_a: the embedding nets replaced by piecewise quintic tables.

An embedding net ``g_t`` of se_e2_a maps one scalar, the normalised ``s(r)`` of a neighbor,
to ``M1`` channels. DeePMD-kit's model compression (``dp compress``; Lu et al., JCTC 2022)
replaces it by a table: on bins of width ``h`` each channel is the quintic polynomial that
matches ``g``, ``g'`` and ``g''`` at both bin ends (C2 across bins, error ~ h^6 g^(6)). With the
fused kernels of :mod:`nnpot.potentials.descriptors.se_e2_a_kernels` (environment, normalisation,
table and contraction in one pass; one kernel back), evaluation never stores anything per
neighbor, whereas the exact model's ``[atoms, neighbors, M1]`` embedding bounds its speed and
memory.

The table spans the inputs reached by neighbors at distances ``>= r_min`` (and empty slots);
closer pairs extrapolate the end polynomial. A tabulated model is for inference (energies,
forces, virials); it is built from the exact model in a fraction of a second, so model files
hold only the exact one.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import jvp

from nnpot.potentials.descriptors.base import Descriptor
from nnpot.potentials.descriptors.se_e2_a_kernels import (
    by_center_type,
    contract_reference,
    descriptor_from_sum,
    fused_descriptor_sum,
    triton_available,
    type_rows,
)

if TYPE_CHECKING:
    from nnpot.potentials.descriptors.se_e2_a import SeE2A

__all__ = ["TabulatedSeE2A", "quintic_table"]


def _derivatives(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``g(x), g'(x), g''(x)`` ``[K, M]`` of a scalar-input net at the points ``x`` ``[K]``."""
    ones = torch.ones_like(x[:, None])

    def first(z):
        return jvp(net, (z,), (ones,))

    (g, dg), (_, d2g) = jvp(first, (x[:, None],), (ones,))
    return g, dg, d2g


def quintic_table(net: nn.Module, lo: float, h: float, nbins: int) -> torch.Tensor:
    """Coefficients ``[nbins, 6, M]`` (powers of ``u`` in ``[0, 1]`` per bin) of the quintic
    Hermite interpolant of ``net`` on the nodes ``lo + b h``, in float64."""
    net = copy.deepcopy(net).to(torch.float64)
    with torch.no_grad():
        x = lo + h * torch.arange(nbins + 1, dtype=torch.float64, device=next(net.parameters()).device)
        y, dy, d2y = _derivatives(net, x)
    dy, d2y = dy * h, d2y * h * h  # derivatives with respect to u
    y0, y1, d0, d1, s0, s1 = y[:-1], y[1:], dy[:-1], dy[1:], d2y[:-1], d2y[1:]
    jump = y1 - y0
    c3 = 10 * jump - 6 * d0 - 4 * d1 - 1.5 * s0 + 0.5 * s1
    c4 = -15 * jump + 8 * d0 + 7 * d1 + 1.5 * s0 - s1
    c5 = 6 * jump - 3 * d0 - 3 * d1 - 0.5 * s0 + 0.5 * s1
    return torch.stack([y0, d0, 0.5 * s0, c3, c4, c5], dim=1)


class TabulatedSeE2A(Descriptor):
    """An :class:`SeE2A` whose embedding nets are tables; same inputs and outputs.

    Args:
        exact: the descriptor to tabulate (its statistics must be set).
        stride: bin width in the embedding input, rounded to a power of two so that the
            kernel's float32 constants are exact (DeePMD-kit's default stride is 0.01).
        r_min: the shortest neighbor distance (Angstrom) the table covers exactly.
    """

    is_tabulated = True

    def __init__(self, exact: SeE2A, stride: float = 0.01, r_min: float = 0.5):
        super().__init__(exact.config, exact.n_types)
        if stride <= 0 or r_min <= 0:
            raise ValueError(f"stride and r_min must be positive, got {stride} and {r_min}")
        self.nnei = exact.nnei
        self.rcut_smth, self.axis_neuron = exact.rcut_smth, exact.axis_neuron
        self.r_min = float(r_min)
        self.register_buffer("davg", exact.davg.detach().clone())
        self.register_buffer("dstd", exact.dstd.detach().clone())
        self.inv_h = 2.0 ** round(math.log2(1.0 / stride))
        h = 1.0 / self.inv_h
        davg0, dstd0 = exact.davg[..., 0].double(), exact.dstd[..., 0].double()  # [center, neighbor]
        self.type_one_side = exact.type_one_side
        self.lo: list[float] = []
        self.offsets: list[int] = []
        tables, start = [], 0
        for e, embed in enumerate(exact.embeddings):  # table e: as exact.embeddings (t, or c * n_types + t)
            c, t = divmod(e, exact.n_types)
            centers = slice(None) if self.type_one_side else slice(c, c + 1)
            low = float((-davg0[centers, t] / dstd0[centers, t]).min())
            high = float(((1.0 / r_min - davg0[centers, t]) / dstd0[centers, t]).max())
            lo = math.floor(low * self.inv_h - 1) / self.inv_h
            nbins = math.ceil((high - lo) * self.inv_h) + 1
            self.lo.append(lo)
            self.offsets.append(start)
            start += nbins
            tables.append(quintic_table(embed, lo, h, nbins))
        with torch.no_grad():
            empty_terms = [exact.empty_slot_terms(t) for t in range(exact.n_types)]
        self.offsets.append(start)
        dtype, device = exact.davg.dtype, exact.davg.device
        self.register_buffer("coeffs", torch.cat(tables).to(dtype))  # [sum nbins, 6, M1]
        self.register_buffer("empty_term", torch.stack(empty_terms, dim=1))  # [Tc, Tn, 4, M1]
        # the fused kernels' view of the same: per-type origins, first bins and bin counts
        self.register_buffer("lo_t", torch.tensor(self.lo, dtype=dtype, device=device))
        self.register_buffer("offsets_t", torch.tensor(self.offsets[:-1], dtype=torch.int32, device=device))
        self.register_buffer("nbins_t", torch.tensor(list(map(int.__sub__, self.offsets[1:], self.offsets[:-1])),
                                                     dtype=torch.int32, device=device))
        self.register_buffer("stats", torch.stack([self.davg, 1.0 / self.dstd]))  # [2, Tc, Tn, 4]
        self.register_buffer("params", torch.tensor([self.rcut_smth, 1.0 / (self.rcut - self.rcut_smth)],
                                                    dtype=dtype, device=device))
        self.fused: bool | None = None  # None: the Triton kernels on CUDA when installed
        self._col_types: dict = {}

    @property
    def dim_out(self) -> int:
        return self.config.neuron[-1] * self.axis_neuron

    def table(self, t: int, center_type: int = 0) -> torch.Tensor:
        """The quintic table ``[nbins, 6, M1]`` of the embedding net of neighbor type ``t``
        (and, without ``type_one_side``, of centers of type ``center_type``)."""
        e = t if self.type_one_side else center_type * self.n_types + t
        return self.coeffs[self.offsets[e]:self.offsets[e + 1]]

    def _slot_types(self, capacity: tuple[int, ...], device: torch.device) -> torch.Tensor:
        key = (capacity, str(device))
        if key not in self._col_types:  # made once per layout (outside any CUDA-graph capture)
            self._col_types[key] = torch.repeat_interleave(
                torch.arange(len(capacity), dtype=torch.int32), torch.as_tensor(capacity)).to(device)
        return self._col_types[key]

    def forward(self, rij: torch.Tensor, mask: torch.Tensor, center_types: torch.Tensor,
                capacity: tuple[int, ...]) -> torch.Tensor:
        """As :meth:`SeE2A.forward`."""
        n = rij.shape[0]
        fused = self.fused if self.fused is not None else (rij.is_cuda and triton_available())
        if fused:
            T = fused_descriptor_sum(rij, mask.view(torch.uint8), center_types,
                                     self._slot_types(tuple(capacity), rij.device), self.stats, self.coeffs, self.lo_t, self.offsets_t,
                                     self.nbins_t, self.params, self.inv_h,
                                     side_stride=0 if self.type_one_side else self.n_types)
        else:
            T = rij.new_zeros(n, 4, self.config.neuron[-1])
            for t, rows in type_rows(self, rij, mask, center_types, capacity):
                if rows.shape[1] and self.type_one_side:
                    T = T + contract_reference(rows, self.table(t), self.lo[t], self.inv_h)
                elif rows.shape[1]:  # one table per center type
                    T = T + by_center_type(center_types, self.n_types, lambda c, idx: contract_reference(
                        rows if idx is None else rows.index_select(0, idx), self.table(t, c),
                        self.lo[c * self.n_types + t], self.inv_h))
        for t, cap in enumerate(capacity):
            if cap != self.sel[t]:  # slots beyond the list's capacity, as DeePMD-kit would have them
                T = T + (self.sel[t] - cap) * self.empty_term[center_types, t]
        return descriptor_from_sum(self, T)
