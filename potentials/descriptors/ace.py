"""A many-body equivariant descriptor: the ACE product basis of MACE on e3nn (``descriptor.type: ace``).

For a center atom i of element z_i with neighbors k inside ``rcut``:

* **element embedding**: each element has ``channels`` learned features ``e_z``; nothing has a
  size of the number of elements squared, so cost and parameters grow linearly with it;
* **radial basis**: ``num_basis`` Bessel functions ``sqrt(2/rc) sin(b pi r / rc) / r`` into a
  radial MLP (SiLU), times the polynomial envelope of NequIP (p = 6: value, slope and
  curvature vanish at ``rcut``);
* **atomic density**: ``A_i,c,lm = sum_k R_c,l(r_ik) e_{z_k},c Y_lm(r_ik) / sqrt(n_avg)``, spherical
  harmonics up to ``lmax`` (``n_avg``: the mean neighbor count in the training data,
  :meth:`AceDescriptor.fit_statistics`), then a linear map over channels per ``l``;
* **product basis** (ACE, as MACE's symmetric contraction): per channel, every coupling of
  ``A`` with itself up to ``correlation`` factors (body order ``correlation + 1``), coupled
  through Clebsch-Gordan coefficients (e3nn's ``wigner_3j``) to outputs of ``L <=
  hidden_lmax``, ordered ``l1 <= l2 <= ...`` and kept where parity allows a proper tensor; each
  path is weighted per channel *and per center element* (``[n_types, paths, channels]``,
  linear in the number of elements), then mixed over channels per ``L``;
* ``message_layers`` message-passing layers (MACE's interaction, default 0): the density of
  layer t+1 is ``sum_k R^t(r_ik) (h^t_k (x) Y(r_ik))`` (channel-wise tensor products of the
  neighbor's features with the edge direction), then the product basis again, plus a residual
  per-element linear map of ``h^t``. Each adds ``rcut`` to the receptive field
  (:attr:`AceDescriptor.receptive_field`); with none the model is strictly local and runs in
  LAMMPS on any number of ranks. ``hidden_lmax: 0`` passes scalar messages (only invariants
  leave a layer): 4 message paths instead of 10 at ``lmax`` 3, 2.4x faster MD, a few percent
  higher errors (benchmarks/README.md); ``message_lmax`` (default ``lmax``) caps the harmonics
  of the message and the ``l`` of the layers after the first: at ``lmax`` 3, ``message_lmax``
  2 leaves 7 message paths whose L = 1 inputs fill 12 output components instead of 24;
* the output is the invariant channels of every layer, ``[n, channels (1 + message_layers)]``,
  which nnpot's per-element fitting nets turn into atomic energies; the per-element reference
  energies come from the closed-form bias fit of training.

Empty neighbor slots have a zero envelope and contribute nothing, so any slot count gives the
same energy. float32 is fine (no ``1/r`` statistics); the finite-difference checks need float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from e3nn import o3
from torch import nn

from nnpot.errors import ConfigError
from nnpot.nn import MLP
from nnpot.potentials.descriptors.base import (
    Descriptor,
    DescriptorConfig,
    _check_widths,
    register_descriptor,
    slot_type_index,
)
from nnpot.potentials.descriptors.e3nn import bessel_basis, polynomial_envelope
from nnpot.potentials.neighbors import neighbor_pairs

__all__ = ["AceDescriptor", "AceConfig", "product_paths"]

Features = dict[int, torch.Tensor]  # l -> [n, C, 2l + 1]


@dataclass
class AceConfig(DescriptorConfig):
    """The ACE descriptor's settings (see the module docstring); ``rcut_smth`` is unused (the
    polynomial envelope is smooth by itself) and ``sel`` sizes the neighbor layout."""

    type: str = "ace"
    lmax: int = 2  #: largest l of the spherical harmonics and of the density
    hidden_lmax: int = 1  #: largest L of the features a layer passes on (0: invariants only)
    channels: int = 64  #: channels per l (and per element embedding); 64 won the A/B against 32
    correlation: int = 3  #: factors of A in a product (body order correlation + 1)
    num_basis: int = 8  #: Bessel radial functions
    radial_neuron: list[int] = field(default_factory=lambda: [64, 64])  #: radial MLP widths
    message_layers: int = 0  #: message-passing layers, each adding rcut to the receptive field
    #: largest l of the message's harmonics and of the layers after the first (None: ``lmax``)
    message_lmax: int | None = None

    def validate(self, n_types: int) -> None:
        super().validate(n_types)
        if not (0 <= self.hidden_lmax <= self.lmax <= 4 and 0 < self.channels <= 512 and 1 <= self.correlation <= 4
                and 0 < self.num_basis <= 64 and 0 <= self.message_layers <= 4):
            raise ConfigError("descriptor: ace needs 0 <= hidden_lmax <= lmax <= 4, 0 < channels <= 512, "
                              "1 <= correlation <= 4, 0 < num_basis <= 64 and 0 <= message_layers <= 4")
        if self.message_lmax is not None and not self.hidden_lmax <= self.message_lmax <= self.lmax:
            raise ConfigError(f"descriptor: ace needs hidden_lmax <= message_lmax <= lmax, got message_lmax "
                              f"{self.message_lmax} with hidden_lmax {self.hidden_lmax} and lmax {self.lmax}")
        _check_widths("descriptor.radial_neuron", self.radial_neuron)


def _natural(l1: int, l2: int, lmax: int) -> list[int]:
    """Outputs ``L <= lmax`` of ``l1 (x) l2`` that are proper tensors (parity ``(-1)^L``)."""
    return [L for L in range(abs(l1 - l2), min(l1 + l2, lmax) + 1) if (l1 + l2 + L) % 2 == 0]


def product_paths(lmax: int, lout: int, correlation: int) -> list[list[tuple]]:
    """The couplings of the product basis by order: ``paths[nu - 1]`` lists ``(parent, l, L)``
    (``parent``: the index of the order-``nu - 1`` intermediate, -1 for ``A`` itself at order
    1) with ``last_l`` ordering ``l1 <= l2 <= ...``; intermediates keep ``L <= lmax``, and only
    those with ``L <= lout`` are outputs."""
    levels = [[(-1, l, l, l) for l in range(lmax + 1)]]  # (parent, l, L, last l)
    for _ in range(1, correlation):
        nxt = []
        for p, (_, _, L_prev, last) in enumerate(levels[-1]):
            for l in range(last, lmax + 1):
                nxt += [(p, l, L, l) for L in _natural(L_prev, l, lmax)]
        levels.append(nxt)
    return [[(p, l, L) for p, l, L, _ in level] for level in levels]


class ProductBasis(nn.Module):
    """Per-channel products of a density ``A`` (``l -> [n, C, 2l+1]``) up to ``correlation``
    factors, weighted per center element and path, summed per output ``L <= lout``."""

    def __init__(self, lmax: int, lout: int, correlation: int, channels: int, n_types: int, dtype: torch.dtype,
                 keep: int | None = None):
        """``keep`` (default ``lout``): the largest output ``L`` computed. A last layer, whose
        ``L > 0`` outputs nobody reads, passes 0; the weights still cover every ``L <= lout``, so
        the parameters and model files do not depend on it."""
        super().__init__()
        self.lmax, self.lout = lmax, lout
        keep = lout if keep is None else min(int(keep), lout)
        self.paths = product_paths(lmax, lout, correlation)
        # only what reaches a kept output is computed: the last order's L > keep couplings, and
        # the intermediates that only they use, feed nothing
        needed = [{i for i, (*_, L) in enumerate(level) if L <= keep} for level in self.paths]
        for nu in range(len(self.paths) - 1, 0, -1):
            needed[nu - 1] |= {self.paths[nu][i][0] for i in needed[nu]}
        # the couplings of one (parent, l) pair share one contraction: their Clebsch-Gordan
        # blocks stacked along the output axis, split after it
        self.groups: list[list[tuple[int, int, list[int], list[int]]]] = [[]]  # per order >= 2: (parent, l, paths, sizes)
        for nu, level in enumerate(self.paths[1:], start=1):
            by_pair: dict[tuple[int, int], list[int]] = {}
            for i in sorted(needed[nu]):
                by_pair.setdefault(level[i][:2], []).append(i)
            row = []
            for (p, l), members in by_pair.items():
                L_prev = self.paths[nu - 1][p][2]
                # e3nn's real basis; scaled so that products of unit-size inputs stay O(1)
                blocks = [o3.wigner_3j(L_prev, l, level[i][2], dtype=torch.float64) * math.sqrt(2 * level[i][2] + 1)
                          for i in members]
                self.register_buffer(f"cg_{nu}_{p}_{l}", torch.cat(blocks, dim=-1).to(dtype), persistent=False)
                row.append((p, l, members, [b.shape[-1] for b in blocks]))
            self.groups.append(row)
        # one weight per (center element, output path, channel); paths of an L are summed
        self.slots = [(nu, i, L) for nu, level in enumerate(self.paths) for i, (_, _, L) in enumerate(level)
                      if L <= lout]
        n_per_L = [sum(1 for *_, L in self.slots if L == out) for out in range(lout + 1)]
        scale = torch.tensor([1.0 / math.sqrt(n_per_L[L]) for *_, L in self.slots], dtype=dtype)
        self.weights = nn.Parameter(torch.randn(n_types, len(self.slots), channels, dtype=dtype) * scale[None, :, None])
        self.kept = [(s, nu, i, L) for s, (nu, i, L) in enumerate(self.slots) if L <= keep]
        self.register_buffer("kept_slots", torch.tensor([s for s, *_ in self.kept], dtype=torch.long), persistent=False)

    def forward(self, A: Features, center_types: torch.Tensor) -> Features:
        values: list[dict[int, torch.Tensor]] = [{i: A[l] for i, (_, l, _) in enumerate(self.paths[0])}]
        for nu in range(1, len(self.paths)):
            prev, row = values[-1], {}
            for p, l, members, sizes in self.groups[nu]:
                cg = getattr(self, f"cg_{nu}_{p}_{l}")
                joint = torch.einsum("ncm,nck,mkq->ncq", prev[p], A[l], cg)
                row.update(zip(members, joint.split(sizes, dim=-1)))
            values.append(row)
        w = self.weights[:, self.kept_slots][center_types]  # [n, kept slots, C]
        out: Features = {}
        for k, (_, nu, i, L) in enumerate(self.kept):
            term = w[:, k, :, None] * values[nu][i]
            out[L] = term if L not in out else out[L] + term
        return out


class ChannelLinear(nn.Module):
    """A linear map over channels for each ``l`` (equivariant: it never mixes ``m``)."""

    def __init__(self, ls: Sequence[int], c_in: int, c_out: int, dtype: torch.dtype):
        super().__init__()
        self.ls = list(ls)
        self.weight = nn.Parameter(torch.randn(len(self.ls), c_out, c_in, dtype=dtype) / math.sqrt(c_in))

    def forward(self, x: Features) -> Features:
        return {l: torch.einsum("dc,ncm->ndm", self.weight[i], x[l]) for i, l in enumerate(self.ls) if l in x}


class ElementLinear(nn.Module):
    """A linear map over channels for each ``l`` with weights per center element (MACE's
    self-connection)."""

    def __init__(self, ls: Sequence[int], channels: int, n_types: int, dtype: torch.dtype):
        super().__init__()
        self.ls = list(ls)
        self.weight = nn.Parameter(torch.randn(n_types, len(self.ls), channels, channels, dtype=dtype)
                                   / math.sqrt(channels))

    def forward(self, x: Features, center_types: torch.Tensor) -> Features:
        # one dense map per element, kept where the element matches: no [n, C, C] gather
        out: Features = {}
        for i, l in enumerate(self.ls):
            if l in x:
                mapped = torch.einsum("tdc,ncm->tndm", self.weight[:, i], x[l])  # [types, n, C, 2l+1]
                out[l] = mapped.gather(0, center_types.view(1, -1, 1, 1).expand(1, *mapped.shape[1:]))[0]
        return out


def _live_slots(rij: torch.Tensor, mask: torch.Tensor, slot_types: torch.Tensor, index: torch.Tensor | None,
                rcut: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The edges without the slots that contribute nothing: per atom, its neighbors inside
    ``rcut`` moved to the front (in slot order), then every atom cut to the most that any atom
    has. Exact, since an empty slot or one beyond ``rcut`` has a zero envelope, value and
    derivatives. The per-type blocks of the layout are padded to each type's largest count and
    the MD list holds the skin, so much of the layout is empty (``bench_live_slots.py``). The
    slot count depends on the positions, which a CUDA graph or a trace cannot follow: CPU only.
    Returns ``rij``, ``mask``, the slot types (now ``[n, K']``) and ``index``."""
    live = mask & (rij.detach().square().sum(dim=-1) < rcut * rcut)
    if live.numel() == 0:
        return rij, mask, slot_types, index
    keep = max(1, int(live.sum(dim=1).max()))
    if keep == live.shape[1]:  # a full layout (tight training batches of dense frames): nothing to gain
        return rij, live, slot_types, index
    order = torch.sort(live.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :keep]
    rij = rij.gather(1, order[..., None].expand(-1, -1, 3))
    slot_types = slot_types.expand_as(live).gather(1, order)
    return rij, live.gather(1, order), slot_types, None if index is None else index.gather(1, order)


