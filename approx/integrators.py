"""Integrator order, the continuous view: global error against time step.

Explicit Euler (order 1), velocity Verlet (order 2, nnpot.md's own step) and classical RK4
(order 4) on a harmonic oscillator with exact solution ``q = cos(w t)``. On a water potential,
where no exact solution exists, the three-level estimate ``e(dt) = |x_dt - x_{dt/2}|`` (which
scales like the error itself) gives the order of velocity Verlet.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from ase import units

from nnpot.approx.result import Series, StudyResult
from nnpot.bundled import bundled_dataset
from nnpot.data import H5Dataset
from nnpot.md.driver import ModelForces
from nnpot.md.integrators import velocity_verlet_step
from nnpot.md.state import MDState, state_from_atoms, thermalize
from nnpot.potentials import EnergyModel, ModelConfig, apply_stats, load_model

__all__ = ["IntegratorConfig", "integrator_order"]


@dataclass
class IntegratorConfig:
    timesteps: list[float] = field(default_factory=lambda: [0.2, 0.1, 0.05, 0.025, 0.0125])
    t_end: float = 10.0  #: in units of 1/omega
    water_model: str = ""  #: a .nnp file for the water series; empty: a small random-weight se_e2_a model
    water_timesteps_fs: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25, 0.125])
    water_t_end_fs: float = 20.0
    water: bool = True

    @classmethod
    def quick(cls) -> "IntegratorConfig":
        return cls(water_timesteps_fs=[1.0, 0.5, 0.25], water_t_end_fs=10.0)


def _harmonic(method: str, dt: float, t_end: float) -> float:
    n = int(round(t_end / dt))
    q, p = 1.0, 0.0
    if method == "euler":
        for _ in range(n):
            q, p = q + dt * p, p - dt * q
    elif method == "rk4":
        f = lambda q, p: (p, -q)  # noqa: E731
        for _ in range(n):
            k1 = f(q, p)
            k2 = f(q + dt / 2 * k1[0], p + dt / 2 * k1[1])
            k3 = f(q + dt / 2 * k2[0], p + dt / 2 * k2[1])
            k4 = f(q + dt * k3[0], p + dt * k3[1])
            q += dt / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            p += dt / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    else:  # velocity Verlet through nnpot.md
        t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
        state = MDState(positions=t([[q, 0.0, 0.0]]), momenta=t([[p, 0.0, 0.0]]), masses=t([1.0]),
                        forces=t([[-q, 0.0, 0.0]]), energy=t([0.5 * q * q]), virial=torch.zeros(1, 3, 3, dtype=torch.float64),
                        cell=torch.zeros(1, 3, 3, dtype=torch.float64), system=torch.zeros(1, dtype=torch.long))
        spring = lambda pos, cell: ((0.5 * (pos ** 2).sum())[None], -pos, torch.zeros(1, 3, 3, dtype=pos.dtype))  # noqa: E731
        for _ in range(n):
            velocity_verlet_step(state, spring, dt)
        q, p = float(state.positions[0, 0]), float(state.momenta[0, 0])
    return math.hypot(q - math.cos(n * dt), p + math.sin(n * dt))


def _water_series(c: IntegratorConfig) -> Series:

    ds = H5Dataset(bundled_dataset("water"))
    if c.water_model:
        model = load_model(c.water_model)
    else:
        cfg = ModelConfig(type_map=["O", "H"])
        cfg.descriptor.sel = [46, 92]
        cfg.descriptor.neuron, cfg.descriptor.axis_neuron, cfg.fitting.neuron = [8, 16], 4, [16, 16]
        model = EnergyModel(cfg)
        apply_stats(model, [ds[0], ds[100]], None)
    atoms = ds[0].to_atoms()
    thermalize(atoms, 300, 0, stationary=False)
    finals = {}
    for dt_fs in sorted(set(c.water_timesteps_fs) | {min(c.water_timesteps_fs) / 2}):
        state = state_from_atoms(atoms, torch.device("cpu"), torch.float64)
        forces = ModelForces(model, atoms, skin=1.0)
        state.energy, state.forces, state.virial = forces(state.positions, state.cell)
        for _ in range(int(round(c.water_t_end_fs / dt_fs))):
            velocity_verlet_step(state, forces, dt_fs * units.fs)
        finals[dt_fs] = state.positions.clone()
    dts = sorted(c.water_timesteps_fs, reverse=True)
    errors = [[float((finals[dt] - finals[dt / 2]).norm() / math.sqrt(len(atoms)))] for dt in dts]
    return Series("velocity Verlet, water (three-level)", dts, errors, 2.0, metric="RMS position change (A)")


def integrator_order(config: IntegratorConfig | None = None, quick: bool = True) -> StudyResult:
    c = config or (IntegratorConfig.quick() if quick else IntegratorConfig())
    t0 = time.perf_counter()
    series = []
    for method, label, order in (("verlet", "velocity Verlet", 2.0), ("euler", "explicit Euler", 1.0),
                                 ("rk4", "RK4", 4.0)):
        # Euler's amplitude grows like exp(t dt / 2): over a long horizon its error is not yet
        # linear in dt, so it is measured over one time unit
        t_end = 1.0 if method == "euler" else c.t_end
        errors = [[_harmonic(method, dt, t_end)] for dt in c.timesteps]
        series.append(Series(f"{label}, harmonic (t = {t_end:g}/w)", list(c.timesteps), errors, order,
                             metric="phase-space error"))
    if c.water:
        series.append(_water_series(c))
    for s in series:
        s.fit_rate()
    return StudyResult("integrator-order", "time step", series, time.perf_counter() - t0, quick)
