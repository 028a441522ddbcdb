"""Each table nnpot reads by name takes a new entry with one registration line, and the new
entry then works end to end: an integrator (``nnpot md``), a data reader (``nnpot data
convert``), a model format (``nnpot convert`` and ``load_model``) and a labeller. Also the MD
drivers' ASE conventions (context manager, ``irun``, open trajectory and log objects,
``todict``) and the checks of a state's shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import units
from ase.calculators.emt import EMT
from ase.io import Trajectory

from nnpot import NNPotCalculator, save_model
from nnpot.cli import main
from nnpot.data import H5Dataset, write_h5
from nnpot.md import VelocityVerlet
from nnpot.md.driver import MolecularDynamics
from nnpot.md.ensembles import ENSEMBLES, Ensemble, register_ensemble
from nnpot.md.state import MDState
from nnpot.potentials import load_model
from nnpot.potentials.modelfile import MODEL_FORMATS, ModelFormat, register_model_format


class SymplecticEuler(MolecularDynamics):
    """Kick, then drift: first order, but symplectic (its energy error stays bounded)."""

    graph_safe = True

    def _advance(self, state, force_fn) -> None:
        from nnpot.md.integrators import _update_forces

        state.momenta = state.momenta + self.dt * state.forces
        state.positions = state.positions + self.dt * state.momenta / state.masses[:, None]
        _update_forces(state, force_fn)


@pytest.fixture()
def registered():
    saved = dict(ENSEMBLES), dict(MODEL_FORMATS)
    yield
    ENSEMBLES.clear(), ENSEMBLES.update(saved[0])
    MODEL_FORMATS.clear(), MODEL_FORMATS.update(saved[1])


def test_a_new_integrator_runs_through_nnpot_md(tmp_path, small_model, water, registered, monkeypatch):
    monkeypatch.chdir(tmp_path)
    register_ensemble("symplectic-euler", Ensemble(SymplecticEuler, lambda c: {}))
    save_model(small_model, "m.nnp")
    write_h5([water[0]], "w.h5")
    (tmp_path / "md.yaml").write_text("structure: w.h5\nmodel: m.nnp\nensemble: symplectic-euler\nsteps: 20\n"
                                      "timestep_fs: 0.25\noutput: out\nloginterval: 5\n")
    assert main(["md", "md.yaml", "-q"]) == 0
    summary = json.loads((tmp_path / "out" / "thermo.json").read_text())
    assert summary["steps"] == 20 and len(Trajectory(str(tmp_path / "out" / "md.traj"))) >= 2
    assert abs(summary["drift_eV_per_atom_per_ps"]) < 0.1  # a working integrator, not a placeholder


def test_a_new_reader_converts_by_suffix(tmp_path, water):
    from nnpot.data.frame import Frame
    from nnpot.data.readers import READERS, Reader, register_reader

    def read_toy(path, unit):  # a JSON list of frames
        for d in json.loads(path.read_text()):
            yield Frame(numbers=np.array(d["numbers"]), positions=np.array(d["positions"]), cell=np.array(d["cell"]),
                        pbc=np.array(d["pbc"]), energy=d["energy"], forces=np.array(d["forces"]))

    frames = [water[i] for i in range(3)]
    (tmp_path / "x.toy").write_text(json.dumps([{"numbers": f.numbers.tolist(), "positions": f.positions.tolist(),
                                                "cell": f.cell.tolist(), "pbc": f.pbc.tolist(), "energy": f.energy,
                                                "forces": f.forces.tolist()} for f in frames]))
    saved = dict(READERS)
    try:
        register_reader((".toy",), Reader("toy-json", read_toy))
        assert main(["data", "convert", str(tmp_path / "x.toy"), "-o", str(tmp_path / "x.h5"), "-q"]) == 0
    finally:
        READERS.clear(), READERS.update(saved)
    ds = H5Dataset(tmp_path / "x.h5")
    assert len(ds) == 3 and ds.sources[0]["reader"] == "toy-json"
    np.testing.assert_allclose(ds[2].forces, frames[2].forces)


def test_a_new_model_format_converts_both_ways(tmp_path, small_model, water, registered):
    def write(model, path):
        save_model(model, tmp_path / "inner.nnp")
        (tmp_path / path).write_bytes((tmp_path / "inner.nnp").read_bytes()[::-1])  # a "foreign" byte order

    def read(path):
        (tmp_path / "back.nnp").write_bytes(open(path, "rb").read()[::-1])
        return load_model(tmp_path / "back.nnp")

    register_model_format([".rev"], ModelFormat("reversed", read, write))
    save_model(small_model, tmp_path / "m.nnp")
    assert main(["convert", str(tmp_path / "m.nnp"), "-o", str(tmp_path / "m.rev")]) == 0
    atoms = water[0].to_atoms()
    atoms.calc = NNPotCalculator(str(tmp_path / "m.rev"), device="cpu")
    e_rev = atoms.get_potential_energy()
    atoms.calc = NNPotCalculator(small_model, device="cpu")
    assert e_rev == pytest.approx(atoms.get_potential_energy(), abs=1e-10)


def test_a_new_labeller_labels(tmp_path):
    from ase.build import bulk

    from nnpot.explore.labelling import BUILTIN, Labeller, register_labeller

    class ScaledEMT(EMT):
        def calculate(self, *args, **kwargs):
            super().calculate(*args, **kwargs)
            self.results["energy"] *= 2.0

    try:
        register_labeller("scaled-emt", ScaledEMT)
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        result = Labeller("scaled-emt").label_all([atoms])[0]
        ref = atoms.copy()
        ref.calc = EMT()
        assert result.frame.energy == pytest.approx(2 * ref.get_potential_energy())
        assert Labeller("scaled-emt").describe()["calculator"].endswith("ScaledEMT")
    finally:
        BUILTIN.pop("scaled-emt", None)


def test_drivers_follow_ase_dynamics_conventions(tmp_path, small_model, water):
    atoms = water[0].to_atoms()
    atoms.calc = NNPotCalculator(small_model, device="cpu")
    with open(tmp_path / "md.log", "w") as log, Trajectory(str(tmp_path / "t.traj"), "w") as traj:
        with VelocityVerlet(atoms, 0.5 * units.fs, trajectory=traj, logfile=log, loginterval=5) as dyn:
            yields = list(dyn.irun(10))
            assert dyn.nsteps == 10 and all(yields) and len(yields) == 3  # start, after 5, after 10
            d = dyn.todict()
            assert d["md-type"] == "VelocityVerlet" and d["timestep"] == pytest.approx(0.5 * units.fs)
    assert len(Trajectory(str(tmp_path / "t.traj"))) == 3
    assert len((tmp_path / "md.log").read_text().splitlines()) == 4  # header and three rows


def test_state_checks_its_shapes_and_devices():
    z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
    good = dict(positions=z(4, 3), momenta=z(4, 3), masses=z(4), forces=z(4, 3), energy=z(1), virial=z(1, 3, 3),
                cell=z(1, 3, 3), system=torch.zeros(4, dtype=torch.long))
    MDState(**good)
    with pytest.raises(ValueError, match="momenta: shape"):
        MDState(**{**good, "momenta": z(3, 3)})
    with pytest.raises(ValueError, match="free: shape"):
        MDState(**good, free=z(4))
