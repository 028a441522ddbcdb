"""Typed model configuration; defaults are DeePMD-kit's water example (se_e2_a).

The descriptor's section is the config dataclass of the descriptor named by its ``type`` key
(:mod:`nnpot.potentials.descriptor_base`): each descriptor owns its settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from nnpot.errors import ConfigError
from nnpot.nn import ACTIVATIONS
from nnpot.potentials.descriptor_base import DescriptorConfig, _check_widths, descriptor_config_class

__all__ = ["DescriptorConfig", "FittingConfig", "ModelConfig", "from_dict"]


@dataclass
class FittingConfig:
    neuron: list[int] = field(default_factory=lambda: [240, 240, 240])
    activation: str = "tanh"
    resnet_dt: bool = True


@dataclass
class ModelConfig:
    #: element of each model type; empty: the elements of the training data, by atomic number
    type_map: list[str] = field(default_factory=list)
    descriptor: DescriptorConfig = field(default_factory=lambda: descriptor_config_class("se_e2_a")())
    fitting: FittingConfig = field(default_factory=FittingConfig)
    dtype: str = "float64"  #: parameter dtype: float64 or float32
    seed: int = 1

    @property
    def is_resolved(self) -> bool:
        """Whether the type map and ``sel`` are set (not still to come from the data)."""
        return bool(self.type_map) and self.descriptor.sel != "auto"

    def validate(self) -> "ModelConfig":
        from ase.data import atomic_numbers

        if len(set(self.type_map)) != len(self.type_map):
            raise ConfigError(f"type_map must list distinct elements, got {list(self.type_map)}")
        unknown = [e for e in self.type_map if e not in atomic_numbers or e == "X"]
        if unknown:
            raise ConfigError(f"type_map: {', '.join(map(str, unknown))} is not a chemical element")
        self.descriptor.validate(len(self.type_map) or None)
        _check_widths("fitting.neuron", self.fitting.neuron)
        if self.fitting.activation not in ACTIVATIONS:
            raise ConfigError(f"fitting.activation: {self.fitting.activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype: {self.dtype!r}; allowed: 'float32', 'float64'")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def parse_override(item: str) -> tuple[str, Any]:
    """``"key=value"`` from a ``--set`` option: the stripped key and the value read as YAML."""
    import yaml

    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    return key.strip(), yaml.safe_load(value)


def from_dict(cls, data: dict[str, Any], prefix: str = ""):
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(f"unknown key {name!r}; allowed keys: {', '.join(sorted(known))}")
        default = getattr(cls(), key)
        if isinstance(default, DescriptorConfig):  # the class of the descriptor its "type" names
            kind = value.get("type", default.type) if isinstance(value, dict) else default.type
            kwargs[key] = from_dict(descriptor_config_class(str(kind)), value, prefix=f"{name}.")
        elif is_dataclass(default):
            kwargs[key] = from_dict(type(default), value, prefix=f"{name}.")
        else:
            kwargs[key] = _coerce(value, default, name)
    return cls(**kwargs)


def _coerce(value: Any, default: Any, name: str) -> Any:
    if default == "auto":  # a setting that is "auto" or a choice (a word, or a list of counts for sel)
        return _coerce(value, [0], name) if isinstance(value, (list, tuple)) else str(value)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            out = type(default)(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a {type(default).__name__}, got {value!r}") from None
        if isinstance(default, int) and isinstance(value, float) and value != int(value):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return out
    if isinstance(default, list):
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        if default and isinstance(default[0], (int, float)):
            return [_coerce(v, default[0], f"{name}[{k}]") for k, v in enumerate(value)]
        return [str(v).strip() for v in value]
    if default is None or isinstance(default, str):
        return value if value is None else str(value)
    return value
