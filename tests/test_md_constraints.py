"""ASE constraints in nnpot's MD: atoms held by FixAtoms stay where they are in every driver
(and in a batch of replicas), the free atoms follow ASE's own integrator with the same
constraint, and constraints the drivers cannot honour are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.constraints import FixAtoms, FixBondLength
from ase.md.verlet import VelocityVerlet as AseVelocityVerlet

from nnpot import NNPotCalculator
from nnpot.errors import ConfigError
from nnpot.md import NPT, Bussi, Langevin, NoseHoover, VelocityVerlet
from nnpot.md.state import thermalize


def _slab(water, model):
    """The bundled water box with its bottom third held (a slab on a frozen substrate)."""
    atoms = water[0].to_atoms()
    atoms.calc = None
    thermalize(atoms, 300.0, 3)
    fixed = np.flatnonzero(atoms.positions[:, 2] < atoms.cell[2, 2] / 3)
    atoms.set_constraint(FixAtoms(indices=fixed))
    atoms.calc = NNPotCalculator(model, device="cpu")
    return atoms, fixed


def test_free_atoms_follow_ase_and_fixed_ones_do_not_move(water, small_model):
    a, fixed = _slab(water, small_model)
    b, _ = _slab(water, small_model)
    start = a.positions.copy()
    VelocityVerlet(a, 0.5 * units.fs, skin=0.5).run(20)
    AseVelocityVerlet(b, 0.5 * units.fs).run(20)
    assert np.array_equal(a.positions[fixed], start[fixed])
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.get_momenta(), b.get_momenta(), rtol=0, atol=1e-9)
    assert np.abs(a.positions - start).max() > 1e-3  # the rest moved


@pytest.mark.parametrize("driver", ["langevin", "bussi", "nose-hoover"])
def test_thermostats_keep_fixed_atoms_in_place(water, small_model, driver):
    atoms, fixed = _slab(water, small_model)
    start = atoms.positions.copy()
    dyn = {"langevin": lambda: Langevin(atoms, 0.5 * units.fs, temperature_K=600, friction=0.05 / units.fs, seed=1),
           "bussi": lambda: Bussi(atoms, 0.5 * units.fs, temperature_K=600, taut=10 * units.fs, seed=1),
           "nose-hoover": lambda: NoseHoover(atoms, 0.5 * units.fs, temperature_K=600, tdamp=10 * units.fs)}[driver]()
    dyn.run(20)
    assert np.array_equal(atoms.positions[fixed], start[fixed])
    assert np.abs(atoms.get_momenta()[fixed]).max() == 0.0
    free = np.setdiff1d(np.arange(len(atoms)), fixed)
    assert np.abs(atoms.positions[free] - start[free]).max() > 1e-3


def test_fixed_atoms_in_a_batch_of_replicas(water, small_model):
    a, fixed = _slab(water, small_model)
    b = water[1].to_atoms()
    b.calc = None
    thermalize(b, 300.0, 4)
    start_a, start_b = a.positions.copy(), b.positions.copy()
    Langevin([a, b], 0.5 * units.fs, temperature_K=300, friction=0.05 / units.fs, model=small_model, seed=2).run(10)
    assert np.array_equal(a.positions[fixed], start_a[fixed])
    assert np.abs(b.positions - start_b).min(axis=1).max() > 0  # the unconstrained replica moves everywhere


def test_other_constraints_and_npt_with_fixed_atoms_are_refused(water, small_model):
    atoms, _ = _slab(water, small_model)
    with pytest.raises(ConfigError, match="NPT does not take constraints"):
        NPT(atoms, 0.5 * units.fs, temperature_K=300, pressure_au=units.bar, taut=20 * units.fs,
            taup=200 * units.fs, compressibility_au=4.5e-5 / units.bar)
    atoms.set_constraint(FixBondLength(0, 1))
    with pytest.raises(ConfigError, match="FixBondLengths? is not supported"):
        VelocityVerlet(atoms, 0.5 * units.fs)


def test_npt_refuses_a_calculator_without_stress(water):
    from ase.calculators.calculator import Calculator, all_changes

    class NoStress(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            self.results = {"energy": 0.0, "forces": np.zeros((len(self.atoms), 3))}

    from nnpot.md import MDError

    atoms = water[0].to_atoms()
    atoms.calc = NoStress()
    with pytest.raises(MDError, match="gave no stress"):
        NPT(atoms, 0.5 * units.fs, temperature_K=300, pressure_au=units.bar, taut=20 * units.fs,
            taup=200 * units.fs, compressibility_au=4.5e-5 / units.bar)
