"""Physics checks every nnpot potential must pass, for use in tests (yours and ours).

Each ``check_*`` function raises ``AssertionError`` with the measured error when a check fails
and returns the measured error otherwise, so a test reads ``check_forces(model, atoms)``.
Run them in float64: the tolerances are float64 tolerances.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from nnpot.potentials.batch import make_batch, types_from_numbers
from nnpot.potentials.derivatives import derivatives

if TYPE_CHECKING:
    from ase import Atoms


__all__ = [
    "evaluate",
    "check_forces",
    "check_virial",
    "check_invariance",
    "check_cutoff_smoothness",
    "check_supercell",
    "check_batch_consistency",
    "random_rotation",
]


def evaluate(model: torch.nn.Module, structures: Sequence, on_overflow: str = "error") -> dict[str, np.ndarray]:
    """Energies ``[B]``, forces ``[N, 3]``, virials ``[B, 3, 3]``, atom energies ``[N]`` as numpy."""
    batch = make_batch(list(structures), model.type_map, model.cutoff, model.sel, device=model.device,
                       dtype=model.dtype, on_overflow=on_overflow)
    out = derivatives(model, batch, atom_virial=True)
    return {k: v.detach().cpu().double().numpy() for k, v in out.items()}


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation matrix."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _energy(model, atoms, out: dict | None = None) -> float:
    """Energy without the constant per-element offsets, whose size (~1e4 eV for a water box)
    would otherwise swamp finite differences in rounding error."""
    out = out if out is not None else evaluate(model, [atoms])
    bias = getattr(model, "energy_bias", None)
    if bias is None:
        return float(out["energy"][0])

    offsets = bias.detach().cpu().double().numpy()[types_from_numbers(atoms.numbers, model.type_map)]
    return float(np.sum(out["atom_energy"] - offsets))


def check_forces(model: torch.nn.Module, atoms: Atoms, h: float = 1e-4, n_atoms: int = 4, rtol: float = 1e-6, seed: int = 0) -> float:
    """Forces equal ``-dE/dr`` by central differences on ``n_atoms`` random atoms.

    Returns the largest error relative to the largest force component checked.
    """
    rng = np.random.default_rng(seed)
    forces = evaluate(model, [atoms])["forces"]
    picked = rng.choice(len(atoms), size=min(n_atoms, len(atoms)), replace=False)
    numeric = np.zeros((len(picked), 3))
    for a, k in enumerate(picked):
        for c in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[k, c] += h
            minus.positions[k, c] -= h
            numeric[a, c] = -(_energy(model, plus) - _energy(model, minus)) / (2 * h)
    err = np.abs(numeric - forces[picked]).max() / max(np.abs(forces[picked]).max(), 1e-12)
    assert err < rtol, f"forces differ from -dE/dr by {err:.3e} (relative), tolerance {rtol:.1e}"
    return float(err)


def check_virial(model: torch.nn.Module, atoms: Atoms, h: float = 1e-4, rtol: float = 1e-6) -> float:
    """The virial equals ``-dE/d(strain)`` by central differences of a homogeneous strain."""
    virial = evaluate(model, [atoms])["virial"][0]
    numeric = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            values = []
            for sign in (1, -1):
                eps = np.eye(3)
                eps[a, b] += sign * h
                s = atoms.copy()
                s.set_cell(atoms.cell.array @ eps, scale_atoms=False)
                s.positions = atoms.positions @ eps
                values.append(_energy(model, s))
            numeric[a, b] = -(values[0] - values[1]) / (2 * h)
    err = np.abs(numeric - virial).max() / max(np.abs(virial).max(), 1e-12)
    assert err < rtol, f"virial differs from -dE/dstrain by {err:.3e} (relative), tolerance {rtol:.1e}"
    return float(err)


def check_invariance(model: torch.nn.Module, atoms: Atoms, atol: float = 1e-9, seed: int = 0) -> float:
    """Energy invariant and forces covariant under rotation, translation and permutation of
    atoms of the same element. Returns the largest deviation (eV or eV/A)."""
    rng = np.random.default_rng(seed)
    ref = evaluate(model, [atoms])
    errors = []
    rot = random_rotation(rng)
    r = atoms.copy()
    r.positions = atoms.positions @ rot.T
    r.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    out = evaluate(model, [r])
    errors += [abs(out["energy"][0] - ref["energy"][0]), np.abs(out["forces"] - ref["forces"] @ rot.T).max()]
    t = atoms.copy()
    t.positions = atoms.positions + rng.normal(size=3) * 3.0
    out = evaluate(model, [t])
    errors += [abs(out["energy"][0] - ref["energy"][0]), np.abs(out["forces"] - ref["forces"]).max()]
    perm = np.arange(len(atoms))
    for z in np.unique(atoms.numbers):
        idx = np.nonzero(atoms.numbers == z)[0]
        perm[idx] = rng.permutation(idx)
    p = atoms[perm]
    out = evaluate(model, [p])
    errors += [abs(out["energy"][0] - ref["energy"][0]), np.abs(out["forces"] - ref["forces"][perm]).max()]
    err = float(max(errors))
    assert err < atol, f"invariance violated by {err:.3e}, tolerance {atol:.1e}"
    return err


def check_cutoff_smoothness(model: torch.nn.Module, atoms: Atoms, moving: int = 0, partner: int = 1, n: int = 41,
                            width: float = 1e-3, atol: float = 1e-8) -> float:
    """Energy and forces are continuous as atom ``moving`` crosses the cutoff of ``partner``.

    ``moving`` is placed on a line at distances ``rcut +- width`` from ``partner``. For a
    continuous function the second differences of equally spaced samples are of order
    ``step^2``; a jump of size delta at the cutoff shows up as a second difference of about
    delta. The largest second difference must be below ``atol``.
    """
    rc = model.cutoff
    direction = atoms.positions[moving] - atoms.positions[partner]
    direction /= np.linalg.norm(direction)
    energies, forces = [], []
    for dist in np.linspace(rc - width, rc + width, n):
        s = atoms.copy()
        s.positions[moving] = atoms.positions[partner] + dist * direction
        out = evaluate(model, [s])
        energies.append(_energy(model, s, out))
        forces.append(out["forces"][moving])
    jump = max(np.abs(np.diff(energies, 2)).max(), np.abs(np.diff(forces, 2, axis=0)).max())
    assert jump < atol, f"energy/forces jump by {jump:.3e} across the cutoff, tolerance {atol:.1e}"
    return float(jump)


def check_supercell(model: torch.nn.Module, atoms: Atoms, reps: tuple[int, int, int] = (2, 2, 2), rtol: float = 1e-10) -> float:
    """A supercell has ``prod(reps)`` times the energy and the same forces per image."""
    ref = evaluate(model, [atoms])
    big = atoms.repeat(reps)
    out = evaluate(model, [big])
    k = int(np.prod(reps))
    err_e = abs(out["energy"][0] - k * ref["energy"][0]) / abs(k * ref["energy"][0])
    err_f = np.abs(out["forces"] - np.tile(ref["forces"], (k, 1))).max()
    err = float(max(err_e, err_f))
    assert err < rtol, f"supercell inconsistent by {err:.3e}, tolerance {rtol:.1e}"
    return err


def check_batch_consistency(model: torch.nn.Module, structures: Sequence, atol: float = 1e-10) -> float:
    """A batch gives what its members give one by one."""
    batch = evaluate(model, structures)
    errs, start = [], 0
    for b, s in enumerate(structures):
        one = evaluate(model, [s])
        n = len(s)
        errs += [abs(batch["energy"][b] - one["energy"][0]), np.abs(batch["forces"][start:start + n] - one["forces"]).max(),
                 np.abs(batch["virial"][b] - one["virial"][0]).max()]
        start += n
    err = float(max(errs))
    assert err < atol, f"batch differs from single evaluation by {err:.3e}, tolerance {atol:.1e}"
    return err
