"""nnpot.potentials: the model core: neighbor lists, descriptors, the energy model, derivatives,
the one evaluator, model files, the ensemble model and the ASE calculator (training is
:mod:`nnpot.training`).

Data flow: structures -> :class:`Evaluator` (neighbor list with a skin, in the padded per-type
layout) -> :class:`EnergyModel` (descriptor -> per-element fitting nets -> per-atom energies)
-> :func:`derivatives` (energy, forces, virial by one autograd call). The calculator, the MD
drivers and ``nnpot test`` all evaluate through :class:`Evaluator`; training builds its batches
with :func:`make_batch`. Descriptors implement :class:`Descriptor` and register by name
(:mod:`nnpot.potentials.descriptors`). Test helpers for any potential are in
:mod:`nnpot.potentials.testing`.
"""

from nnpot.potentials.batch import AtomsBatch, make_batch, types_from_numbers
from nnpot.potentials.calculator import EnsembleCalculator, NNPotCalculator
from nnpot.potentials.config import FittingConfig, ModelConfig
from nnpot.potentials.derivatives import derivatives
from nnpot.potentials.descriptors.base import (
    Descriptor,
    DescriptorConfig,
    available_descriptors,
    build_descriptor,
    descriptor_names,
    register_descriptor,
)
from nnpot.potentials.descriptors.se_e2_a import SeE2A, SeE2AConfig, compute_env_stats, environment, smooth_switch
from nnpot.potentials.ensemble import EnsembleModel
from nnpot.potentials.evaluator import Evaluator, check_structure, predict, resolve_device, stress_from_virial
from nnpot.potentials.model import EnergyModel
from nnpot.potentials.modelfile import load_ensemble, load_model, save_model
from nnpot.potentials.neighbors import PaddedNeighbors, build_neighbors, neighbor_pairs, padded_neighbors
from nnpot.potentials.stats import apply_stats, fit_energy_bias

__all__ = [
    "AtomsBatch",
    "make_batch",
    "types_from_numbers",
    "NNPotCalculator",
    "EnsembleCalculator",
    "EnsembleModel",
    "load_ensemble",
    "Descriptor",
    "DescriptorConfig",
    "SeE2AConfig",
    "register_descriptor",
    "build_descriptor",
    "descriptor_names",
    "available_descriptors",
    "FittingConfig",
    "ModelConfig",
    "derivatives",
    "Evaluator",
    "stress_from_virial",
    "resolve_device",
    "check_structure",
    "predict",
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
