"""Typed configuration of a training run: DeePMD-kit's water recipe by default (Adam, exponential
learning-rate decay, force-then-energy prefactors), a time or step budget, validation and
checkpoint cadence, and the model's own :class:`~nnpot.potentials.config.ModelConfig`."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from nnpot.configio import from_dict, load_tree
from nnpot.errors import ConfigError
from nnpot.potentials.config import ModelConfig

__all__ = ["DESCRIPTOR_RECIPES", "LossConfig", "TrainConfig", "parse_duration", "load_train_config"]


@dataclass
class LossConfig:
    """``loss = p_e dE^2 / N^k + p_f mean(dF^2) + p_v mean(dW^2) / N^k``; each prefactor moves
    from ``start_*`` to ``limit_*`` as ``limit + (start - limit) * lr / start_lr``.

    ``k = energy_norm_exp``: 1, the default, is DeePMD-kit's ``dE^2/N`` (its
    ``intensive_ener_virial: false``); 2 gives the size-independent ``(dE/N)^2``, which weights the
    energy N times less. On the bundled molecule set (N = 10, 10 min on a core) k = 1 gave 17%
    lower energy and 2.5% lower force errors than k = 2; on water the two were equal
    (benchmarks/README.md)."""

    start_pref_e: float = 0.02
    limit_pref_e: float = 1.0
    start_pref_f: float = 1000.0
    limit_pref_f: float = 1.0
    start_pref_v: float = 0.0
    limit_pref_v: float = 0.0
    energy_norm_exp: int = 1  #: k above: 1 (DeePMD-kit's dE^2/N) or 2 (per-atom errors squared)

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if name != "energy_norm_exp" and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"loss.{name} must be a number >= 0, got {value}")
        if self.energy_norm_exp not in (1, 2):
            raise ConfigError(f"loss.energy_norm_exp must be 1 or 2, got {self.energy_norm_exp}")


#: what a zero means for the settings where it switches something off
_ZERO_MEANS = {"batch_atoms": "batches of batch_size frames", "threads": "torch's default",
               "seed": "a valid seed", "split_seed": "a valid seed", "early_stop_patience": "never stop early",
               "grad_clip": "no clipping", "overlap_threshold": "no report", "bias_refit_frames": "no re-fit"}


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)  #: training HDF5 file(s), read as one dataset
    valid_data: list[str] = field(default_factory=list)  #: validation file(s); none: split valid_fraction off data
    valid_fraction: float = 0.2
    split_seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    num_steps: int = 1_000_000  #: the learning rate reaches stop_lr here (or at max_time)
    max_time: str = ""  #: wall-clock budget, e.g. "10m", "2h"; the lr decays over it
    start_lr: float = 1e-3
    stop_lr: float = 3.51e-8
    #: over a max_time budget the lr decays to max(stop_lr, budget_stop_lr): a run of minutes
    #: cannot use the floor of a million-step schedule without wasting most of its steps
    budget_stop_lr: float = 1e-5
    #: the decay from start_lr to the floor: "exp" (DeePMD-kit's exponential) or "cosine"
    lr_schedule: str = "exp"
    #: share of the run (steps or budget) over which the lr rises linearly from 0 to start_lr
    warmup: float = 0.0
    batch_size: int = 1  #: frames per step (per process)
    #: if > 0, batches by atom budget instead: each step takes frames in order while their atoms
    #: add up to at most this (at least one frame), like DeePMD-kit's "auto" batch size
    batch_atoms: int = 0
    seed: int = 1
    #: train on a resample with replacement of the training frames (as many as there are, drawn
    #: with ``seed``): an ensemble's members then differ in their data too (bagging)
    bootstrap: bool = False
    stat_frames: int = 64  #: frames sampled for davg/dstd and the energy bias
    #: at each validation, re-fit the per-element energy bias on this many training frames (a
    #: seeded sample; least squares on the energy residuals; changes no force), and before the
    #: model is saved on every training frame (up to 4096 of them); 0: off
    bias_refit_frames: int = 64
    valid_freq: int = 500  #: steps between validations
    valid_frames: int = 32  #: validation frames evaluated each time (all at the end)
    save_freq: int = 1000  #: steps between checkpoints
    keep_checkpoints: int = 3
    #: decay d of the weight average that validation and the saved models use, warmed up as
    #: ``min(d, (1 + t) / (10 + t))`` at update t; 0 disables it
    ema_decay: float = 0.0
    grad_clip: float = 0.0  #: 0 disables gradient-norm clipping
    #: "adam", or "lkf": the layer-wise Kalman filter of DeePMD-kit's PyTorch backend
    #: (training/kalman.py): each step one energy update and force updates on groups of atoms;
    #: the learning rate and loss prefactors do not apply to it
    optimizer: str = "adam"
    weight_decay: float = 0.0  #: Adam's decoupled weight decay (AdamW) per unit lr; 0: plain Adam
    kalman_block: int = 1024  #: lkf: parameters per block of the covariance (memory: n_params * block)
    kalman_lambda: float = 0.98  #: lkf: the starting forgetting factor
    kalman_nue: float = 0.9987  #: lkf: lambda -> nue lambda + 1 - nue after every update
    kalman_force_atoms: int = 24  #: lkf: atoms whose forces update the weights each step, 6 per update
    #: lkf: scale of the force measurements (eV/A): the filter takes a force error of 1/w eV/A
    #: as seriously as an energy error of 1 eV/atom
    kalman_force_weight: float = 1.0
    early_stop_patience: int = 0  #: validations without improvement before stopping; 0: never
    overlap_threshold: float = 0.5  #: Angstrom; closer atoms in the training set are reported
    threads: int = 0  #: torch CPU threads; 0 keeps torch's default
    device: str = "auto"
    #: data-parallel gradient averaging: "bucketed" (all-reduce of ~25 MB buckets overlapped with
    #: the backward pass) or "per-parameter" (one all-reduce per parameter after it)
    grad_sync: str = "bucketed"
    #: start from this model's weights and statistics (fine-tuning); its architecture replaces `model`
    init_model: str = ""

    def max_seconds(self) -> float | None:
        """The wall-clock budget in seconds, or None when there is none (``max_time`` empty)."""
        return parse_duration(self.max_time) if self.max_time != "" else None

    def validate(self) -> "TrainConfig":
        self.model.validate()
        if not self.data:
            raise ConfigError("data: a training HDF5 file is required (--data FILE.h5, repeated for several)")
        if not 0 < self.valid_fraction < 1 and not self.valid_data:
            raise ConfigError(f"valid_fraction must lie in (0, 1), got {self.valid_fraction}")
        if not (math.isfinite(self.start_lr) and math.isfinite(self.stop_lr) and 0 < self.stop_lr <= self.start_lr):
            raise ConfigError(f"need finite 0 < stop_lr <= start_lr, got {self.stop_lr} and {self.start_lr}")
        if self.lr_schedule not in ("exp", "cosine"):
            raise ConfigError(f"lr_schedule must be 'exp' or 'cosine', got {self.lr_schedule!r}")
        if not (math.isfinite(self.warmup) and 0 <= self.warmup < 1):
            raise ConfigError(f"warmup must lie in [0, 1) (a share of the run), got {self.warmup}")
        if not (math.isfinite(self.budget_stop_lr) and self.budget_stop_lr > 0):
            raise ConfigError(f"budget_stop_lr must be a positive number, got {self.budget_stop_lr}")
        for name in ("batch_size", "num_steps", "valid_freq", "save_freq", "stat_frames", "valid_frames",
                     "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("batch_atoms", "threads", "seed", "split_seed", "early_stop_patience", "bias_refit_frames"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0: {_ZERO_MEANS[name]}), got {getattr(self, name)}")
        for name in ("grad_clip", "overlap_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a number >= 0 (0: {_ZERO_MEANS[name]}), got {value}")
        if not (math.isfinite(self.ema_decay) and 0 <= self.ema_decay < 1):
            raise ConfigError(f"ema_decay must lie in [0, 1) (0: no average), got {self.ema_decay}")
        self.loss.validate()
        if self.optimizer not in ("adam", "lkf"):
            raise ConfigError(f"optimizer: {self.optimizer!r}; allowed: 'adam', 'lkf'")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be a number >= 0, got {self.weight_decay}")
        if self.kalman_block < 1 or self.kalman_force_atoms < 1:
            raise ConfigError("kalman_block and kalman_force_atoms must be >= 1")
        if not (math.isfinite(self.kalman_force_weight) and self.kalman_force_weight > 0):
            raise ConfigError(f"kalman_force_weight must be a number > 0, got {self.kalman_force_weight}")
        if not (0 < self.kalman_lambda <= 1 and 0 < self.kalman_nue <= 1):
            raise ConfigError("kalman_lambda and kalman_nue must lie in (0, 1]")
        if self.grad_sync not in ("bucketed", "per-parameter"):
            raise ConfigError(f"grad_sync must be 'bucketed' or 'per-parameter', got {self.grad_sync!r}")
        if self.max_time != "":
            parse_duration(self.max_time)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def parse_duration(text: str, name: str = "max_time") -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"10m"``, ``"1.5h"`` or ``"1h30m"``; zero, negative and
    unreadable durations are a :class:`~nnpot.errors.ConfigError` naming ``name``."""
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
        if not parts or "".join(a + b for a, b in parts) != text.replace(" ", ""):
            raise ConfigError(f"{name}: cannot read duration {text!r}; use e.g. 90s, 10m, 1.5h")
        seconds = sum(float(v) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for v, u in parts)
    if not seconds > 0:
        raise ConfigError(f"{name}: the budget must be positive, got {text!r} (omit it for no time limit)")
    return seconds


