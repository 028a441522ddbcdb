"""Random fcc alloys labelled by ASE's EMT: a cheap, real labeller for many-element tests and
benchmarks (EMT knows Al, Cu, Ag, Au, Ni, Pd and Pt, plus H, C, N, O crudely).

Each frame is an fcc supercell whose sites get elements at random, with a random strain of
the cell and a random rattle of the atoms; energies, forces and the virial come from EMT.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.data import atomic_numbers, reference_states

from nnpot.data.frame import Frame
from nnpot.errors import DatasetError

__all__ = ["emt_alloy_frames", "EMT_METALS"]

EMT_METALS = ("Cu", "Al", "Ni", "Ag", "Au", "Pd", "Pt")  #: in the order the benchmarks take them


def emt_alloy_frames(elements: Sequence[str], n_frames: int, repeat: int = 2, rattle: float = 0.1,
                     strain: float = 0.03, seed: int = 0) -> list[Frame]:
    """``n_frames`` labelled random alloys of ``elements`` in a ``repeat^3`` cubic fcc
    supercell (4 repeat^3 atoms); lattice constant the composition-weighted mean of the
    elements' own; ``rattle`` (Angstrom) and ``strain`` are standard deviations."""
    bad = [e for e in elements if e not in EMT_METALS]
    if bad or not elements:
        raise DatasetError(f"EMT alloys need elements among {', '.join(EMT_METALS)}, got {list(elements)}")
    rng = np.random.default_rng(seed)
    a0 = float(np.mean([reference_states[atomic_numbers[e]]["a"] for e in elements]))
    frames = []
    for _ in range(n_frames):
        atoms = bulk("Cu", "fcc", a=a0, cubic=True).repeat(repeat)
        atoms.symbols = list(rng.choice(list(elements), size=len(atoms)))
        F = np.eye(3) + strain * rng.normal(size=(3, 3))
        atoms.set_cell(atoms.cell.array @ ((F + F.T) / 2), scale_atoms=True)
        atoms.positions += rattle * rng.normal(size=atoms.positions.shape)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
        frames.append(Frame(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(),
                            cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy(), energy=float(energy),
                            forces=forces.copy(), virial=virial))
    return frames
