"""The table of MD ensembles: a name (what ``nnpot md``'s ``ensemble:`` takes) -> the driver class
and how its settings come from an :class:`~nnpot.md.run_config.MDConfig` (ASE units).

Adding an integrator is one new module (a :class:`~nnpot.md.driver.MolecularDynamics` subclass
with its ``_advance``) and one :func:`register_ensemble` line; ``nnpot md`` and its config check
read this table and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ase import units

from nnpot.md.driver import NPT, Bussi, Langevin, MolecularDynamics, NoseHoover, VelocityVerlet

__all__ = ["Ensemble", "ENSEMBLES", "register_ensemble", "ensemble_names"]


@dataclass(frozen=True)
class Ensemble:
    """A driver class and the keyword arguments it takes from a run config (besides ``atoms``,
    the time step and the output settings)."""

    driver: type[MolecularDynamics]
    settings: Callable[[Any], dict[str, Any]]
    doc: str = ""


ENSEMBLES: dict[str, Ensemble] = {}


def register_ensemble(name: str, ensemble: Ensemble) -> None:
    """Make ``ensemble: name`` run ``ensemble.driver``."""
    ENSEMBLES[name] = ensemble


def ensemble_names() -> list[str]:
    return list(ENSEMBLES)


register_ensemble("nve", Ensemble(VelocityVerlet, lambda c: {}, "velocity Verlet"))
register_ensemble("langevin", Ensemble(Langevin, lambda c: {
    "temperature_K": c.temperature_K, "friction": c.friction_per_fs / units.fs, "seed": c.seed}, "Langevin (BAOAB)"))
register_ensemble("bussi", Ensemble(Bussi, lambda c: {
    "temperature_K": c.temperature_K, "taut": c.tau_fs * units.fs, "seed": c.seed}, "stochastic velocity rescaling"))
register_ensemble("nose-hoover", Ensemble(NoseHoover, lambda c: {
    "temperature_K": c.temperature_K, "tdamp": c.tau_fs * units.fs}, "Nose-Hoover chain"))
register_ensemble("npt", Ensemble(NPT, lambda c: {
    "temperature_K": c.temperature_K, "pressure_au": c.pressure_bar * units.bar, "taut": c.tau_fs * units.fs,
    "taup": c.taup_fs * units.fs, "compressibility_au": c.compressibility_per_bar / units.bar, "seed": c.seed},
    "isotropic NPT (Bussi thermostat, stochastic cell rescaling)"))
