"""nnpot.potentials: neighbor lists, the se_e2_a model, derivatives, model files, the ASE calculator.

Data flow: structures -> :func:`make_batch` (neighbors in se_e2_a's padded per-type layout) ->
:class:`EnergyModel` (per-atom energies from neighbor vectors) -> :func:`derivatives` (energy,
forces, virial by one autograd call) -> :class:`NNPotCalculator` for ASE. Test helpers for
any potential are in :mod:`nnpot.potentials.testing`.
"""

from nnpot.potentials.batch import AtomsBatch, make_batch, types_from_numbers
from nnpot.potentials.calculator import NNPotCalculator
from nnpot.potentials.config import DescriptorConfig, FittingConfig, ModelConfig
from nnpot.potentials.derivatives import derivatives
from nnpot.potentials.descriptor import SeE2A, environment, smooth_switch
from nnpot.potentials.model import EnergyModel
from nnpot.potentials.modelfile import load_model, save_model
from nnpot.potentials.neighbors import PaddedNeighbors, build_neighbors, neighbor_pairs, padded_neighbors
from nnpot.potentials.stats import apply_stats, compute_env_stats, fit_energy_bias

__all__ = [
    "AtomsBatch",
    "make_batch",
    "types_from_numbers",
    "NNPotCalculator",
    "DescriptorConfig",
    "FittingConfig",
    "ModelConfig",
    "derivatives",
    "SeE2A",
    "environment",
    "smooth_switch",
    "EnergyModel",
    "load_model",
    "save_model",
    "PaddedNeighbors",
    "build_neighbors",
    "neighbor_pairs",
    "padded_neighbors",
    "apply_stats",
    "compute_env_stats",
    "fit_energy_bias",
]