#: training settings per descriptor type, used where the config leaves a key unset (nested
#: sections key by key): the winners of the A/B rounds for ``ace`` on the molecule set and on
#: ethanol (benchmarks/README.md, "Training settings, A/B"). se_e2_a keeps DeePMD-kit's recipe (the
#: class defaults above).
DESCRIPTOR_RECIPES: dict[str, dict[str, Any]] = {
    "ace": {"lr_schedule": "cosine", "warmup": 0.05, "batch_size": 4, "ema_decay": 0.99,
            # float32 steps are 1.3x faster and reach lower force errors in the same time; the
            # physics checks build float64 models themselves
            "model": {"dtype": "float32"}},
}


def _fill_unset(tree: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """``tree`` with the keys of ``recipe`` it lacks, section by section."""
    out = dict(tree)
    for key, value in recipe.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _fill_unset(out[key], value)
        elif key not in out:
            out[key] = value
    return out


def load_train_config(path: str | None = None, overrides: list[str] | None = None,
                      extra: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML/JSON config, apply ``key=value`` overrides (dotted keys), validate types
    (:func:`nnpot.configio.load_config`). Keys left unset take the training recipe of the
    model's descriptor (:data:`DESCRIPTOR_RECIPES`), then the class defaults."""
    tree = load_tree(path, overrides or (), extra)
    config = from_dict(TrainConfig, tree)
    recipe = DESCRIPTOR_RECIPES.get(config.model.descriptor.type)
    return from_dict(TrainConfig, _fill_unset(tree, recipe)) if recipe else config
