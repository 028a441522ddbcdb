"""Typed configuration of a model; defaults are DeePMD-kit's water example (se_e2_a). The
training recipe's settings are in :mod:`nnpot.training.config`.

The descriptor's section is the config dataclass of the descriptor named by its ``type`` key
(:mod:`nnpot.potentials.descriptors.base`): each descriptor owns its settings."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ase.data import atomic_numbers

from nnpot.configio import from_dict
from nnpot.errors import ConfigError
from nnpot.nn import ACTIVATIONS, is_activation
from nnpot.potentials.descriptors.base import DescriptorConfig, _check_widths, descriptor_config_class

__all__ = ["DescriptorConfig", "FittingConfig", "ModelConfig", "from_dict"]


@dataclass
class FittingConfig:
    neuron: list[int] = field(default_factory=lambda: [240, 240, 240])
    activation: str = "tanh"
    resnet_dt: bool = True
    #: eV; the fitting nets' outputs are multiplied by it, so they work at unit size whatever
    #: the energy scale of the data (MACE's ``rms_forces_scaling``)
    scale: float = 1.0
    #: training sets ``scale`` to the RMS of the training force components (eV/A times 1 A),
    #: then this back to false, so a model file (and fine-tuning from it) keeps that scale
    scale_from_data: bool = False


@dataclass
class ModelConfig:
    #: element of each model type; empty: the elements of the training data, by atomic number
    type_map: list[str] = field(default_factory=list)
    descriptor: DescriptorConfig = field(default_factory=lambda: descriptor_config_class("se_e2_a")())
    fitting: FittingConfig = field(default_factory=FittingConfig)
    dtype: str = "float64"  #: parameter dtype: float64 or float32
    seed: int = 1

    @classmethod
    def deepmd_water(cls, **kwargs) -> ModelConfig:
        """DeePMD-kit's water example: type map O, H and sel [46, 92] (the other settings are
        the defaults)."""
        config = cls(type_map=["O", "H"], **kwargs)
        config.descriptor.sel = [46, 92]
        return config

    @property
    def is_resolved(self) -> bool:
        """Whether the type map and ``sel`` are set (not still to come from the data)."""
        return bool(self.type_map) and self.descriptor.sel != "auto"

    def validate(self) -> "ModelConfig":
        if len(set(self.type_map)) != len(self.type_map):
            raise ConfigError(f"type_map must list distinct elements, got {list(self.type_map)}")
        unknown = [e for e in self.type_map if e not in atomic_numbers or e == "X"]
        if unknown:
            raise ConfigError(f"type_map: {', '.join(map(str, unknown))} is not a chemical element")
        self.descriptor.validate(len(self.type_map) or None)
        _check_widths("fitting.neuron", self.fitting.neuron)
        if not is_activation(self.fitting.activation):
            raise ConfigError(f"fitting.activation: {self.fitting.activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype: {self.dtype!r}; allowed: 'float32', 'float64'")
        if not (math.isfinite(self.fitting.scale) and self.fitting.scale > 0):
            raise ConfigError(f"fitting.scale must be a number > 0, got {self.fitting.scale}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)
