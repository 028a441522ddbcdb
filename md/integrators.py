"""Integrators as small functions over a batch-first :class:`~nnpot.md.state.MDState` (ASE units).

Each ``*_step(state, force_fn, dt, ...)`` advances every system of the state by one step of
length ``dt`` and returns it; ``force_fn(positions, cell) -> (energy [B], forces [N, 3],
virial [B, 3, 3])``. Thermostats act on each system with its own kinetic energy; ``n_dof`` is
one count per system. Nothing waits on the device, so a step can be captured in a CUDA graph.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch

from nnpot.md.state import MDState

__all__ = ["velocity_verlet_step", "langevin_baoab_step", "bussi_rescale", "bussi_step", "NoseHooverChain",
           "nose_hoover_step", "pressure", "cell_rescale", "npt_step"]


#: ``force_fn(positions [N, 3], cell [B, 3, 3]) -> (energy [B], forces [N, 3], virial [B, 3, 3])``
ForceFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _update_forces(state: MDState, force_fn: ForceFn) -> None:
    """New forces; none on fixed atoms (:attr:`MDState.free`), so their momenta stay 0 and
    every drift leaves them where they are."""
    state.energy, state.forces, state.virial = force_fn(state.positions, state.cell)
    if state.free is not None:
        state.forces = state.forces * state.free


def velocity_verlet_step(state: MDState, force_fn: ForceFn, dt: float,
                         between: Callable[[MDState], None] | None = None) -> MDState:
    """Velocity Verlet (NVE): kick half, drift, new forces, kick half. ``between`` acts on the
    state after the first kick (a barostat's move, at the positions the forces belong to)."""
    state.momenta = state.momenta + 0.5 * dt * state.forces
    if between is not None:
        between(state)
    state.positions = state.positions + dt * state.momenta / state.masses[:, None]
    _update_forces(state, force_fn)
    state.momenta = state.momenta + 0.5 * dt * state.forces
    return state


def langevin_baoab_step(state: MDState, force_fn: ForceFn, dt: float, kT: float, friction: float,
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
        if state.free is not None:
            noise = noise * state.free  # no kicks for fixed atoms
        state.momenta = c1 * state.momenta + math.sqrt((1 - c1 * c1) * kT) * torch.sqrt(m) * noise
    state.positions = state.positions + 0.5 * dt * state.momenta / m
    _update_forces(state, force_fn)
    state.momenta = state.momenta + 0.5 * dt * state.forces
    return state


def bussi_rescale(state: MDState, dt: float, kT: float, tau: float, n_dof: Sequence[int],
                  generator: torch.Generator | None = None) -> None:
    """Stochastic velocity rescaling over ``dt`` (Bussi, Donadio, Parrinello, J. Chem. Phys. 126,
    014101 (2007), eq. A7), each system by itself: its kinetic energy K becomes ``alpha^2 K`` with

    ``alpha^2 = c + (1 - c) (R1^2 + S) Kt / (Nf K) + 2 R1 sqrt(c (1 - c) Kt / (Nf K))``,

    ``c = exp(-dt / tau)``, ``Kt = Nf kT / 2``, ``R1 ~ N(0, 1)``, ``S ~ chi^2(Nf - 1)`` (a sum of
    ``Nf - 1`` squared normals from ``generator``). ``n_dof``: ``Nf`` of each system (host ints).
    """
    c = math.exp(-dt / tau)
    p = state.momenta
    widest = max(n_dof)
    r = torch.randn((len(n_dof), widest), dtype=p.dtype, device=p.device, generator=generator)
    if min(n_dof) == widest:
        nf = widest
        s = r[:, 1:].pow(2).sum(1)
    else:  # systems of different sizes: each sums its own Nf - 1 normals
        nf, keep = _dof_tensors(tuple(n_dof), p.device, p.dtype)
        s = (r[:, 1:].pow(2) * keep).sum(1)
    r1 = r[:, 0]
    kin = state.kinetic_energy()
    ratio = 0.5 * nf * kT / (nf * kin)
    alpha2 = c + (1 - c) * (r1 * r1 + s) * ratio + 2 * r1 * torch.sqrt(c * (1 - c) * ratio)
    alpha = torch.sqrt(alpha2) * torch.sign(r1 + torch.sqrt(c / ((1 - c) * ratio)))
    state.momenta = p * alpha[state.system][:, None]


@functools.lru_cache(maxsize=64)
def _dof_tensors(n_dof: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``Nf`` per system ``[B]`` and the mask of each system's ``Nf - 1`` normals, made once (by
    the eager warm-up step, before any CUDA-graph capture, where no host copy may happen)."""
    nf = torch.as_tensor(n_dof, dtype=dtype, device=device)
    return nf, torch.arange(1, max(n_dof), device=device)[None, :] < nf[:, None]


def bussi_step(state: MDState, force_fn: ForceFn, dt: float, kT: float, tau: float, n_dof: Sequence[int],
               generator: torch.Generator | None = None,
               between: Callable[[MDState], None] | None = None) -> MDState:
    """Velocity Verlet with half-step stochastic velocity rescaling on either side (``between``
    as for :func:`velocity_verlet_step`)."""
    bussi_rescale(state, 0.5 * dt, kT, tau, n_dof, generator)
    velocity_verlet_step(state, force_fn, dt, between)
    bussi_rescale(state, 0.5 * dt, kT, tau, n_dof, generator)
    return state


class NoseHooverChain:
    """A Nose-Hoover chain of length M per system (Martyna, Klein, Tuckerman, J. Chem. Phys. 97,
    2635 (1992)); masses ``Q_1 = Nf kT tau^2``, ``Q_j = kT tau^2``. Its variables live in the
    state: ``state.thermostat.chain_v`` (velocities ``p_j / Q_j``) and ``.chain_xi``,
    both ``[B, M]``.

    Conserved: ``H + sum_j p_j^2 / (2 Q_j) + Nf kT xi_1 + kT sum_{j>1} xi_j``.
    """

    def __init__(self, state: MDState, n_dof: Sequence[int], kT: float, tau: float, length: int = 3):
        dtype, device = state.positions.dtype, state.positions.device
        self.kT, self.M = kT, length
        self.n_dof = torch.as_tensor(list(n_dof), dtype=dtype, device=device)  # [B]
        self.Q = torch.full((len(n_dof), length), kT * tau * tau, dtype=dtype, device=device)
        self.Q[:, 0] = self.n_dof * kT * tau * tau
        state.thermostat.chain_v = torch.zeros(len(n_dof), length, dtype=dtype, device=device)
        state.thermostat.chain_xi = torch.zeros(len(n_dof), length, dtype=dtype, device=device)

    def _force(self, j: int, v: list[torch.Tensor], k2: torch.Tensor) -> torch.Tensor:
        if j == 0:
            return (k2 - self.n_dof * self.kT) / self.Q[:, 0]
        return (self.Q[:, j - 1] * v[j - 1] ** 2 - self.kT) / self.Q[:, j]

    def _update(self, j: int, v: list[torch.Tensor], k2: torch.Tensor, h: float) -> None:
        if j == self.M - 1:
            v[j] = v[j] + 0.5 * h * self._force(j, v, k2)
        else:
            damp = torch.exp(-0.25 * h * v[j + 1])
            v[j] = (v[j] * damp + 0.5 * h * self._force(j, v, k2)) * damp

    def half_step(self, state: MDState, dt: float) -> None:
        """Propagate the chains and scale the momenta over ``dt / 2`` (the Trotter factor)."""
        h = 0.5 * dt
        chain_v, chain_xi = state.thermostat.chain_v, state.thermostat.chain_xi
        v = list(chain_v.clone().unbind(1))  # M tensors [B]
        k2 = 2.0 * state.kinetic_energy()
        for j in range(self.M - 1, -1, -1):  # from the chain's end down to the particles
            self._update(j, v, k2, h)
        scale = torch.exp(-h * v[0])
        state.momenta = state.momenta * scale[state.system][:, None]
        k2 = k2 * scale * scale
        chain_xi.add_(h * torch.stack(v, 1))  # in place: the buffers outlive a CUDA-graph capture
        for j in range(self.M):  # and back up
            self._update(j, v, k2, h)
        chain_v.copy_(torch.stack(v, 1))

    def energy(self, state: MDState) -> torch.Tensor:
        """``[B]``: each chain's contribution to the conserved quantity (eV)."""
        v, xi = state.thermostat.chain_v, state.thermostat.chain_xi
        return (0.5 * self.Q * v ** 2).sum(1) + self.n_dof * self.kT * xi[:, 0] + self.kT * xi[:, 1:].sum(1)


def nose_hoover_step(state: MDState, force_fn: ForceFn, dt: float, chain: NoseHooverChain) -> MDState:
    """NVT by Nose-Hoover chains: chain half step, velocity Verlet, chain half step."""
    chain.half_step(state, dt)
    velocity_verlet_step(state, force_fn, dt)
    chain.half_step(state, dt)
    return state


def pressure(state: MDState) -> torch.Tensor:
    """``[B]`` instantaneous pressure ``(2 K + tr W) / (3 V)`` in eV/A^3 (``W``: the virial in eV)."""
    return (2.0 * state.kinetic_energy() + torch.diagonal(state.virial, dim1=1, dim2=2).sum(1)) / (3.0 * state.volume())


def cell_rescale(state: MDState, dt: float, kT: float, pressure_target: float, taup: float, compressibility: float,
                 generator: torch.Generator | None = None) -> None:
    """Isotropic stochastic cell rescaling (Bernetti & Bussi, J. Chem. Phys. 153, 114107 (2020)),
    one Euler-Maruyama step of each system's log-volume ``e = ln V``:

    ``de = -(beta / taup) (P0 - P - kT / V) dt + sqrt(2 kT beta dt / (V taup)) R``,  ``R ~ N(0, 1)``;

    positions and cell scale by ``exp(de / 3)``, momenta by ``exp(-de / 3)``. ``P`` comes from the
    state's virial, so this acts where the forces belong to the positions (inside
    :func:`velocity_verlet_step`, after the first kick: forces are evaluated once per step). With
    a thermostat it samples the isothermal-isobaric ensemble; as ``taup`` grows it becomes NVT.
    Units: eV/A^3 for pressures, A^3/eV for ``beta``, ASE time for ``dt`` and ``taup``.
    """
    volume = state.volume()
    drift = -(compressibility / taup) * (pressure_target - pressure(state) - kT / volume) * dt
    r = torch.randn((state.n_systems,), dtype=state.cell.dtype, device=state.cell.device, generator=generator)
    noise = torch.sqrt(2.0 * kT * compressibility * dt / (volume * taup)) * r
    scale = torch.exp((drift + noise) / 3.0)  # [B]
    per_atom = scale[state.system][:, None]
    state.positions = state.positions * per_atom
    state.cell = state.cell * scale[:, None, None]
    state.momenta = state.momenta / per_atom


def npt_step(state: MDState, force_fn: ForceFn, dt: float, kT: float, pressure_target: float, taut: float, taup: float,
             compressibility: float, n_dof: Sequence[int], generator: torch.Generator | None = None) -> MDState:
    """Isotropic NPT: Bussi's thermostat (:func:`bussi_step`) with the cell rescaling of
    :func:`cell_rescale` between the first kick and the drift; one force evaluation per step."""
    return bussi_step(state, force_fn, dt, kT, taut, n_dof, generator,
                      between=lambda s: cell_rescale(s, dt, kT, pressure_target, taup, compressibility, generator))
