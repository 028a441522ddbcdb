"""The e3nn descriptor: the same physics checks as se_e2_a, equivariance of its features, and
that files, calculator and MD take it unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units

from nnpot import NNPotCalculator, load_model, save_model
from nnpot.potentials import EnergyModel, ModelConfig
from nnpot.potentials import testing as T
from nnpot.potentials.descriptors.e3nn import polynomial_envelope

from tests.conftest import e3nn_config, fitted


# strictly local (two self-interaction layers) and message passing (one of each)
@pytest.fixture(scope="module", params=[(2, 0), (1, 1)], ids=["local", "message"])
def e3nn_model(request, water):
    layers, message_layers = request.param
    return fitted(EnergyModel(e3nn_config(layers=layers, message_layers=message_layers)), water)


@pytest.fixture(scope="module")
def message_model(water):
    return fitted(EnergyModel(e3nn_config(layers=0, message_layers=2)), water)


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

    index = torch.randint(0, 3, (3, K))  # any neighbor atoms: the messages must stay equivariant

    def features(x):
        return d.features(x.reshape(3, K, 3), mask, types, capacity, index)

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


def test_message_passing_receptive_field(message_model, small_model):
    """Three atoms in a row, A-B and B-C within rcut, A-C beyond it: moving C changes A's
    energy through B's features with message layers, and never for a local model."""
    from ase import Atoms

    rc = message_model.cutoff
    assert message_model.receptive_field == pytest.approx(3 * rc) and not message_model.is_local
    assert small_model.is_local and small_model.receptive_field == pytest.approx(rc)

    def chain(xc):
        return Atoms("OHO", positions=[[0, 0, 0], [0.6 * rc, 0.3, 0], [xc, 0.6, 0.2]])

    for model, should_see in ((message_model, True), (small_model, False)):
        e_a = [T.evaluate(model, [chain(x * rc)])["atom_energy"][0] for x in (1.2, 1.3)]
        if should_see:  # 1e-7 eV with these untrained weights; round-off is ~1e-13
            assert abs(e_a[1] - e_a[0]) > 1e-9
        else:
            assert e_a[1] == e_a[0]
    far = [T.evaluate(message_model, [chain(x * rc)])["atom_energy"][0] for x in (3.7, 3.9)]  # A-C beyond 3 rc
    assert far[0] == far[1]


def test_message_passing_ignores_chunks_and_matches_md_forces(message_model, water_atoms):
    """Chunked evaluation would cut messages: it is switched off, and the MD force provider
    (skin, trimmed slots) gives the same numbers as a plain evaluation."""
    from nnpot.potentials.batch import make_batch
    from nnpot.potentials.evaluator import Evaluator
    from nnpot.potentials.derivatives import derivatives

    m = message_model
    batch = make_batch([water_atoms], m.type_map, m.cutoff, m.sel, dtype=m.dtype)
    whole, chunked = derivatives(m, batch), derivatives(m, batch, chunk_size=50)
    torch.testing.assert_close(chunked["forces"], whole["forces"], rtol=0, atol=1e-12)
    provider = Evaluator(m, [water_atoms], skin=1.0, chunk_size=50)
    pos = torch.as_tensor(water_atoms.positions, dtype=m.dtype)
    cell = torch.as_tensor(np.asarray(water_atoms.cell), dtype=m.dtype)[None]
    out = provider(pos, cell)
    energy, forces, virial = out["energy"], out["forces"], out["virial"]
    torch.testing.assert_close(energy, whole["energy"], rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(forces, whole["forces"], rtol=0, atol=1e-10)
    torch.testing.assert_close(virial, whole["virial"], rtol=0, atol=1e-9)


def test_message_passing_physics_in_a_small_cell(message_model, water_atoms):
    """Two message layers see 3 rcut = 18 A, beyond this 12.4 A box in every direction:
    periodic images share features, so finite differences and supercells stay exact."""
    assert T.check_forces(message_model, water_atoms, rtol=1e-6) < 1e-6
    assert T.check_virial(message_model, water_atoms, rtol=1e-6) < 1e-6
    T.check_supercell(message_model, water_atoms, reps=(1, 2, 1), rtol=1e-10)


def test_message_layers_need_e3nn():
    from nnpot.errors import ConfigError

    from nnpot.potentials.config import from_dict

    with pytest.raises(ConfigError, match="unknown key 'descriptor.message_layers'"):
        from_dict(ModelConfig, {"descriptor": {"message_layers": 1}})
    cfg = from_dict(ModelConfig, {"descriptor": {"type": "e3nn", "message_layers": 1}}).validate()
    assert cfg.descriptor.message_layers == 1
