"""torch-sim runs nnpot models through the metatomic export (metatomic-torchsim): batched
energies and forces equal the calculator's, and batched NVE follows nnpot's own velocity Verlet
and conserves energy.

torch-sim 0.6 needs Python >= 3.12; where it is not installed (the CI's Python 3.11) these skip.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units

ts = pytest.importorskip("torch_sim")
metatomic_torchsim = pytest.importorskip("metatomic_torchsim")

from nnpot import NNPotCalculator  # noqa: E402
from nnpot.interop.metatomic import export_metatomic  # noqa: E402
from nnpot.md import VelocityVerlet  # noqa: E402
from nnpot.potentials import EnergyModel  # noqa: E402
from tests.conftest import fitted, small_config  # noqa: E402


@pytest.fixture(scope="module")
def setup(water, tmp_path_factory):
    model = fitted(EnergyModel(small_config()), water)
    path = tmp_path_factory.mktemp("ts") / "model.pt"
    export_metatomic(model, path)
    sheared = water[7].to_atoms()
    sheared.set_cell(np.array(sheared.cell) @ np.array([[1, 0, 0], [0.15, 1, 0], [0, -0.1, 1.0]]), scale_atoms=True)
    frames = [water[0].to_atoms(), sheared, water[13].to_atoms()]
    for a in frames:
        a.calc = None
    sim_model = metatomic_torchsim.MetatomicModel(str(path), device="cpu", uncertainty_threshold=None)
    return model, frames, sim_model


def test_batched_energies_forces_stress_equal_the_calculator(setup):
    model, frames, sim_model = setup
    state = ts.io.atoms_to_state(frames, device=torch.device("cpu"), dtype=torch.float64)
    out = sim_model(state)
    start = 0
    for k, atoms in enumerate(frames):
        atoms = atoms.copy()
        atoms.calc = NNPotCalculator(model)
        n = len(atoms)
        assert abs(float(out["energy"][k]) - atoms.get_potential_energy()) < 1e-10
        np.testing.assert_allclose(out["forces"][start:start + n].detach().numpy(), atoms.get_forces(), rtol=0,
                                   atol=1e-10)
        np.testing.assert_allclose(out["stress"][k].detach().numpy(), atoms.get_stress(voigt=False), rtol=0, atol=1e-10)
        start += n


def test_batched_nve_follows_nnpot_and_conserves_energy(setup):
    model, frames, sim_model = setup
    state = ts.io.atoms_to_state(frames, device=torch.device("cpu"), dtype=torch.float64)
    state.rng = 0
    state = ts.nve_init(state, sim_model, kT=torch.tensor(300 * units.kB, dtype=torch.float64))
    momenta = state.momenta.detach().clone()
    dt = 0.25 * units.fs
    totals = []
    for _ in range(40):
        state = ts.nve_step(state, sim_model, dt=torch.tensor(dt, dtype=torch.float64))
        kinetic = torch.zeros(len(frames), dtype=torch.float64).index_add(
            0, state.system_idx, 0.5 * (state.momenta ** 2).sum(dim=1) / state.masses)
        totals.append((state.energy + kinetic).detach().numpy())
    totals = np.array(totals)
    n_atoms = np.array([len(a) for a in frames])
    drift = np.abs(totals - totals[0]).max(axis=0) / n_atoms
    assert drift.max() < 2e-5, drift  # eV/atom over 10 fs
    # the same 40 steps in nnpot's own driver, from the same momenta, per structure
    start = 0
    for k, atoms in enumerate(frames):
        atoms = atoms.copy()
        n = len(atoms)
        atoms.set_momenta(momenta[start:start + n].numpy())
        dyn = VelocityVerlet(atoms, dt, model=model)
        dyn.run(40)
        ours = atoms.get_positions()
        theirs = state.positions[start:start + n].detach().numpy()
        np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-8)
        start += n
