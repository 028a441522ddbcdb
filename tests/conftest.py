from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nnpot.bundled import bundled_dataset
from nnpot.data import H5Dataset
from nnpot.potentials import EnergyModel, ModelConfig, apply_stats

ROOT = Path(__file__).resolve().parents[1]
WATER = bundled_dataset("water")
MOLECULE = bundled_dataset("molecule_C3H3O4")


def small_config(dtype: str = "float64") -> ModelConfig:
    """se_e2_a with the water cutoff and sel but narrow nets, so physics tests run fast."""
    cfg = ModelConfig(type_map=["O", "H"], dtype=dtype)
    cfg.descriptor.sel = [46, 92]
    cfg.descriptor.neuron = [8, 16]
    cfg.descriptor.axis_neuron = 4
    cfg.fitting.neuron = [16, 16]
    return cfg


def e3nn_config(dtype: str = "float64", layers: int = 1, message_layers: int = 0) -> ModelConfig:
    from nnpot.potentials.equivariant import E3nnConfig

    cfg = ModelConfig(type_map=["O", "H"], dtype=dtype)
    cfg.descriptor = E3nnConfig(sel=[46, 92], channels=4, radial_neuron=[8], layers=layers,
                                message_layers=message_layers)
    cfg.fitting.neuron = [16, 16]
    return cfg


def fitted(model: EnergyModel, water) -> EnergyModel:
    frames = [water[i] for i in range(0, len(water), 40)]
    apply_stats(model, frames, np.array([f.energy for f in frames]))
    return model.eval()


@pytest.fixture(scope="session")
def water() -> H5Dataset:
    return H5Dataset(WATER)


@pytest.fixture(scope="session")
def small_model(water) -> EnergyModel:
    torch.set_num_threads(2)
    model = EnergyModel(small_config())
    frames = [water[i] for i in range(0, len(water), 40)]
    apply_stats(model, frames, np.array([f.energy for f in frames]))
    return model.eval()


@pytest.fixture()
def water_atoms(water):
    atoms = water[3].to_atoms()
    atoms.calc = None
    return atoms


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
