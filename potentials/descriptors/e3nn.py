"""An E(3)-equivariant, strictly local descriptor built with e3nn (``descriptor.type: e3nn``).

It takes the same inputs as se_e2_a (neighbor vectors in the padded per-type layout) and
feeds the same per-element fitting nets, so training, model files, the calculator and MD work
unchanged. For a center atom i with neighbors k inside ``rcut``:

* edge features: real spherical harmonics ``Y_lm(r_ik / r_ik)`` up to ``lmax`` (e3nn,
  ``component`` normalisation, parity ``(-1)^l``) and a radial basis of ``num_basis`` Bessel
  functions ``sqrt(2/rc) sin(b pi r / rc) / r``;
* a radial MLP (:class:`nnpot.nn.MLP`, SiLU) of the basis and the one-hot center and neighbor
  elements gives ``channels`` weights per ``l``, multiplied by the polynomial envelope of
  NequIP (p = 6; value, slope and curvature vanish at ``rcut``, so energies and forces are
  continuous as atoms cross the cutoff);
* the atomic density ``A_i = sum_k R_l(r_ik) Y_lm(r_ik)``, irreps
  ``C x 0e + C x 1o + C x 2e + ...``, scaled by ``1/sqrt(sum(sel))``; empty slots contribute
  exactly zero, so any slot count gives the same energy;
* ``layers`` interaction layers ``h <- h + Linear(Gate(TP(h, A)))`` with e3nn's fully connected
  tensor product and gated nonlinearity (SiLU on scalars, sigmoid gates on l > 0). They couple
  the atom's own features with its density again: the body order grows with each layer while
  the receptive field stays ``rcut``, so every atom's energy depends on its own neighbor slots
  only, exactly as for se_e2_a: chunked evaluation, the neighbor-list skin and domain
  decomposition stay valid;
* ``message_layers`` message-passing layers (default 0) ``h <- h + Linear(Gate(TP(h, M)))``
  with the message ``M_i = sum_k [R'_l(r_ik) s_k Y_lm(r_ik) + R''_l(r_ik) h_k]``: neighbor k's
  invariant channels ``s_k`` placed on the edge direction plus its equivariant features ``h_k``
  carried over, both weighted channel-wise by radial MLPs of the same basis times the envelope.
  Each such layer adds ``rcut`` to the receptive field (:attr:`E3nnDescriptor.receptive_field`),
  so the energy of an atom depends on atoms up to ``(1 + message_layers) rcut`` away. The
  model then needs the neighbor indices and the whole structure at once: the derivatives and
  the MD force provider switch chunking off for it, and periodic images share the features of
  the atom they copy, so any cell size stays exact;
* the invariant readout: the scalars of ``h`` and ``2C`` invariants of ``TP(h, h)``.

float32 is fine for this descriptor (no ``1/r`` normalisation statistics); the finite-difference
checks of the test helpers need float64 as for any model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from e3nn import o3
from e3nn.nn import Gate
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

__all__ = ["E3nnDescriptor", "E3nnConfig", "bessel_basis", "polynomial_envelope"]


@dataclass
class E3nnConfig(DescriptorConfig):
    """The e3nn descriptor's settings (see the module docstring); ``rcut_smth`` is unused (the
    polynomial envelope is smooth by itself) and ``sel`` sizes the neighbor layout and the
    density normalisation."""

    type: str = "e3nn"
    lmax: int = 2  #: largest angular momentum of the spherical harmonics and features
    channels: int = 16  #: channels per irrep
    num_basis: int = 8  #: Bessel radial functions
    radial_neuron: list[int] = field(default_factory=lambda: [32, 32])  #: radial MLP widths
    layers: int = 1  #: interaction layers (body order grows, receptive field stays rcut)
    message_layers: int = 0  #: message-passing layers, each adding rcut to the receptive field

    def validate(self, n_types: int) -> None:
        super().validate(n_types)
        if not (0 <= self.lmax <= 6 and 0 < self.channels <= 512 and 0 < self.num_basis <= 64 and self.layers >= 0
                and self.message_layers >= 0):
            raise ConfigError("descriptor: e3nn needs 0 <= lmax <= 6, 0 < channels <= 512, 0 < num_basis <= 64, "
                              "layers >= 0 and message_layers >= 0")
        _check_widths("descriptor.radial_neuron", self.radial_neuron)


def bessel_basis(r: torch.Tensor, rcut: float, n: int) -> torch.Tensor:
    """``[..., n]`` Bessel radial functions ``sqrt(2/rc) sin(b pi r / rc) / r``, b = 1..n."""
    b = r.new_ones(n).cumsum(0) * (math.pi / rcut)  # 1..n; new_ones follows r's device in a TorchScript trace
    return math.sqrt(2.0 / rcut) * torch.sin(b * r[..., None]) / r[..., None]


def polynomial_envelope(x: torch.Tensor, p: int = 6) -> torch.Tensor:
    """NequIP's cutoff envelope of ``x = r / rcut``: 1 at 0, C2-smoothly 0 at 1 and beyond."""
    x = x.clamp(max=1.0)
    out = (1.0 - 0.5 * (p + 1) * (p + 2) * x ** p + p * (p + 2) * x ** (p + 1) - 0.5 * p * (p + 1) * x ** (p + 2))
    return out * (x < 1.0)


