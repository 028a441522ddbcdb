"""Ghost atoms in the one evaluator (the basis of domain decomposition, nnpot.lammps): a
periodic structure written out as its atoms plus explicit periodic images gives the periodic
energy, virial and, once the image forces are folded back by tag, the periodic forces."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from nnpot import NNPotCalculator
from nnpot.lammps.ghosts import GhostForces
from nnpot.potentials.evaluator import Evaluator


@dataclass
class Cluster:
    numbers: np.ndarray
    pbc: np.ndarray


def test_explicit_images_as_ghosts_equal_the_periodic_structure(water_atoms, small_model):
    atoms = water_atoms
    atoms.wrap()  # one layer of images covers the cutoff (6 A < 12.4 A) around wrapped atoms
    cell = atoms.cell.array
    shifts = [np.array(s) for s in itertools.product((-1, 0, 1), repeat=3) if any(s)]
    images = np.concatenate([atoms.positions + s @ cell for s in shifts])
    positions = np.concatenate([atoms.positions, images])
    numbers = np.concatenate([atoms.numbers] * (1 + len(shifts)))
    tags = np.tile(np.arange(1, len(atoms) + 1), 1 + len(shifts))
    ev = Evaluator(small_model, [Cluster(numbers, np.zeros(3, dtype=bool))], ghosts=len(images))
    out = ev(torch.as_tensor(positions), torch.zeros(1, 3, 3, dtype=torch.float64))
    n = len(atoms)
    folder = GhostForces(None)
    folder.plan(tags[:n], tags[n:])
    forces = folder.fold(out["forces"][:n].numpy(), out["forces"][n:].numpy())

    atoms.calc = NNPotCalculator(small_model, device="cpu")
    assert out["atom_energy"].shape == (n,)
    assert abs(float(out["energy"][0]) - math.fsum(atoms.get_potential_energies())) < 1e-9
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=0, atol=1e-11)
    virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
    np.testing.assert_allclose(out["virial"][0].numpy(), virial, rtol=0, atol=1e-9)
    assert np.abs(out["forces"][n:].numpy()).max() > 1e-3  # the images do carry force
