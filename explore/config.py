"""The typed configuration of ``nnpot explore`` (YAML, see ``examples/active_learning.yaml``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from nnpot.errors import ConfigError
from nnpot.explore.labelling import Labeller

__all__ = ["ExploreConfig"]


@dataclass
class ExploreConfig:
    #: labelled HDF5 file to start from (copied into ``out``; never modified)
    data: str = ""
    #: seed structures to explore from: ASE-readable files (every frame is a seed) or nnpot .h5
    structures: list[str] = field(default_factory=list)
    labeller: Labeller = field(default_factory=Labeller)
    out: str = "runs/explore"
    #: labelled HDF5 file for the validation error reported per iteration (optional)
    test_data: str = ""
    ensemble: int = 4  #: models in the ensemble
    #: training config overrides (dotted keys, as nnpot train --set), e.g. {"model.fitting.neuron": [64, 64]}
    train: dict[str, Any] = field(default_factory=dict)
    train_time: str = "5m"  #: wall-clock budget per member, first ensemble
    finetune_time: str = "2m"  #: per member, each later iteration (fine-tuning the previous models)
    #: when set, fine-tuning starts from these instead of the training config's start values, as
    #: DP-GEN's training_reuse_start_lr / _start_pref_e / _start_pref_f do (its defaults: 1e-4,
    #: 0.1, 100). Measured on EMT copper with 600-step fine-tunes, that gentler start left the
    #: models far less accurate (benchmarks/README.md), so by default fine-tuning uses the recipe's
    #: own start; for long fine-tuning budgets the gentler one keeps more of what a model learnt.
    finetune_start_lr: float | None = None
    finetune_start_pref_e: float | None = None
    finetune_start_pref_f: float | None = None
    #: step budgets instead (reproducible, for comparisons): used when > 0
    train_steps: int = 0
    finetune_steps: int = 0
    temperatures_K: list[float] = field(default_factory=lambda: [300.0])
    replicas: int = 2  #: Langevin replicas per seed structure and temperature
    steps: int = 1000  #: MD steps per exploration
    timestep_fs: float = 1.0
    friction_per_fs: float = 0.01  #: Langevin friction of the NVT explorations
    #: NPT explorations too: each temperature at each of these pressures, for the seeds periodic in
    #: all three directions (Bussi thermostat, stochastic cell rescaling); molecules and slabs stay
    #: NVT. Empty: NVT only.
    pressures_bar: list[float] = field(default_factory=list)
    taut_fs: float = 100.0  #: NPT thermostat time
    taup_fs: float = 1000.0  #: NPT barostat time
    compressibility_per_bar: float = 1e-6  #: NPT barostat compressibility (metals ~1e-6, water 4.5e-5)
    sample_every: int = 20  #: steps between examined frames
    #: iteration k's replicas start where k-1's stopped: from each replica's last frame that was
    #: neither failed nor after a failure (the seed when it has none), so that the exploration
    #: reaches further each iteration instead of restarting from the seeds
    continue_runs: bool = False
    trust_lo: float = 0.05  #: eV/A: below, a frame is accurate
    trust_hi: float = 0.35  #: eV/A: at or above, a frame is failed (not labelled)
    #: once a replica's frame has failed, count its later frames as failed too: the trajectory has
    #: left the region the ensemble can be trusted in, and what follows is often unphysical
    fail_rest_of_run: bool = True
    max_select: int = 20  #: frames labelled per iteration at most
    #: they are spread (farthest-point sampling) over the select_pool x max_select most uncertain candidates
    select_pool: float = 3.0
    #: which deviation orders the candidates for that pool: "max_devi_f" (DP-GEN's, the frame's worst
    #: atom) or "avg_devi_f" (the frame's mean over its atoms, which follows the frame's force RMSE
    #: more closely). The trust window always classes frames by max_devi_f.
    rank_by: str = "max_devi_f"
    accurate_threshold: float = 0.95  #: stop when this fraction of explored frames is accurate
    max_iterations: int = 5
    device: str = "auto"
    seed: int = 0
    #: "deviation" (the trust window), or "random": max_select frames drawn at random from
    #: `random_pool` each iteration, the baseline that active learning is measured against
    selection: str = "deviation"
    random_pool: str = ""  #: structures (ASE-readable or .h5) for selection "random"

    def validate(self) -> ExploreConfig:
        if not self.data:
            raise ConfigError("data: give the labelled HDF5 file to start from")
        if not self.structures:
            raise ConfigError("structures: give at least one seed structure file")
        if self.ensemble < 2:
            raise ConfigError(f"ensemble must be >= 2 (the deviation needs several models), got {self.ensemble}")
        if not 0 <= self.trust_lo < self.trust_hi:
            raise ConfigError(f"need 0 <= trust_lo < trust_hi, got {self.trust_lo} and {self.trust_hi}")
        for name in ("replicas", "steps", "sample_every", "max_iterations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_select < 0:
            raise ConfigError(f"max_select must be >= 0, got {self.max_select}")
        if not self.select_pool >= 1:
            raise ConfigError(f"select_pool must be >= 1, got {self.select_pool}")
        if not self.temperatures_K or any(not (math.isfinite(t) and t > 0) for t in self.temperatures_K):
            raise ConfigError(f"temperatures_K must be positive, got {self.temperatures_K}")
        if not (self.timestep_fs > 0 and self.friction_per_fs >= 0):
            raise ConfigError("need timestep_fs > 0 and friction_per_fs >= 0")
        if any(not math.isfinite(p) for p in self.pressures_bar):
            raise ConfigError(f"pressures_bar must be finite, got {self.pressures_bar}")
        if self.pressures_bar and not (self.taut_fs > 0 and self.taup_fs > 0 and self.compressibility_per_bar > 0):
            raise ConfigError("NPT exploration needs taut_fs, taup_fs and compressibility_per_bar > 0")
        if self.rank_by not in ("max_devi_f", "avg_devi_f"):
            raise ConfigError(f"rank_by must be 'max_devi_f' or 'avg_devi_f', got {self.rank_by!r}")
        if self.selection not in ("deviation", "random") or (self.selection == "random" and not self.random_pool):
            raise ConfigError(f"selection must be 'deviation' or 'random' (with random_pool), got {self.selection!r}")
        for name, positive in (("finetune_start_lr", True), ("finetune_start_pref_e", False),
                               ("finetune_start_pref_f", False)):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
                raise ConfigError(f"{name} must be {'> 0' if positive else '>= 0'} (or unset), got {value}")
        if not 0 < self.accurate_threshold <= 1:
            raise ConfigError(f"accurate_threshold must lie in (0, 1], got {self.accurate_threshold}")
        return self
