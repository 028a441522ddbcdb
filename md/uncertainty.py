"""Uncertainty-aware MD: an ensemble's disagreement logged along a run, with an optional stop.

With an :class:`~nnpot.potentials.ensemble.EnsembleModel` as the model, every force call also
gives the force and energy deviations (:func:`~nnpot.potentials.ensemble.deviations`).
:class:`DeviationMonitor` records them every ``interval`` steps for each structure of the
driver, writes them as DP-GEN's ``model_devi.out`` columns when given a file, and stops the run
(:meth:`~nnpot.md.driver.MolecularDynamics.request_stop`) once ``max_devi_f`` passes
``stop_above``: beyond it, the potential is extrapolating and the trajectory is not to be
trusted.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from nnpot.errors import ConfigError
from nnpot.potentials.calculator import UNCERTAINTY

__all__ = ["DeviationMonitor"]


class DeviationMonitor:
    """Record ``(step, structure, max_devi_f, min_devi_f, avg_devi_f, devi_e)`` every
    ``interval`` steps of ``dyn`` (attached on construction).

    Args:
        dyn: an nnpot MD driver (or ``Replicas``) whose model is an ensemble.
        interval: steps between records.
        logfile: write the records there as they come (a header line, then one row per record).
        stop_above: eV/A; stop the run when some structure's ``max_devi_f`` exceeds it.
    """

    def __init__(self, dyn, interval: int = 10, logfile: str | os.PathLike[str] | None = None,
                 stop_above: float | None = None):
        if "max_devi_f" not in getattr(dyn.force_fn, "last", {}):
            raise ConfigError("DeviationMonitor needs an MD driver running an ensemble (several models)")
        if interval < 1 or (stop_above is not None and not stop_above > 0):
            raise ConfigError(f"need interval >= 1 and stop_above > 0, got {interval} and {stop_above}")
        self.dyn, self.stop_above = dyn, stop_above
        self.records: list[tuple] = []
        self._fh = open(logfile, "w") if logfile is not None else None
        if self._fh is not None:
            self._fh.write(f"#{'step':>11} {'system':>6} " + " ".join(f"{k:>12}" for k in UNCERTAINTY) + "\n")
            dyn._files.append(self._fh)
        dyn.attach(self, interval)

    def __call__(self) -> None:
        last = self.dyn.force_fn.last
        values = torch.stack([last[k] for k in UNCERTAINTY], dim=1).detach().cpu().double().numpy()  # [B, 4]
        step = self.dyn.nsteps
        for b, row in enumerate(values):
            self.records.append((step, b, *map(float, row)))
            if self._fh is not None:
                self._fh.write(f"{step:12d} {b:6d} " + " ".join(f"{v:12.6e}" for v in row) + "\n")
        if self._fh is not None:
            self._fh.flush()
        worst = float(values[:, 0].max()) if len(values) else 0.0
        if self.stop_above is not None and worst > self.stop_above:
            self.dyn.request_stop(f"max_devi_f {worst:.3f} eV/A passed {self.stop_above} eV/A at step {step}")

    def array(self) -> np.ndarray:
        """The records ``[n, 6]``: step, structure, max/min/avg force deviation, energy deviation."""
        return np.array(self.records, dtype=np.float64).reshape(-1, 2 + len(UNCERTAINTY))
