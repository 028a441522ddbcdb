"""Zero-config training on any dataset: the type map and sel come from the data (molecules,
periodic alloys, water and molecules mixed), and the energy bias is re-fit in closed form."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import yaml

from nnpot.cli import main
from nnpot.data import H5Dataset, write_h5
from nnpot.data.emt_alloys import emt_alloy_frames
from nnpot.potentials import load_model
from nnpot.potentials import testing as T
from nnpot.training.auto_config import neighbor_counts, suggest_sel

from .conftest import MOLECULE, WATER

FAST = ["--set", "model.descriptor.neuron=[8,16]", "--set", "model.descriptor.axis_neuron=4",
        "--set", "model.fitting.neuron=[16,16]", "--set", "stat_frames=8", "--set", "valid_frames=4",
        "--set", "valid_freq=10", "--set", "bias_refit_frames=8", "-q"]


@pytest.fixture(scope="module")
def alloy_h5(tmp_path_factory):
    path = tmp_path_factory.mktemp("alloy") / "alloy.h5"
    write_h5(emt_alloy_frames(["Cu", "Al", "Ni", "Ag"], 24, seed=3), path)
    return path


def _resolved(run) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())["model"]


def test_sel_rule_is_the_documented_one():
    assert suggest_sel([0, 1, 2, 9, 10, 42]) == [1, 2, 4, 10, 12, 48]  # ceil(1.1 m), rounded up to even


@pytest.mark.parametrize("name", ["molecule", "alloy"])
def test_zero_config_training_takes_type_map_and_sel_from_the_data(name, alloy_h5, tmp_path, capsys):
    data = {"molecule": MOLECULE, "alloy": alloy_h5}[name]
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--set", "num_steps=20", *FAST]) == 0
    model = _resolved(run)
    expected_types = {"molecule": ["H", "C", "O"], "alloy": ["Al", "Ni", "Cu", "Ag"]}[name]
    assert model["type_map"] == expected_types  # by atomic number
    ds = H5Dataset(data)
    counts = neighbor_counts(list(ds), model["descriptor"]["rcut"])  # every frame: no more than the sample
    assert model["descriptor"]["sel"] == [suggest_sel([counts["max_counts"][e]])[0] for e in expected_types]
    out = capsys.readouterr().out
    assert f"type_map {expected_types}" in out and "largest counts" in out
    trained = load_model(run / "model.nnp")
    atoms = ds[1].to_atoms()
    atoms.calc = None
    assert T.check_forces(trained, atoms) < 1e-6
    T.check_invariance(trained, atoms)
    if name == "alloy":
        assert T.check_virial(trained, atoms) < 1e-6
        T.check_supercell(trained, atoms, reps=(1, 1, 2))


def test_water_and_molecules_train_together(tmp_path):
    """Two --data files of different compositions and periodicity: one model for the union of
    their elements, with per-element energy statistics across both."""
    run = tmp_path / "mixed"
    assert main(["train", "--data", str(WATER), "--data", str(MOLECULE), "--out", str(run), "--set", "num_steps=12",
                 "--set", "batch_atoms=200", *FAST]) == 0
    model = _resolved(run)
    assert model["type_map"] == ["H", "C", "O"] and len(model["descriptor"]["sel"]) == 3
    trained = load_model(run / "model.nnp")
    for path in (WATER, MOLECULE):
        atoms = H5Dataset(path)[0].to_atoms()
        energy = atoms.get_potential_energy()
        atoms.calc = None
        pred = float(T.evaluate(trained, [atoms])["energy"][0])
        assert abs(pred - energy) / len(atoms) < 0.5, (path, pred, energy)  # the bias fit spans both sets


def test_validation_elements_missing_from_training_are_named(tmp_path, capsys):
    base = ["train", "--data", str(WATER), "--valid-data", str(MOLECULE), "--out", str(tmp_path / "r")]
    assert main(base + FAST[:-1] + ["--set", "num_steps=2"]) == 2
    assert "element(s) C of the data are not in the type map ['H', 'O']" in capsys.readouterr().err
    assert main(base + FAST + ["--set", "num_steps=2", "--set", "model.type_map=[H,C,O]"]) == 0
    assert "validation element(s) C do not occur in the training data" in capsys.readouterr().out


def test_energy_bias_refit_pins_the_offset_and_changes_no_force(tmp_path):
    from nnpot.training.trainer import Trainer
    from nnpot.training.config import load_train_config

    sets = [s for s in FAST if s not in ("--set", "-q")] + ["num_steps=30"]
    trainer = Trainer(load_train_config(None, sets, {"data": [str(MOLECULE)]}), tmp_path / "b", progress=False)
    for _ in range(30):
        trainer.step()
    frames = [trainer.train_ds[int(i)] for i in trainer._stat_sample()[:8]]
    atoms = frames[0].to_atoms()
    atoms.calc = None
    before = T.evaluate(trainer.model, [atoms])
    shift = trainer.refit_energy_bias()
    after = T.evaluate(trainer.model, [atoms])
    np.testing.assert_allclose(after["forces"], before["forces"], rtol=0, atol=1e-12)
    assert math.isclose(after["energy"][0] - before["energy"][0], float(np.bincount(
        np.searchsorted([1, 6, 8], atoms.numbers), minlength=3) @ shift), rel_tol=1e-9, abs_tol=1e-9)
    from nnpot.potentials.evaluator import predict

    pred = predict(trainer.model, frames)
    residual = (pred["energy_ref"] - pred["energy"]) / pred["n_atoms"]
    assert abs(residual.mean()) < 1e-6  # one composition: the least-squares fit leaves no mean offset
    assert np.allclose(trainer.refit_energy_bias(), 0, atol=1e-6)  # a second fit has nothing left
    trainer.refit_energy_bias(final=True)  # before saving: on every training frame
    every = [trainer.train_ds[int(i)] for i in trainer.train_idx]
    pred = predict(trainer.model, every)
    assert len(every) > 8 and abs(((pred["energy_ref"] - pred["energy"]) / pred["n_atoms"]).mean()) < 1e-6


def test_change_bias_pins_a_shifted_model_on_new_data_and_keeps_its_forces(small_model, tmp_path, capsys):
    """`nnpot change-bias`: a model whose offsets are off by 0.3 eV per H atom comes back with no
    mean energy error on the data, the same forces, and its input file untouched."""
    import torch

    from nnpot.potentials import save_model
    from nnpot.potentials.evaluator import predict

    model = copy.deepcopy(small_model)
    with torch.no_grad():
        model.energy_bias[1] += 0.3
    src, out = tmp_path / "off.nnp", tmp_path / "pinned.nnp"
    save_model(model, src)
    stamp = src.read_bytes()
    assert main(["change-bias", str(src), "-d", str(WATER), "--max-frames", "6", "-o", str(out)]) == 0
    assert "energy bias re-fit on 6 frames" in capsys.readouterr().out and src.read_bytes() == stamp
    frames = [H5Dataset(WATER)[i] for i in range(6)]
    before, after = predict(load_model(src), frames), predict(load_model(out), frames)
    np.testing.assert_allclose(after["forces"], before["forces"], rtol=0, atol=1e-12)
    assert abs((after["energy_ref"] - after["energy"]).mean()) < 1e-6 * len(frames[0].numbers)
    assert main(["change-bias", str(src), "-d", str(WATER), "-o", str(out)]) == 2  # exists: --force
    assert "--force" in capsys.readouterr().err
    assert main(["change-bias", str(src), "-d", str(MOLECULE), "-o", str(tmp_path / "c.nnp")]) == 2
    assert "element(s) C" in capsys.readouterr().err and not (tmp_path / "c.nnp").exists()


def test_fitting_scale_from_data_is_the_rms_training_force_and_then_fixed(tmp_path):
    """``fitting.scale_from_data``: the scale becomes the RMS of the training force components
    (every frame of a small set), and the flag is cleared so that fine-tuning keeps it."""
    from nnpot.potentials.config import ModelConfig
    from nnpot.training.auto_config import resolve_model_config

    frames = emt_alloy_frames(["Cu", "Al"], 6, seed=3)
    write_h5(frames, tmp_path / "a.h5")
    write_h5(emt_alloy_frames(["Cu", "Al"], 6, seed=4), tmp_path / "b.h5")
    config = ModelConfig()
    config.fitting.scale_from_data = True
    resolved, report = resolve_model_config(config, [H5Dataset(tmp_path / "a.h5")])
    rms = math.sqrt(np.mean(np.concatenate([f.forces.ravel() for f in frames]) ** 2))
    assert resolved.fitting.scale == pytest.approx(rms, rel=1e-12) == report["fitting_scale"]
    assert not resolved.fitting.scale_from_data and config.fitting.scale == 1.0
    again, _ = resolve_model_config(resolved, [H5Dataset(tmp_path / "b.h5")])
    assert again.fitting.scale == resolved.fitting.scale
