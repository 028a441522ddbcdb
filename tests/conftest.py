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
    from nnpot.potentials.descriptors.e3nn import E3nnConfig

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


SMALL_TRAIN = ["model.descriptor.neuron=[8,16]", "model.descriptor.axis_neuron=4", "model.fitting.neuron=[16,16]",
               "stat_frames=8", "valid_frames=8", "valid_fraction=0.1", "threads=2"]


@pytest.fixture(scope="session")
def budget_run(tmp_path_factory):
    """``nnpot train --max-time 1m`` of a small se_e2_a on the bundled water, as a user runs it:
    the run folder, its stdout and stderr, and its wall time in seconds."""
    import subprocess
    import sys
    import time

    out = tmp_path_factory.mktemp("budget") / "run"
    cmd = [sys.executable, "-m", "nnpot.cli", "train", "--data", str(WATER), "--out", str(out), "--max-time", "1m"]
    for kv in SMALL_TRAIN:
        cmd += ["--set", kv]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout, proc.stderr, wall
