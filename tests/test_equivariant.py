"""The e3nn descriptor: the same physics checks as se_e2_a, equivariance of its features, and
that files, calculator and MD take it unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units

from nnpot import NNPotCalculator, load_model, save_model
from nnpot.potentials import EnergyModel, ModelConfig, apply_stats
from nnpot.potentials import testing as T
from nnpot.potentials.equivariant import polynomial_envelope


def e3nn_config(dtype: str = "float64", layers: int = 1) -> ModelConfig:
    cfg = ModelConfig(dtype=dtype)
    cfg.descriptor.type = "e3nn"
    cfg.descriptor.channels = 4
    cfg.descriptor.radial_neuron = [8]
    cfg.descriptor.layers = layers
    cfg.fitting.neuron = [16, 16]
    return cfg


@pytest.fixture(scope="module")
def e3nn_model(water):
    model = EnergyModel(e3nn_config(layers=2))
    frames = [water[i] for i in range(0, len(water), 40)]
    apply_stats(model, frames, np.array([f.energy for f in frames]))
    return model.eval()


def test_forces_virial_and_invariance(e3nn_model, water_atoms):
    assert T.check_forces(e3nn_model, water_atoms, rtol=1e-6) < 1e-6
    assert T.check_virial(e3nn_model, water_atoms, rtol=1e-6) < 1e-6
    T.check_invariance(e3nn_model, water_atoms, atol=1e-9)


def test_smooth_cutoff_supercell_and_batch(e3nn_model, water, water_atoms):
    T.check_cutoff_smoothness(e3nn_model, water_atoms, atol=1e-8)
    T.check_supercell(e3nn_model, water_atoms, reps=(2, 1, 1), rtol=1e-10)
    a, b = water[0].to_atoms(), water[7].to_atoms()
    T.check_batch_consistency(e3nn_model, [a, b], atol=1e-9)


def test_envelope_is_twice_differentiable_at_the_cutoff():
    """u(1 - e) = O(e^3): value, slope and curvature all go to zero at the cutoff (p = 6: 56 e^3)."""
    for eps in (1e-2, 1e-3, 1e-4):
        x = torch.tensor([1.0 - eps, 1.0, 1.3], dtype=torch.float64, requires_grad=True)
        u = polynomial_envelope(x)
        (d1,) = torch.autograd.grad(u.sum(), x, create_graph=True)
        (d2,) = torch.autograd.grad(d1.sum(), x)
        u, d1 = u.detach(), d1.detach()
        assert float(u[0]) == pytest.approx(56 * eps ** 3, rel=0.05)
        assert abs(float(d1[0])) < 200 * eps ** 2 and abs(float(d2[0])) < 400 * eps
        assert float(u[1]) == 0.0 and float(u[2]) == 0.0 and float(d1[2]) == 0.0


def test_features_are_equivariant_under_rotation_and_parity(e3nn_model):
    """e3nn's own check: rotating/inverting the neighbor vectors (K x 1o) transforms the features by their irreps."""
    from e3nn import o3
    from e3nn.util.test import assert_equivariant

    d = e3nn_model.descriptor
    K = 12
    mask = torch.ones(3, K, dtype=torch.bool)
    mask[0, -3:] = False
    types = torch.tensor([0, 1, 0])
    capacity = (4, 8)

    def density(x):
        return d.density(x.reshape(3, K, 3), mask, types, capacity)

    def features(x):
        return d.features(x.reshape(3, K, 3), mask, types, capacity)

    torch.manual_seed(0)
    x = torch.randn(3, K * 3, dtype=torch.float64) * 1.5
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn draws its random rotations in the default dtype
    try:
        for fn in (density, features):
            errors = assert_equivariant(fn, args_in=[x], irreps_in=[o3.Irreps(f"{K}x1o")], irreps_out=[d.irreps_h],
                                        tolerance=1e-9)
            assert max(float(v.abs().max()) for v in errors.values()) < 1e-9
    finally:
        torch.set_default_dtype(previous)


def test_model_file_calculator_and_md(tmp_path, e3nn_model, water_atoms):
    from nnpot.md import VelocityVerlet

    path = save_model(e3nn_model, tmp_path / "e3nn.nnp")
    loaded = load_model(path)
    assert loaded.config.descriptor.type == "e3nn"
    water_atoms.calc = NNPotCalculator(e3nn_model, device="cpu")
    e0, f0 = water_atoms.get_potential_energy(), water_atoms.get_forces()
    water_atoms.calc = NNPotCalculator(path, device="cpu")
    assert water_atoms.get_potential_energy() == pytest.approx(e0, abs=1e-10)
    np.testing.assert_allclose(water_atoms.get_forces(), f0, atol=1e-10)
    dyn = VelocityVerlet(water_atoms, 0.5 * units.fs)
    dyn.run(5)
    assert np.isfinite(water_atoms.positions).all() and dyn.nsteps == 5


def test_float32_close_to_float64(e3nn_model, water_atoms):
    a = T.evaluate(e3nn_model, [water_atoms])
    b = T.evaluate(e3nn_model.to(torch.float32), [water_atoms])
    e3nn_model.to(torch.float64)
    assert abs(a["energy"][0] - b["energy"][0]) / abs(a["energy"][0]) < 1e-6  # float32 epsilon: 6e-8
    np.testing.assert_allclose(b["forces"], a["forces"], atol=1e-4)
