"""EnergyModel: descriptor -> per-element fitting net -> per-atom energy + per-element bias."""

from __future__ import annotations

import copy

import torch
from torch import nn

from nnpot.errors import ConfigError
from nnpot.nn import MLP
from nnpot.potentials.batch import AtomsBatch
from nnpot.potentials.config import ModelConfig
from nnpot.potentials.derivatives import derivatives
from nnpot.potentials.descriptors.base import build_descriptor

__all__ = ["EnergyModel"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class EnergyModel(nn.Module):
    """A DeePMD-style potential: ``E = sum_i [F_{t_i}(D_i) + bias_{t_i}]``.

    The model sees only neighbor vectors, so forces and virials follow from one autograd
    call in :func:`nnpot.potentials.derivatives.derivatives`.
    """

    def __init__(self, config: ModelConfig | None = None):
        """``config`` None: DeePMD-kit's water model (:meth:`ModelConfig.deepmd_water`)."""
        super().__init__()
        config = (config or ModelConfig.deepmd_water()).validate()
        if not config.is_resolved:
            raise ConfigError("the model's type_map and descriptor.sel are still to come from data: give them, or "
                              "resolve them with nnpot.training.auto_config.resolve_model_config (nnpot train does)")
        self.config = config
        dtype = _DTYPES[config.dtype]
        torch.manual_seed(config.seed)  # reproducible initial weights
        n_types = len(config.type_map)
        self.descriptor = build_descriptor(config.descriptor, n_types, dtype=dtype)
        widths = [self.descriptor.dim_out, *config.fitting.neuron, 1]
        self.output_scale = float(config.fitting.scale)  #: eV per unit of fitting-net output
        self.fittings = nn.ModuleList(
            MLP(widths, act=config.fitting.activation, resnet=True, resnet_dt=config.fitting.resnet_dt,
                final_linear=True, init="deepmd", dtype=dtype)
            for _ in range(n_types)
        )
        self.register_buffer("energy_bias", torch.zeros(n_types, dtype=dtype))

    @property
    def type_map(self) -> list[str]:
        return list(self.config.type_map)

    @property
    def cutoff(self) -> float:
        return float(self.config.descriptor.rcut)

    @property
    def sel(self) -> list[int]:
        return list(self.config.descriptor.sel)

    @property
    def is_local(self) -> bool:
        """Whether each atom's energy depends on its own neighbor slots only (the descriptor's
        :attr:`~nnpot.potentials.descriptors.base.Descriptor.is_local`)."""
        return self.descriptor.is_local

    @property
    def receptive_field(self) -> float:
        """Angstrom: how far an atom's energy can see (``rcut`` for local models)."""
        return self.descriptor.receptive_field

    @property
    def dtype(self) -> torch.dtype:
        return self.energy_bias.dtype

    @property
    def device(self) -> torch.device:
        return self.energy_bias.device

    @property
    def is_tabulated(self) -> bool:
        """Whether the descriptor's nets are tables (see :meth:`tabulated`)."""
        return self.descriptor.is_tabulated

    def tabulated(self, stride: float = 0.01, r_min: float = 0.5) -> EnergyModel:
        """A copy whose descriptor uses tables instead of nets where it has a tabulated form
        (se_e2_a: DeePMD-kit's model compression, same energies to ~1e-9 relative, much faster
        with the fused CUDA kernel); for inference only."""
        out = copy.deepcopy(self)
        out.descriptor = self.descriptor.tabulated(stride=stride, r_min=r_min)
        return out

    def type_groups(self, types: torch.Tensor) -> list[torch.Tensor]:
        """Indices of the atoms of each type; passing them to :meth:`forward` avoids the
        host synchronisation of finding them there (needed inside CUDA graphs)."""
        return [torch.nonzero(types == t, as_tuple=True)[0] for t in range(len(self.fittings))]

    def forward(self, rij: torch.Tensor, mask: torch.Tensor, types: torch.Tensor,
                capacity: tuple[int, ...], groups: list[torch.Tensor] | None = None, **inputs) -> torch.Tensor:
        """Per-atom energies ``[n]`` (eV) from neighbor vectors ``rij`` ``[n, K, 3]``.

        ``groups``: the result of :meth:`type_groups` for ``types``, when known beforehand.
        ``inputs``: the descriptor's extra inputs (:meth:`Descriptor.inputs
        <nnpot.potentials.descriptors.base.Descriptor.inputs>`).
        """
        D = self.descriptor(rij, mask, types, capacity, **inputs)
        energy = self.energy_bias[types].clone()
        groups = self.type_groups(types) if groups is None else groups
        for sel, fit in zip(groups, self.fittings):
            if sel.numel():
                energy = energy.index_add(0, sel, fit(D[sel]).squeeze(-1) * self.output_scale)
        return energy

    def evaluate_batch(self, batch: AtomsBatch, chunk_size: int | None = None) -> dict[str, torch.Tensor]:
        """Energies, forces, virials and atom energies of a batch
        (:func:`~nnpot.potentials.derivatives.derivatives`); what the evaluator calls, and what an
        :class:`~nnpot.potentials.ensemble.EnsembleModel` extends with deviations."""
        return derivatives(self, batch, chunk_size=chunk_size)

    def atomic_energies(self, batch: AtomsBatch) -> torch.Tensor:
        """Per-atom energies ``[N]`` of a batch (no derivatives)."""
        inputs = self.descriptor.inputs(batch, slice(0, batch.positions.shape[0]), whole=True)
        return self(batch.edge_vectors(), batch.neighbors.mask, batch.types, batch.neighbors.capacity, **inputs)
