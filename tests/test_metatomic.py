"""The metatomic export: the file, loaded by metatomic-ase's calculator, gives nnpot's energies,
forces and stress; it loads where nnpot cannot be imported; ensembles export their spread; bad
input is refused with a message."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("metatomic.torch")
from metatomic_ase import MetatomicCalculator  # noqa: E402

from nnpot import NNPotCalculator, save_model  # noqa: E402
from nnpot.interop.metatomic import export_metatomic  # noqa: E402
from nnpot.potentials import EnergyModel, EnsembleModel  # noqa: E402
from tests.conftest import e3nn_config, fitted, small_config  # noqa: E402
from tests.test_ace import ace_config  # noqa: E402


def _se(type_one_side: bool, dtype: str = "float64"):
    cfg = small_config(dtype)
    cfg.descriptor.type_one_side = type_one_side
    return cfg


CONFIGS = {
    "se_e2_a": lambda: _se(True),
    "se_e2_a_two_side": lambda: _se(False),
    "e3nn": e3nn_config,
    "ace": ace_config,
    "ace_message_passing": lambda: ace_config(message_layers=1),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(request, water, tmp_path_factory):
    model = fitted(EnergyModel(CONFIGS[request.param]()), water)
    path = tmp_path_factory.mktemp("mta") / f"{request.param}.pt"
    export_metatomic(model, path)
    return model, path


def _structures(water):
    periodic = water[3].to_atoms()
    sheared = periodic.copy()
    cell = np.array(sheared.cell)
    sheared.set_cell(cell @ np.array([[1.0, 0.0, 0.0], [0.21, 1.0, 0.0], [-0.13, 0.08, 1.0]]), scale_atoms=True)
    molecule = periodic[:24].copy()  # the first 24 atoms, no cell: a non-periodic cluster
    molecule.pbc = False
    molecule.cell = None
    return {"periodic": periodic, "triclinic": sheared, "molecule": molecule}


def test_energy_forces_stress_equal_the_calculator(exported, water):
    model, path = exported
    for name, atoms in _structures(water).items():
        atoms.calc = None
        ours, theirs = atoms.copy(), atoms.copy()
        ours.calc = NNPotCalculator(model)
        theirs.calc = MetatomicCalculator(str(path), device="cpu")
        assert abs(ours.get_potential_energy() - theirs.get_potential_energy()) < 1e-10, name
        np.testing.assert_allclose(theirs.get_forces(), ours.get_forces(), rtol=0, atol=1e-10, err_msg=name)
        np.testing.assert_allclose(theirs.get_potential_energies(), ours.get_potential_energies(), rtol=0,
                                   atol=1e-10, err_msg=name)
        if atoms.pbc.all():
            np.testing.assert_allclose(theirs.get_stress(), ours.get_stress(), rtol=0, atol=1e-10, err_msg=name)


def test_capabilities(exported):
    import metatomic.torch as mta

    model, path = exported
    caps = mta.load_atomistic_model(str(path)).capabilities()
    assert caps.atomic_types == [8, 1]
    assert caps.interaction_range == pytest.approx(model.receptive_field)
    assert caps.length_unit == "angstrom" and caps.dtype == "float64"
    assert caps.outputs["energy"].unit == "eV" and caps.outputs["energy"].sample_kind == "atom"
    # CPU first; CUDA too, since no tensor in the traced model is pinned to a device
    assert caps.supported_devices == ["cpu", "cuda"]


def test_the_file_alone_is_the_model(exported, water, tmp_path):
    """A fresh process in which ``import nnpot`` fails loads the file and gives the same energy."""
    model, path = exported
    atoms = water[3].to_atoms()
    atoms.calc = NNPotCalculator(model)
    want = atoms.get_potential_energy()
    atoms.calc = None
    atoms.write(tmp_path / "frame.traj")
    script = (
        "import sys; sys.modules['nnpot'] = None\n"  # any import of nnpot now raises
        "import ase.io\n"
        "from metatomic_ase import MetatomicCalculator\n"
        f"atoms = ase.io.read({str(tmp_path / 'frame.traj')!r})\n"
        f"atoms.calc = MetatomicCalculator({str(path)!r}, device='cpu')\n"
        "print(repr(float(atoms.get_potential_energy())))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # float64 round-off only: the two processes may sum in another order (1e-12 relative)
    assert abs(float(proc.stdout.strip().splitlines()[-1]) - want) < 1e-12 * max(1.0, abs(want))


def test_ensemble_exports_its_mean_and_spread(water, tmp_path):
    import metatomic.torch as mta

    members = []
    for seed in (1, 2, 3):
        cfg = small_config()
        cfg.seed = seed
        members.append(fitted(EnergyModel(cfg), water))
    ensemble = EnsembleModel(members).eval()
    path = tmp_path / "ensemble.pt"
    export_metatomic(ensemble, path)
    atoms = water[5].to_atoms()
    energies, atom_energies = [], []
    for m in members:
        atoms.calc = NNPotCalculator(m)
        energies.append(atoms.get_potential_energy())
        atom_energies.append(atoms.get_potential_energies())
    # metatomic-ase asks for the per-atom uncertainty itself (and warns above its threshold)
    atoms.calc = MetatomicCalculator(str(path), device="cpu", uncertainty_threshold=None, additional_outputs={
        "energy_ensemble": mta.ModelOutput(unit="eV", sample_kind="system"),
        "energy_uncertainty": mta.ModelOutput(unit="eV", sample_kind="atom")})
    assert abs(atoms.get_potential_energy() - np.mean(energies)) < 1e-10
    extra = atoms.calc.additional_outputs
    np.testing.assert_allclose(extra["energy_ensemble"].block().values.detach().numpy()[0], energies, rtol=0, atol=1e-10)
    np.testing.assert_allclose(extra["energy_uncertainty"].block().values.detach().numpy()[:, 0],
                               np.std(atom_energies, axis=0), rtol=0, atol=1e-10)
    assert np.std(energies) > 1e-3  # the members differ, so the check above means something


def test_float32_export(water, tmp_path):
    model = fitted(EnergyModel(small_config("float32")), water)
    path = tmp_path / "f32.pt"
    export_metatomic(model, path)
    atoms = water[3].to_atoms()
    atoms.calc = NNPotCalculator(model)
    want_e, want_f = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = MetatomicCalculator(str(path), device="cpu")
    assert abs(atoms.get_potential_energy() - want_e) < 1e-4 * (1 + abs(want_e))
    np.testing.assert_allclose(atoms.get_forces(), want_f, rtol=0, atol=2e-4)


def test_bad_systems_are_refused_with_a_message(exported, water):
    model, path = exported
    atoms = water[3].to_atoms()
    stranger = atoms.copy()
    stranger.numbers[0] = 6  # carbon: not among the model's elements
    stranger.calc = MetatomicCalculator(str(path), device="cpu")
    with pytest.raises(Exception, match="atomic (number|type) '?6"):
        stranger.get_potential_energy()
    crowded = atoms.copy()
    crowded.positions[1:100] = crowded.positions[0] + np.random.default_rng(0).uniform(-1.5, 1.5, (99, 3))
    crowded.calc = MetatomicCalculator(str(path), device="cpu")
    with pytest.raises(Exception, match="more than .* neighbors"):
        crowded.get_potential_energy()


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nnpot.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_cli_export_and_its_refusals(small_model, tmp_path):
    src = tmp_path / "model.nnp"
    save_model(small_model, src)
    proc = _cli("convert", src, "-o", tmp_path / "model.pt", "--format", "metatomic", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "metatomic AtomisticModel" in proc.stdout and "energy" in proc.stdout
    # an existing output: refused without --force; --force replaces nnpot's own export only
    assert "give --force" in _cli("convert", src, "-o", tmp_path / "model.pt", "--format", "metatomic",
                                  cwd=tmp_path).stderr
    assert _cli("convert", src, "-o", tmp_path / "model.pt", "--format", "metatomic", "--force",
                cwd=tmp_path).returncode == 0
    foreign = tmp_path / "theirs.pt"
    foreign.write_bytes(b"not ours")
    proc = _cli("convert", src, "-o", foreign, "--format", "metatomic", "--force", cwd=tmp_path)
    assert proc.returncode != 0 and "not a metatomic file nnpot could have written" in proc.stderr
    assert foreign.read_bytes() == b"not ours"
    # the output over the input
    proc = _cli("convert", src, "-o", src, "--format", "metatomic", "--force", cwd=tmp_path)
    assert proc.returncode != 0 and "replace the input" in proc.stderr
    # a non-nnpot file as input (the metatomic file itself): a one-line error, no traceback
    proc = _cli("convert", tmp_path / "model.pt", "-o", tmp_path / "again.pt", "--format", "metatomic", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and proc.stderr.strip()
    # a .pt output without --format names it
    proc = _cli("convert", src, "-o", tmp_path / "x.pt", cwd=tmp_path)
    assert proc.returncode != 0 and "--format metatomic" in proc.stderr
    # no stray files beside the outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.nnp", "model.pt", "theirs.pt"]
