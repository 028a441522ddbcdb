"""Ensembles: mean predictions, DP-GEN's model deviation, training, and uncertainty-aware MD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units

from nnpot import EnsembleCalculator, NNPotCalculator
from nnpot.cli import main
from nnpot.errors import ConfigError
from nnpot.potentials import EnergyModel, apply_stats, load_model, save_model
from nnpot.potentials.ensemble import EnsembleModel

from .conftest import small_config


@pytest.fixture(scope="module")
def members(water) -> list[EnergyModel]:
    frames = [water[i] for i in range(0, 320, 80)]
    out = []
    for seed in (1, 2):
        config = small_config()
        config.seed = seed
        model = EnergyModel(config)
        apply_stats(model, frames, np.array([f.energy for f in frames]))
        out.append(model.eval())
    return out


def test_deviation_equals_a_hand_computation_for_two_models(members, water_atoms):
    singles = []
    for m in members:
        a = water_atoms.copy()
        a.calc = NNPotCalculator(m, device="cpu")
        singles.append((a.get_potential_energy(), a.get_forces()))
    (e1, f1), (e2, f2) = singles
    atoms = water_atoms.copy()
    atoms.calc = EnsembleCalculator(EnsembleModel(members), device="cpu")
    n = len(atoms)
    assert atoms.get_potential_energy() == pytest.approx((e1 + e2) / 2, rel=1e-13)
    np.testing.assert_allclose(atoms.get_forces(), (f1 + f2) / 2, atol=1e-12)
    per_atom = np.linalg.norm(f1 - f2, axis=1) / 2  # sqrt(mean_m |F_m - <F>|^2) for two models
    r = atoms.calc.results
    np.testing.assert_allclose(r["devi_f"], per_atom, atol=1e-12)
    assert r["max_devi_f"] == pytest.approx(per_atom.max(), rel=1e-12)
    assert r["min_devi_f"] == pytest.approx(per_atom.min(), rel=1e-12)
    assert r["avg_devi_f"] == pytest.approx(per_atom.mean(), rel=1e-12)
    assert r["devi_e"] == pytest.approx(abs(e1 - e2) / 2 / n, rel=1e-10)


def test_mean_forces_are_the_gradient_of_the_mean_energy(members, water_atoms):
    atoms = water_atoms.copy()
    atoms.calc = EnsembleCalculator(EnsembleModel(members), device="cpu", skin=0.0)
    forces = atoms.get_forces()
    rng = np.random.default_rng(0)
    h = 1e-4
    for i in rng.choice(len(atoms), 4, replace=False):
        for d in range(3):
            pos = atoms.positions.copy()
            pos[i, d] += h
            atoms.positions = pos
            ep = atoms.get_potential_energy()
            pos[i, d] -= 2 * h
            atoms.positions = pos
            em = atoms.get_potential_energy()
            pos[i, d] += h
            atoms.positions = pos
            assert -(ep - em) / (2 * h) == pytest.approx(forces[i, d], abs=1e-6)


def test_members_must_share_type_map_cutoff_and_sel(members):
    config = small_config()
    config.descriptor.rcut = 5.0
    with pytest.raises(ConfigError, match="cutoff"):
        EnsembleModel([members[0], EnergyModel(config)])
    with pytest.raises(ConfigError, match="at least 2"):
        EnsembleModel([members[0]])


def test_ensemble_training_gives_a_folder_model_and_resumes(tmp_path, water):
    from nnpot.data import write_h5

    write_h5([water[i] for i in range(10)], tmp_path / "w.h5")
    args = ["train", "--data", str(tmp_path / "w.h5"), "--out", str(tmp_path / "ens"), "--ensemble", "2", "-q",
            "--set", "num_steps=3", "--set", "stat_frames=4", "--set", "valid_frames=2", "--set", "valid_freq=3",
            "--set", "model.descriptor.neuron=[4,8]", "--set", "model.descriptor.axis_neuron=2",
            "--set", "model.fitting.neuron=[8]"]
    assert main(args) == 0
    model = load_model(tmp_path / "ens")
    assert isinstance(model, EnsembleModel) and len(model) == 2
    a, b = (m.state_dict() for m in model.members)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # different seeds
    atoms = water[11].to_atoms()
    atoms.calc = NNPotCalculator(str(tmp_path / "ens"), device="cpu")
    atoms.get_potential_energy()
    assert atoms.calc.results["max_devi_f"] > 0
    assert main(args) == 2  # refuses to overwrite without --force or --resume
    assert main(["convert", str(tmp_path / "ens"), "-o", str(tmp_path / "ens.dp")]) == 2  # members one by one
    assert not (tmp_path / "ens.dp").exists()
    stamp = (tmp_path / "ens" / "member_1" / "model.nnp").stat().st_mtime_ns
    assert main(["train", "--resume", str(tmp_path / "ens"), "-q"]) == 0  # finished members are kept
    assert (tmp_path / "ens" / "member_1" / "model.nnp").stat().st_mtime_ns == stamp


def test_md_logs_the_deviation_and_stops_above_a_bound(members, water_atoms, tmp_path):
    from nnpot.md import VelocityVerlet
    from nnpot.md.state import thermalize
    from nnpot.md.uncertainty import DeviationMonitor

    atoms = water_atoms.copy()
    thermalize(atoms, 300, 0)
    atoms.calc = EnsembleCalculator(EnsembleModel(members), device="cpu")
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    monitor = DeviationMonitor(dyn, interval=2, logfile=tmp_path / "model_devi.out")
    assert dyn.run(6) is True
    rec = monitor.array()
    assert rec.shape == (4, 6) and list(rec[:, 0]) == [0, 2, 4, 6]
    assert (rec[:, 2] >= rec[:, 4]).all() and (rec[:, 4] >= rec[:, 3]).all()  # max >= avg >= min
    assert len((tmp_path / "model_devi.out").read_text().splitlines()) == 5
    stop = DeviationMonitor(dyn, interval=1, stop_above=0.5 * float(rec[:, 2].min()))
    assert dyn.run(20) is False and "max_devi_f" in dyn.stop_reason
    assert dyn.nsteps == 7 and len(stop.records) == 1
    single = water_atoms.copy()
    single.calc = NNPotCalculator(members[0], device="cpu")
    with pytest.raises(ConfigError, match="ensemble"):
        DeviationMonitor(VelocityVerlet(single, 0.5 * units.fs))


def test_fine_tuning_starts_from_the_given_model(tmp_path, water, members):
    from nnpot.data import write_h5

    write_h5([water[i] for i in range(6)], tmp_path / "w.h5")
    save_model(members[0], tmp_path / "start.nnp")
    assert main(["train", "--data", str(tmp_path / "w.h5"), "--out", str(tmp_path / "ft"), "-q",
                 "--init-model", str(tmp_path / "start.nnp"), "--set", "num_steps=1", "--set", "valid_frames=2",
                 "--set", "valid_freq=1", "--set", "start_lr=1e-12", "--set", "stop_lr=1e-13", "--set", "bias_refit_frames=0"]) == 0
    tuned = load_model(tmp_path / "ft" / "model.nnp")
    start = members[0].state_dict()
    for k, v in tuned.state_dict().items():
        assert torch.allclose(v, start[k], rtol=1e-8, atol=1e-9), k  # lr ~ 0: still the starting weights


def test_members_in_one_vectorised_pass_equal_one_after_the_other(members, water):
    """The batched path (vmap over stacked weights, one batched backward; opt-in)
    gives the sequential path's numbers."""
    from nnpot.potentials import make_batch

    ens = EnsembleModel(members)
    batch = make_batch([water[5], water[9]], ens.type_map, ens.cutoff, ens.sel)
    outs = {}
    for batched in (False, True):
        ens.batched = batched
        outs[batched] = ens.evaluate_batch(batch)
    for key in ("energy", "forces", "virial", "atom_energy", "max_devi_f", "devi_e", "forces_members"):
        torch.testing.assert_close(outs[True][key], outs[False][key], rtol=1e-12, atol=1e-11)
    import copy

    ens32 = copy.deepcopy(ens).to(torch.float32)  # the stacked weights follow a cast of the members
    out32 = ens32.evaluate_batch(make_batch([water[5]], ens.type_map, ens.cutoff, ens.sel, dtype=torch.float32))
    assert out32["energy"].dtype == torch.float32
    assert float(out32["energy"][0]) == pytest.approx(float(outs[False]["energy"][0]), rel=1e-6)
