"""Integrators as small functions over an :class:`~nnpot.md.state.MDState` (ASE units).

Each ``*_step(state, force_fn, dt, ...)`` advances the state by one step of length ``dt`` and
returns it; ``force_fn(positions, cell) -> (energy, forces, virial)``.
"""

from __future__ import annotations

import math

import torch

from nnpot.md.state import MDState

__all__ = ["velocity_verlet_step", "langevin_baoab_step"]


def _update_forces(state: MDState, force_fn) -> None:
    state.energy, state.forces, state.virial = force_fn(state.positions, state.cell)


def velocity_verlet_step(state: MDState, force_fn, dt: float) -> MDState:
    """Velocity Verlet (NVE): kick half, drift, new forces, kick half."""
    state.momenta = state.momenta + 0.5 * dt * state.forces
    state.positions = state.positions + dt * state.momenta / state.masses[:, None]
    _update_forces(state, force_fn)
    state.momenta = state.momenta + 0.5 * dt * state.forces
    return state


def langevin_baoab_step(state: MDState, force_fn, dt: float, kT: float, friction: float,
                        generator: torch.Generator | None = None) -> MDState:
    """Langevin dynamics by the BAOAB splitting (Leimkuhler & Matthews, J. Chem. Phys. 138,
    174102 (2013)): kick, half drift, Ornstein-Uhlenbeck on momenta, half drift, kick.

    ``kT`` in eV, ``friction`` in 1/(ASE time). With ``friction = 0`` this is velocity Verlet.
    """
    m = state.masses[:, None]
    state.momenta = state.momenta + 0.5 * dt * state.forces
    state.positions = state.positions + 0.5 * dt * state.momenta / m
    c1 = math.exp(-friction * dt)
    if c1 < 1.0:
        noise = torch.randn(state.momenta.shape, dtype=state.momenta.dtype, device=state.momenta.device, generator=generator)
        state.momenta = c1 * state.momenta + math.sqrt((1 - c1 * c1) * kT) * torch.sqrt(m) * noise
    state.positions = state.positions + 0.5 * dt * state.momenta / m
    _update_forces(state, force_fn)
    state.momenta = state.momenta + 0.5 * dt * state.forces
    return state