@register_descriptor("e3nn", E3nnConfig)
class E3nnDescriptor(Descriptor):
    """Maps neighbor vectors to per-atom invariant descriptors ``[n, dim_out]`` (see module doc)."""

    def __init__(self, config: E3nnConfig, n_types: int, dtype: torch.dtype = torch.float64):
        super().__init__(config, n_types, dtype)
        self.lmax, self.channels, self.num_basis = int(config.lmax), int(config.channels), int(config.num_basis)
        C, L = self.channels, self.lmax + 1
        self.irreps_sh = o3.Irreps.spherical_harmonics(self.lmax)
        self.irreps_h = o3.Irreps([(C, (l, (-1) ** l)) for l in range(L)])
        n_in = self.num_basis + 2 * n_types
        self.radial = MLP([n_in, *config.radial_neuron, C * L], act="silu", init="torch", dtype=dtype)
        self.norm = 1.0 / math.sqrt(sum(config.sel))
        self.tps, self.gates, self.linears = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for _ in range(int(config.layers)):
            self._add_interaction()
        self.message_radials = nn.ModuleList(
            MLP([n_in, *config.radial_neuron, 2 * C * L], act="silu", init="torch", dtype=dtype)
            for _ in range(int(config.message_layers)))
        for _ in range(int(config.message_layers)):
            self._add_interaction()
        self.readout = o3.FullyConnectedTensorProduct(self.irreps_h, self.irreps_h, o3.Irreps(f"{2 * C}x0e"))
        self.to(dtype)

    def _add_interaction(self) -> None:
        """One ``Linear(Gate(TP(h, x)))`` block with ``x`` of the irreps of ``h``."""
        C = self.channels
        gated = o3.Irreps([(C, (l, (-1) ** l)) for l in range(1, self.lmax + 1)])
        gate = Gate(o3.Irreps(f"{C}x0e"), [nn.functional.silu], o3.Irreps(f"{gated.num_irreps}x0e"), [torch.sigmoid],
                    gated)
        self.tps.append(o3.FullyConnectedTensorProduct(self.irreps_h, self.irreps_h, gate.irreps_in))
        self.gates.append(gate)
        self.linears.append(o3.Linear(gate.irreps_out, self.irreps_h))

    @property
    def dim_out(self) -> int:
        return 3 * self.channels

    def edges(self, rij: torch.Tensor, mask: torch.Tensor, center_types: torch.Tensor,
              capacity: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per slot: radial-net inputs ``[n, K, num_basis + 2 n_types]`` (Bessel basis, one-hot
        neighbor and center element), the envelope ``[n, K]`` (0 in empty slots) and the
        spherical harmonics ``[n, K, (lmax + 1)^2]``."""
        n, K, _ = rij.shape
        safe = torch.where(mask[..., None], rij, torch.ones_like(rij))  # no 0/0 in empty slots
        r = safe.norm(dim=-1)
        envelope = polynomial_envelope(r / self.rcut) * mask
        slot_types = slot_type_index(capacity, mask)
        neighbor = torch.nn.functional.one_hot(slot_types, self.n_types).to(rij.dtype)
        center = torch.nn.functional.one_hot(center_types, self.n_types).to(rij.dtype)
        features = torch.cat([bessel_basis(r, self.rcut, self.num_basis), neighbor.expand(n, K, -1),
                              center[:, None, :].expand(n, K, -1)], dim=-1)
        Y = o3.spherical_harmonics(self.irreps_sh, safe, normalize=True, normalization="component")
        return features, envelope, Y

    def _place(self, weights: torch.Tensor, Y: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """``sum_k w_lc(k) [v_c(k)] Y_lm(k)`` for every l, in the layout of ``irreps_h``."""
        n, C = weights.shape[0], self.channels
        wv = weights if values is None else weights * values.repeat(1, 1, self.lmax + 1)
        blocks = [torch.einsum("nkc,nkm->ncm", wv[..., l * C:(l + 1) * C], Y[..., l * l:(l + 1) ** 2]).reshape(n, -1)
                  for l in range(self.lmax + 1)]
        return torch.cat(blocks, dim=-1)

    def density(self, rij: torch.Tensor, mask: torch.Tensor, center_types: torch.Tensor,
                capacity: tuple[int, ...]) -> torch.Tensor:
        """The equivariant atomic density ``A`` ``[n, irreps_h.dim]``."""
        return self._density(self.edges(rij, mask, center_types, capacity))

    def _density(self, edges: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        features, envelope, Y = edges
        R = self.radial(features) * envelope[..., None]  # [n, K, C (lmax + 1)]
        return self._place(R, Y) * self.norm

    def message(self, layer: int, h: torch.Tensor, index: torch.Tensor,
                edges: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Message ``M`` ``[n, irreps_h.dim]`` of message layer ``layer`` from the features ``h``
        of all atoms ``[N, irreps_h.dim]`` (``index``: ``[n, K]`` neighbor atoms, -1 empty)."""
        features, envelope, Y = edges
        n, K = index.shape
        C, L = self.channels, self.lmax + 1
        W = self.message_radials[layer](features) * envelope[..., None]  # [n, K, 2 C L]
        hk = h[index.clamp(min=0)]  # [n, K, dim]; empty slots have W = 0
        out = self._place(W[..., :C * L], Y, hk[..., :C])
        carried, start = [], 0
        for l in range(L):
            w = W[..., C * L + l * C:C * L + (l + 1) * C]  # [n, K, C]
            block = hk[..., start:start + C * (2 * l + 1)].reshape(n, K, C, 2 * l + 1)
            carried.append(torch.einsum("nkc,nkcm->ncm", w, block).reshape(n, -1))
            start += C * (2 * l + 1)
        return (out + torch.cat(carried, dim=-1)) * self.norm

    def features(self, rij: torch.Tensor, mask: torch.Tensor, center_types: torch.Tensor,
                 capacity: tuple[int, ...], index: torch.Tensor | None = None) -> torch.Tensor:
        """Equivariant per-atom features ``h`` ``[n, irreps_h.dim]`` after the interaction layers.

        ``index`` ``[n, K]``: the neighbor atom of each slot (-1 empty), needed when there are
        message layers; ``rij`` must then hold every atom the indices point to."""
        edges = self.edges(rij, mask, center_types, capacity)
        A = self._density(edges)
        h = A
        n_local = int(self.config.layers)
        blocks = list(zip(self.tps, self.gates, self.linears))
        for tp, gate, linear in blocks[:n_local]:
            h = h + linear(gate(tp(h, A)))
        if not self.is_local:
            if index is None:
                raise ValueError("an e3nn descriptor with message layers needs the neighbor indices")
            for m, (tp, gate, linear) in enumerate(blocks[n_local:]):
                h = h + linear(gate(tp(h, self.message(m, h, index, edges))))
        return h

    def forward(self, rij: torch.Tensor, mask: torch.Tensor, center_types: torch.Tensor,
                capacity: tuple[int, ...], index: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(rij, mask, center_types, capacity, index)
        return torch.cat([h[:, : self.channels], self.readout(h, h)], dim=-1)
