"""A third descriptor, defined here, plugs in through the registry alone: the model, the
derivatives, statistics, model files, the calculator and MD use it without knowing its type."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from ase import units

from nnpot.errors import ConfigError
from nnpot.potentials import NNPotCalculator, apply_stats, descriptor_names, load_model, save_model
from nnpot.potentials import testing as T
from nnpot.potentials.config import ModelConfig, from_dict
from nnpot.potentials.descriptors.base import Descriptor, DescriptorConfig, register_descriptor
from nnpot.potentials.model import EnergyModel


@dataclass
class RadialConfig(DescriptorConfig):
    type: str = "test_radial"
    n_basis: int = 6


@register_descriptor("test_radial", RadialConfig)
class RadialDescriptor(Descriptor):
    """Per neighbor type, Gaussians of the distance times a C2 cosine-power switch: a two-body
    descriptor whose empty slots contribute exactly zero, so any slot capacity is exact."""

    def __init__(self, config: RadialConfig, n_types: int, dtype: torch.dtype = torch.float64):
        super().__init__(config, n_types, dtype)
        self.register_buffer("centers", torch.linspace(0.8, config.rcut, config.n_basis, dtype=dtype))
        self.dim_out = n_types * config.n_basis
        self.fitted = False

    def fit_statistics(self, structures, type_map) -> None:
        self.fitted = True  # called by apply_stats through the protocol

    def forward(self, rij, mask, center_types, capacity, **inputs):
        safe = torch.where(mask[..., None], rij, torch.ones_like(rij))
        r = safe.norm(dim=-1)  # [n, K]
        switch = torch.cos(0.5 * math.pi * (r / self.rcut).clamp(max=1.0)) ** 3 * mask
        g = torch.exp(-((r[..., None] - self.centers) ** 2)) * switch[..., None]  # [n, K, nb]
        blocks, start = [], 0
        for cap in capacity:
            blocks.append(g[:, start:start + cap].sum(dim=1))
            start += cap
        return torch.cat(blocks, dim=-1) / 10.0


@pytest.fixture(scope="module")
def radial_model(water) -> EnergyModel:
    config = from_dict(ModelConfig, {"type_map": ["O", "H"], "descriptor": {"type": "test_radial", "n_basis": 5,
                                     "sel": [46, 92]}, "fitting": {"neuron": [16, 16]}})
    model = EnergyModel(config.validate())
    frames = [water[i] for i in range(0, len(water), 80)]
    apply_stats(model, frames, np.array([f.energy for f in frames]))
    assert model.descriptor.fitted
    return model.eval()


def test_registered_descriptor_is_known_by_name():
    assert {"se_e2_a", "e3nn", "test_radial"} <= set(descriptor_names())
    with pytest.raises(ConfigError, match="descriptor.type: 'nope' is not known; allowed: .*test_radial"):
        from_dict(ModelConfig, {"descriptor": {"type": "nope"}})
    with pytest.raises(ConfigError, match="unknown key 'descriptor.neuron'"):  # se_e2_a's field, not this one's
        from_dict(ModelConfig, {"descriptor": {"type": "test_radial", "neuron": [8]}})


def test_third_descriptor_physics(radial_model, water_atoms):
    assert T.check_forces(radial_model, water_atoms) < 1e-6
    assert T.check_virial(radial_model, water_atoms) < 1e-6
    T.check_invariance(radial_model, water_atoms)
    T.check_supercell(radial_model, water_atoms, reps=(1, 1, 2))


def test_third_descriptor_through_file_calculator_and_md(radial_model, water_atoms, tmp_path):
    from nnpot.md import VelocityVerlet
    from nnpot.md.state import thermalize

    path = save_model(radial_model, tmp_path / "radial.nnp")
    loaded = load_model(path)
    assert loaded.config.descriptor.n_basis == 5 and loaded.descriptor.is_local
    water_atoms.calc = NNPotCalculator(path, device="cpu")
    ref = T.evaluate(radial_model, [water_atoms])
    assert water_atoms.get_potential_energy() == pytest.approx(float(ref["energy"][0]), abs=1e-9)
    np.testing.assert_allclose(water_atoms.get_forces(), ref["forces"], atol=1e-10)
    thermalize(water_atoms, 300, rng=0)
    dyn = VelocityVerlet(water_atoms, 0.5 * units.fs)
    e0 = water_atoms.get_total_energy()
    dyn.run(20)
    assert water_atoms.get_total_energy() == pytest.approx(e0, abs=2e-3 * len(water_atoms) ** 0.5)
    with pytest.raises(ConfigError, match="descriptor 'test_radial' has no tabulated form"):
        NNPotCalculator(radial_model, device="cpu", tabulate=True)


def test_two_side_embeddings_by_gather_equal_the_sync_free_path(water):
    """type_one_side False (one embedding net per type pair): the CPU path (centers gathered
    per type) and the CUDA-graph-safe path (every net on every center, kept by type) agree,
    values and gradients."""
    from nnpot.potentials import EnergyModel, make_batch
    from nnpot.potentials.descriptors import se_e2_a as se

    from .conftest import small_config

    config = small_config()
    config.descriptor.type_one_side = False
    model = EnergyModel(config)
    assert len(model.descriptor.embeddings) == 4
    batch = make_batch([water[0]], model.type_map, model.cutoff, model.sel)
    rij = batch.edge_vectors().detach().requires_grad_(True)
    outs = []
    for sync_free in (False, True):
        original = se.by_center_type
        se.by_center_type = lambda ct, n, fn, sync_free=sync_free, _f=original: _f(ct, n, fn, sync_free)
        try:
            e = model(rij, batch.neighbors.mask, batch.types, batch.neighbors.capacity).sum()
        finally:
            se.by_center_type = original
        outs.append((e.detach(), torch.autograd.grad(e, rij)[0]))
    assert torch.allclose(outs[0][0], outs[1][0], rtol=1e-13, atol=0)
    assert torch.allclose(outs[0][1], outs[1][1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["se_e2_a", "e3nn"])
def test_rcut_and_sel_have_one_owner(kind):
    """The model, its descriptor and its config read rcut and sel from one place: changing the
    config changes what every reader sees (no copy can go stale)."""
    from nnpot.potentials import EnergyModel

    from .conftest import e3nn_config, small_config

    model = EnergyModel(small_config() if kind == "se_e2_a" else e3nn_config())
    model.config.descriptor.sel = [10, 20]
    model.config.descriptor.rcut = 5.0
    assert model.sel == model.descriptor.sel == [10, 20]
    assert model.cutoff == model.descriptor.rcut == 5.0
