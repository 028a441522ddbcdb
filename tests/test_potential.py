"""se_e2_a: physics checks from nnpot.potentials.testing, model files and the ASE calculator."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from nnpot import NNPotCalculator, load_model, save_model
from nnpot.errors import AtomsTooCloseError, InvalidStructureError, ModelFileError, UnknownElementError
from nnpot.potentials import EnergyModel
from nnpot.potentials.descriptors import se_e2_a_kernels as descriptor  # the environment matrix lives here
from nnpot.potentials import testing as T

from .conftest import small_config


def test_forces_are_minus_energy_gradient(small_model, water_atoms):
    assert T.check_forces(small_model, water_atoms, rtol=1e-6) < 1e-6


def test_virial_is_minus_strain_derivative(small_model, water_atoms):
    assert T.check_virial(small_model, water_atoms, rtol=1e-6) < 1e-6


def test_rotation_translation_permutation_invariance(small_model, water_atoms):
    T.check_invariance(small_model, water_atoms, atol=1e-9)


def test_smooth_across_cutoff(small_model, water_atoms):
    T.check_cutoff_smoothness(small_model, water_atoms, atol=1e-8)


def test_smoothness_check_catches_a_hard_cutoff(small_model, water_atoms, monkeypatch):
    """Negative control: with a step-function switch the same check must fail."""
    monkeypatch.setattr(descriptor, "smooth_switch", lambda r, rs, rc: (r < rc).to(r.dtype))
    with pytest.raises(AssertionError, match="jump"):
        T.check_cutoff_smoothness(small_model, water_atoms, atol=1e-8)


def test_supercell_and_batch(small_model, water, water_atoms):
    T.check_supercell(small_model, water_atoms, reps=(2, 1, 1), rtol=1e-10)
    a, b = water[7].to_atoms(), water[8].to_atoms()
    T.check_batch_consistency(small_model, [a, b], atol=1e-9)


def test_longer_neighbor_list_gives_identical_energy(small_model, water_atoms):
    """The descriptor's slot correction makes a skin list (more slots) exact."""
    from nnpot.potentials import derivatives, make_batch

    ref = make_batch([water_atoms], small_model.type_map, 6.0, small_model.sel)
    wide = make_batch([water_atoms], small_model.type_map, 7.0, [70, 140])
    a, b = derivatives(small_model, ref), derivatives(small_model, wide)
    torch.testing.assert_close(a["energy"], b["energy"], rtol=0, atol=1e-9)
    torch.testing.assert_close(a["forces"], b["forces"], rtol=0, atol=1e-10)


def test_chunked_evaluation_is_exact(small_model, water_atoms):
    from nnpot.potentials import derivatives, make_batch

    batch = make_batch([water_atoms], small_model.type_map, 6.0, small_model.sel)
    a, b = derivatives(small_model, batch), derivatives(small_model, batch, chunk_size=50)
    for k in ("energy", "forces", "virial"):
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-10)


def test_float32_agrees_with_float64(small_model, water_atoms):
    m32 = EnergyModel(small_config("float32"))
    m32.load_state_dict({k: v.float() for k, v in small_model.state_dict().items()})
    e64, e32 = T.evaluate(small_model, [water_atoms]), T.evaluate(m32, [water_atoms])
    assert abs(e64["energy"][0] - e32["energy"][0]) / 192 < 1e-4  # eV/atom
    assert np.abs(e64["forces"] - e32["forces"]).max() < 1e-4  # eV/A


def test_calculator_against_ase_numerical_derivatives(small_model, water_atoms):
    from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

    atoms = water_atoms
    atoms.calc = NNPotCalculator(small_model, device="cpu")
    num_f = calculate_numerical_forces(atoms, eps=1e-4, iatoms=[0, 1, 100])
    np.testing.assert_allclose(atoms.get_forces()[[0, 1, 100]], num_f, atol=1e-6)
    num_s = calculate_numerical_stress(atoms, eps=1e-5)
    np.testing.assert_allclose(atoms.get_stress(), num_s, atol=1e-7)
    assert atoms.get_potential_energy() == pytest.approx(atoms.get_potential_energies().sum(), rel=1e-12)


def test_calculator_non_periodic_and_mixed_pbc(small_model, water_atoms):
    mol = water_atoms[:9]
    mol.pbc = False
    mol.cell = np.zeros((3, 3))
    mol.calc = NNPotCalculator(small_model, device="cpu")
    assert np.isfinite(mol.get_potential_energy())
    np.testing.assert_allclose(mol.get_forces().sum(0), 0, atol=1e-10)  # no external field
    slab = water_atoms.copy()
    slab.pbc = [True, True, False]
    slab.calc = NNPotCalculator(small_model, device="cpu")
    T.check_forces(small_model, slab, rtol=1e-6)


def test_unknown_element_is_a_clear_error(small_model, water_atoms):
    water_atoms.numbers[0] = 6
    water_atoms.calc = NNPotCalculator(small_model, device="cpu")
    with pytest.raises(UnknownElementError, match=r"element\(s\) C not known to the model.*\['O', 'H'\]"):
        water_atoms.get_potential_energy()


