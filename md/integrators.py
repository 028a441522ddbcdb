"""Integrators as small functions over an :class:`~nnpot.md.state.MDState` (ASE units).

Each ``*_step(state, force_fn, dt, ...)`` advances the state by one step of length ``dt`` and
returns it; ``force_fn(positions, cell) -> (energy, forces, virial)``.
"""

from __future__ import annotations

import math

import torch

from nnpot.md.state import MDState

__all__ = ["velocity_verlet_step", "langevin_baoab_step", "bussi_rescale", "bussi_step", "NoseHooverChain",
           "nose_hoover_step", "pressure", "cell_rescale"]


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


def bussi_rescale(state: MDState, dt: float, kT: float, tau: float, n_dof: int,
                  generator: torch.Generator | None = None) -> None:
    """Stochastic velocity rescaling over ``dt`` (Bussi, Donadio, Parrinello, J. Chem. Phys. 126,
    014101 (2007), eq. A7): the kinetic energy K becomes ``alpha^2 K`` with

    ``alpha^2 = c + (1 - c) (R1^2 + S) Kt / (Nf K) + 2 R1 sqrt(c (1 - c) Kt / (Nf K))``,

    ``c = exp(-dt / tau)``, ``Kt = Nf kT / 2``, ``R1 ~ N(0, 1)``, ``S ~ chi^2(Nf - 1)``. All of it
    runs on the state's device with ``generator`` (``S`` as a sum of ``Nf - 1`` squared normals),
    with no host synchronisation, so the step can be captured in a CUDA graph.
    """
    c = math.exp(-dt / tau)
    p = state.momenta
    r = torch.randn(n_dof, dtype=p.dtype, device=p.device, generator=generator)
    r1, s = r[0], r[1:].pow(2).sum()
    kin = state.kinetic_energy()
    kt = 0.5 * n_dof * kT
    ratio = kt / (n_dof * kin)
    alpha2 = c + (1 - c) * (r1 * r1 + s) * ratio + 2 * r1 * torch.sqrt(c * (1 - c) * ratio)
    alpha = torch.sqrt(alpha2) * torch.sign(r1 + torch.sqrt(c / ((1 - c) * ratio)))
    state.momenta = p * alpha


def bussi_step(state: MDState, force_fn, dt: float, kT: float, tau: float, n_dof: int,
               generator: torch.Generator | None = None) -> MDState:
    """Velocity Verlet with half-step stochastic velocity rescaling on either side."""
    bussi_rescale(state, 0.5 * dt, kT, tau, n_dof, generator)
    velocity_verlet_step(state, force_fn, dt)
    bussi_rescale(state, 0.5 * dt, kT, tau, n_dof, generator)
    return state


class NoseHooverChain:
    """Thermostat variables of a Nose-Hoover chain of length M (Martyna, Klein, Tuckerman,
    J. Chem. Phys. 97, 2635 (1992)); masses ``Q_1 = Nf kT tau^2``, ``Q_j = kT tau^2``.

    Conserved: ``H + sum_j p_j^2 / (2 Q_j) + Nf kT xi_1 + kT sum_{j>1} xi_j``.
    """

    def __init__(self, n_dof: int, kT: float, tau: float, length: int = 3, dtype=torch.float64, device="cpu"):
        self.n_dof, self.kT, self.M = n_dof, kT, length
        self.Q = torch.full((length,), kT * tau * tau, dtype=dtype, device=device)
        self.Q[0] = n_dof * kT * tau * tau
        self.v = torch.zeros(length, dtype=dtype, device=device)  # thermostat velocities p_j / Q_j
        self.xi = torch.zeros(length, dtype=dtype, device=device)

    def _force(self, j: int, v: list[torch.Tensor], k2: torch.Tensor) -> torch.Tensor:
        if j == 0:
            return (k2 - self.n_dof * self.kT) / self.Q[0]
        return (self.Q[j - 1] * v[j - 1] ** 2 - self.kT) / self.Q[j]

    def _update(self, j: int, v: list[torch.Tensor], k2: torch.Tensor, h: float) -> None:
        if j == self.M - 1:
            v[j] = v[j] + 0.5 * h * self._force(j, v, k2)
        else:
            damp = torch.exp(-0.25 * h * v[j + 1])
            v[j] = (v[j] * damp + 0.5 * h * self._force(j, v, k2)) * damp

    def half_step(self, state: MDState, dt: float) -> None:
        """Propagate the chain and scale the momenta over ``dt / 2`` (the Trotter factor)."""
        h = 0.5 * dt
        v = list(self.v.clone().unbind())
        k2 = 2.0 * state.kinetic_energy()
        for j in range(self.M - 1, -1, -1):  # from the chain's end down to the particles
            self._update(j, v, k2, h)
        scale = torch.exp(-h * v[0])
        state.momenta = state.momenta * scale
        k2 = k2 * scale * scale
        self.xi.add_(h * torch.stack(v))  # in place: the buffers outlive a CUDA-graph capture
        for j in range(self.M):  # and back up
            self._update(j, v, k2, h)
        self.v.copy_(torch.stack(v))

    def energy(self) -> torch.Tensor:
        """The chain's contribution to the conserved quantity (eV)."""
        return (0.5 * self.Q * self.v ** 2).sum() + self.n_dof * self.kT * self.xi[0] + self.kT * self.xi[1:].sum()


def nose_hoover_step(state: MDState, force_fn, dt: float, chain: NoseHooverChain) -> MDState:
    """NVT by Nose-Hoover chain: chain half step, velocity Verlet, chain half step."""
    chain.half_step(state, dt)
    velocity_verlet_step(state, force_fn, dt)
    chain.half_step(state, dt)
    return state


def pressure(state: MDState) -> torch.Tensor:
    """Instantaneous pressure ``(2 K + tr W) / (3 V)`` in eV/A^3 (``W``: the virial in eV)."""
    volume = torch.linalg.det(state.cell).abs()
    return (2.0 * state.kinetic_energy() + torch.diagonal(state.virial).sum()) / (3.0 * volume)


def cell_rescale(state: MDState, force_fn, dt: float, kT: float, pressure_target: float, taup: float,
                 compressibility: float, generator: torch.Generator | None = None) -> None:
    """Isotropic stochastic cell rescaling (Bernetti & Bussi, J. Chem. Phys. 153, 114107 (2020)),
    one Euler-Maruyama step of the log-volume ``e = ln V``:

    ``de = -(beta / taup) (P0 - P - kT / V) dt + sqrt(2 kT beta dt / (V taup)) R``,  ``R ~ N(0, 1)``;

    positions and cell scale by ``exp(de / 3)``, momenta by ``exp(-de / 3)``; forces are then
    recomputed. With a thermostat it samples the isothermal-isobaric ensemble; as ``taup`` grows it
    becomes NVT. Units: eV/A^3 for pressures, A^3/eV for ``beta``, ASE time for ``dt`` and ``taup``.
    Everything stays on the state's device (the normal comes from ``generator``), so the step can
    be captured in a CUDA graph.
    """
    volume = torch.linalg.det(state.cell).abs()
    drift = -(compressibility / taup) * (pressure_target - pressure(state) - kT / volume) * dt
    r = torch.randn((), dtype=state.cell.dtype, device=state.cell.device, generator=generator)
    noise = torch.sqrt(2.0 * kT * compressibility * dt / (volume * taup)) * r
    scale = torch.exp((drift + noise) / 3.0)
    state.positions = state.positions * scale
    state.cell = state.cell * scale
    state.momenta = state.momenta / scale
    _update_forces(state, force_fn)