@register_descriptor("ace", AceConfig)
class AceDescriptor(Descriptor):
    """Maps neighbor vectors to per-atom invariants ``[n, channels (1 + message_layers)]``."""

    def __init__(self, config: AceConfig, n_types: int, dtype: torch.dtype = torch.float64):
        super().__init__(config, n_types, dtype)
        c = config
        self.lmax, self.lout, self.channels = int(c.lmax), int(c.hidden_lmax), int(c.channels)
        self.message_lmax = self.lmax if c.message_lmax is None else int(c.message_lmax)
        C, ml = self.channels, self.message_lmax
        self.irreps_sh = o3.Irreps.spherical_harmonics(self.lmax)
        self.embedding = nn.Parameter(torch.randn(n_types, C, dtype=dtype))
        self.register_buffer("avg_neighbors", torch.tensor(max(1.0, sum(self.sel) / 2), dtype=dtype))
        n_layers = 1 + int(c.message_layers)
        self.conv_paths = [[(lh, ly, L) for lh in range(self.lout + 1) for ly in range(ml + 1)
                            for L in _natural(lh, ly, ml)] for _ in range(n_layers - 1)]
        sizes = [C * (self.lmax + 1)] + [C * len(p) for p in self.conv_paths]
        self.radials = nn.ModuleList(MLP([int(c.num_basis), *c.radial_neuron, s], act="silu", init="torch", dtype=dtype)
                                     for s in sizes)
        if n_layers > 1:
            self._register_convolution(self.conv_paths[0], dtype)
        layer_lmax = [self.lmax] + [ml] * (n_layers - 1)  # the message's harmonics stop at message_lmax
        self.mix = nn.ModuleList(ChannelLinear(range(l + 1), C, C, dtype) for l in layer_lmax)
        # the last layer's L > 0 outputs feed nothing (only its invariants leave the descriptor)
        self.products = nn.ModuleList(ProductBasis(layer_lmax[t], self.lout, int(c.correlation), C, n_types, dtype,
                                                   keep=self.lout if t < n_layers - 1 else 0)
                                      for t in range(n_layers))
        self.out = nn.ModuleList(ChannelLinear(range(self.lout + 1), C, C, dtype) for _ in range(n_layers))
        self.skip = nn.ModuleList(ElementLinear(range(self.lout + 1), C, n_types, dtype) for _ in range(n_layers - 1))
        #: on the CPU, work only on the slots that hold a neighbor inside rcut (see :func:`_live_slots`)
        self.drop_empty_slots = True

    def _register_convolution(self, paths: list[tuple[int, int, int]], dtype: torch.dtype) -> None:
        """The message's Clebsch-Gordan couplings, grouped by the neighbor feature's l: for each
        ``lh`` a block ``[2lh+1, (lmax+1)^2, J]`` that couples it with all harmonics at once into
        its paths' outputs side by side (``J``: their summed ``2L+1``), in the order of
        ``conv_groups``."""
        n_sh = (self.message_lmax + 1) ** 2
        self.conv_groups: list[tuple[int, list[tuple[int, int]]]] = []  # (lh, [(path, L)] in column order)
        for lh in range(self.lout + 1):
            members = [(p, ly, L) for p, (l, ly, L) in enumerate(paths) if l == lh]
            if not members:
                continue
            cg = torch.zeros(2 * lh + 1, n_sh, sum(2 * L + 1 for *_, L in members), dtype=torch.float64)
            columns, j = [], 0
            for p, ly, L in members:
                cg[:, ly * ly:(ly + 1) ** 2, j:j + 2 * L + 1] = o3.wigner_3j(lh, ly, L, dtype=torch.float64) * math.sqrt(2 * L + 1)
                columns.append((p, L))
                j += 2 * L + 1
            self.register_buffer(f"conv_cg_{lh}", cg.to(dtype), persistent=False)
            self.conv_groups.append((lh, columns))

    @property
    def dim_out(self) -> int:
        return self.channels * (1 + int(self.config.message_layers))

    @torch.no_grad()
    def fit_statistics(self, structures: Sequence, type_map: Sequence[str]) -> None:
        """The density's normalisation: the mean number of neighbors inside ``rcut``."""
        counts = []
        for s in list(structures)[:256]:
            cell = s.cell.array if hasattr(s.cell, "array") else np.asarray(s.cell)
            i, _, _ = neighbor_pairs(torch.as_tensor(np.asarray(s.positions), dtype=torch.float64),
                                     torch.as_tensor(np.asarray(cell), dtype=torch.float64),
                                     torch.as_tensor(np.asarray(s.pbc, dtype=bool)), self.rcut)
            counts.append(i.numel() / max(1, len(s.numbers)))
        if counts:
            self.avg_neighbors.fill_(max(1.0, float(np.mean(counts))))

    @property
    def norm(self) -> torch.Tensor:
        """The density's scale ``1 / sqrt(n_avg)``: unit-size terms of random sign sum to O(1)."""
        return self.avg_neighbors.rsqrt()

    def _edges(self, rij: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Features]:
        """Radial inputs ``[n, K, num_basis]``, the envelope ``[n, K, 1]`` (0 in empty slots and
        beyond ``rcut``) and the spherical harmonics ``l -> [n, K, 2l+1]``."""
        safe = torch.where(mask[..., None], rij, torch.ones_like(rij))  # no 0/0 in empty slots
        r = safe.norm(dim=-1)
        envelope = polynomial_envelope(r / self.rcut) * mask
        basis = bessel_basis(r, self.rcut, int(self.config.num_basis)) * self.rcut  # O(1) inputs for the MLP
        Y = o3.spherical_harmonics(self.irreps_sh, safe, normalize=True, normalization="component")
        return basis, envelope[..., None], {l: Y[..., l * l:(l + 1) ** 2] for l in range(self.lmax + 1)}

    def _first_density(self, basis: torch.Tensor, envelope: torch.Tensor, Y: Features,
                       slot_types: torch.Tensor) -> Features:
        C = self.channels
        embedded = self.embedding[slot_types]  # [K, C], or [n, K, C] once empty slots are dropped
        R = self.radials[0](basis) * torch.cat([embedded] * (self.lmax + 1), dim=-1)  # [n, K, C (lmax+1)]
        # split, not sliced: a slice's gradient is a zero-filled copy of all of R, per l
        R_l = R.split(C, dim=-1)
        # the envelope goes on the (2l+1)-wide harmonics, not on the C (lmax+1)-wide radials
        return {l: torch.einsum("nkc,nkm->ncm", R_l[l], Y[l] * envelope) * self.norm for l in Y}

    def _message_density(self, t: int, h: Features, index: torch.Tensor, basis: torch.Tensor, envelope: torch.Tensor,
                         Y: Features) -> Features:
        """``sum_k R^t(r_ik) (h_k (x) Y(r_ik))`` per output l, channel-wise (layer ``t`` >= 1)."""
        n, K, _ = basis.shape
        C = self.channels
        # per path [n, C, K], zero in empty slots: channels before slots, so that a path's weighted
        # features [n, C, K, 2lh+1] are laid out as the matmul below reads them (no copy per path)
        R = (self.radials[t](basis) * envelope).view(n, K, -1, C).permute(0, 2, 3, 1).contiguous().unbind(1)
        idx = index.clamp(min=0).reshape(-1)
        Y_all = torch.cat([Y[l] for l in range(self.message_lmax + 1)], dim=-1)  # [n, K, (message_lmax+1)^2]
        out: Features = {}
        for lh, columns in self.conv_groups:
            # Y (x) CG for all paths of this lh at once: [n, K (2lh+1), J]
            coupled = torch.einsum("nkq,mqj->nkmj", Y_all, getattr(self, f"conv_cg_{lh}")).reshape(n, K * (2 * lh + 1), -1)
            per_path = coupled.split([2 * L + 1 for _, L in columns], dim=-1)
            # the neighbors' features [n, C, K, 2lh+1]; index_select's gradient is an index_add
            hk = h[lh].index_select(0, idx).view(n, K, C, -1).transpose(1, 2).contiguous()
            for (p, L), coupled_p in zip(columns, per_path):  # one batched matmul per path sums k and m
                weighted = (R[p][..., None] * hk).view(n, C, -1)
                term = torch.matmul(weighted, coupled_p)
                out[L] = term if L not in out else out[L] + term
        return {l: v * self.norm for l, v in out.items()}

    def _layer(self, t: int, A: Features, center_types: torch.Tensor) -> Features:
        return self.out[t](self.products[t](self.mix[t](A), center_types))

    def forward(self, rij: torch.Tensor, mask: torch.Tensor, center_types: torch.Tensor,
                capacity: tuple[int, ...], index: torch.Tensor | None = None) -> torch.Tensor:
        slot_types = slot_type_index(capacity, mask)
        if (self.drop_empty_slots and rij.device.type == "cpu" and not torch.jit.is_tracing()
                and not torch.compiler.is_compiling()):
            rij, mask, slot_types, index = _live_slots(rij, mask, slot_types, index, self.rcut)
        basis, envelope, Y = self._edges(rij, mask)
        h = self._layer(0, self._first_density(basis, envelope, Y, slot_types), center_types)
        invariants = [h[0][..., 0]]
        for t in range(1, 1 + int(self.config.message_layers)):
            if index is None:
                raise ValueError("an ace descriptor with message layers needs the neighbor indices")
            new = self._layer(t, self._message_density(t, h, index, basis, envelope, Y), center_types)
            skip = self.skip[t - 1]({l: h[l] for l in new}, center_types)
            h = {l: new[l] + skip[l] for l in new}
            invariants.append(h[0][..., 0])
        return torch.cat(invariants, dim=-1)