def test_bad_structures_are_clear_errors(small_model, water_atoms):
    def energy(atoms, **kwargs):
        atoms.calc = NNPotCalculator(small_model, device="cpu", **kwargs)
        return atoms.get_potential_energy()

    a = water_atoms.copy()
    a.positions[5, 1] = np.nan
    with pytest.raises(InvalidStructureError, match=r"atom 5 has a non-finite position"):
        energy(a)
    a = water_atoms.copy()
    a.cell = [[12.0, 0, 0], [24.0, 0, 0], [0, 0, 12.0]]
    with pytest.raises(InvalidStructureError, match="the cell is singular"):
        energy(a)
    a = water_atoms.copy()
    a.positions[7] = a.positions[2] + [0.1, 0.05, 0.0]
    with pytest.raises(AtomsTooCloseError, match=r"atoms (2 and 7|7 and 2) are 0.112 A apart"):
        energy(a)
    assert np.isfinite(energy(a, min_distance=0.0))  # the check can be turned off
    a = water_atoms.copy()  # an atom next to a periodic image of another, across the boundary
    a.positions[0], a.positions[1] = [0.05, 5.0, 5.0], [a.cell[0, 0] - 0.15, 5.0, 5.0]
    with pytest.raises(AtomsTooCloseError, match=r"are 0.200 A apart"):
        energy(a)
    from nnpot.md import VelocityVerlet

    a = water_atoms.copy()
    a.positions[7] = a.positions[2] + [0.1, 0.05, 0.0]
    a.calc = NNPotCalculator(small_model, device="cpu", min_distance=0.0)
    with pytest.raises(AtomsTooCloseError):  # MD refuses to start from it
        VelocityVerlet(a, 1.0)


def test_model_file_round_trip(tmp_path, small_model, water_atoms):
    path = save_model(small_model, tmp_path / "m.nnp", provenance={"note": "test"})
    loaded = load_model(path)
    assert loaded.meta["provenance"]["note"] == "test" and loaded.meta["format_version"] == 1
    a, b = T.evaluate(small_model, [water_atoms]), T.evaluate(loaded, [water_atoms])
    np.testing.assert_array_equal(a["forces"], b["forces"])
    calc = NNPotCalculator(str(path), device="cpu")
    water_atoms.calc = calc
    assert water_atoms.get_potential_energy() == pytest.approx(a["energy"][0], rel=1e-14)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_crafted_pickle_is_refused(tmp_path):
    with open(tmp_path / "evil.nnp", "wb") as fh:
        torch.save({"meta_json": "{}", "state_dict": {}, "x": _Evil()}, fh)
    with pytest.raises(ModelFileError, match="refused to load"):
        load_model(tmp_path / "evil.nnp")
    (tmp_path / "junk.nnp").write_bytes(pickle.dumps([1, 2]) [:5])
    with pytest.raises(ModelFileError, match="refused to load|not a readable nnpot model file"):
        load_model(tmp_path / "junk.nnp")


def test_unknown_format_version(tmp_path, small_model):
    import json

    path = save_model(small_model, tmp_path / "m.nnp")
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["meta_json"])
    meta["format_version"] = 99
    payload["meta_json"] = json.dumps(meta)
    torch.save(payload, tmp_path / "v99.nnp")
    with pytest.raises(ModelFileError, match="model format version 99 .* this nnpot reads version 1"):
        load_model(tmp_path / "v99.nnp")


def test_ase_plugin_registered():
    from ase._4.plugins import plugins

    names = {p.name for p in plugins.calculators}
    assert "nnpot" in names
    plugin = next(p for p in plugins.calculators if p.name == "nnpot")
    assert plugin.implementation is NNPotCalculator


@pytest.mark.gpu
def test_cuda_matches_cpu(small_model, water_atoms):
    cpu = T.evaluate(small_model, [water_atoms])
    gpu_model = load_model.__globals__["EnergyModel"](small_model.config)
    gpu_model.load_state_dict(small_model.state_dict())
    gpu = T.evaluate(gpu_model.to("cuda"), [water_atoms])
    np.testing.assert_allclose(cpu["forces"], gpu["forces"], atol=1e-10)
    assert cpu["energy"][0] == pytest.approx(gpu["energy"][0], rel=1e-12)


def test_calculator_reused_neighbor_list_equals_fresh_lists(small_model, water_atoms):
    """Small moves reuse the skin list, a far jump or a strained cell rebuilds it, a new
    composition gets a new list: every result equals a fresh build's."""
    kw = dict(device="cpu", min_distance=0.0)  # random jumps of 2 A make overlaps; the lists are what is tested
    reuse, fresh = NNPotCalculator(small_model, skin=1.0, **kw), NNPotCalculator(small_model, skin=0, **kw)
    rng = np.random.default_rng(2)
    atoms = water_atoms.copy()
    moves = [0.05, 0.1, 0.1, 2.0, 0.05]
    for k, step in enumerate(moves + ["strain", "smaller"]):
        if step == "strain":
            atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.03 * rng.normal(size=(3, 3))), scale_atoms=True)
        elif step == "smaller":
            del atoms[[0, 1, 2]]
        else:
            atoms.positions += step * rng.normal(size=atoms.positions.shape) / np.sqrt(3)
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = reuse, fresh
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-10, err_msg=str(step))
        np.testing.assert_allclose(a.get_stress(), b.get_stress(), atol=1e-12, err_msg=str(step))
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), rel=1e-12)
    builds = reuse._evaluator[1].nlist.n_builds
    assert builds == 1  # the last composition: built once
