"""Typed model configuration; defaults are DeePMD-kit's water example (se_e2_a)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from nnpot.errors import ConfigError

__all__ = ["DescriptorConfig", "FittingConfig", "ModelConfig", "from_dict"]


@dataclass
class DescriptorConfig:
    """The descriptor: ``se_e2_a`` (Zhang et al., "End-to-end symmetry preserving inter-atomic
    potential energy model for finite and extended systems", NeurIPS 2018) or ``e3nn`` (an
    E(3)-equivariant descriptor, strictly local unless ``message_layers`` > 0,
    :mod:`nnpot.potentials.equivariant`).
    ``rcut`` and ``sel`` serve both; the fields below are marked with the one that uses them."""

    type: str = "se_e2_a"  #: se_e2_a or e3nn
    rcut: float = 6.0  #: cutoff radius, Angstrom
    rcut_smth: float = 0.5  #: the switch starts here, Angstrom
    sel: list[int] = field(default_factory=lambda: [46, 92])  #: max neighbors per type
    neuron: list[int] = field(default_factory=lambda: [25, 50, 100])  #: embedding widths
    axis_neuron: int = 16  #: columns of G used in the contraction
    activation: str = "tanh"
    resnet_dt: bool = False
    lmax: int = 2  #: e3nn: largest angular momentum of the spherical harmonics and features
    channels: int = 16  #: e3nn: channels per irrep
    num_basis: int = 8  #: e3nn: Bessel radial functions
    radial_neuron: list[int] = field(default_factory=lambda: [32, 32])  #: e3nn: radial MLP widths
    layers: int = 1  #: e3nn: interaction layers (body order grows, receptive field stays rcut)
    message_layers: int = 0  #: e3nn: message-passing layers, each adding rcut to the receptive field


@dataclass
class FittingConfig:
    neuron: list[int] = field(default_factory=lambda: [240, 240, 240])
    activation: str = "tanh"
    resnet_dt: bool = True


@dataclass
class ModelConfig:
    type_map: list[str] = field(default_factory=lambda: ["O", "H"])
    descriptor: DescriptorConfig = field(default_factory=DescriptorConfig)
    fitting: FittingConfig = field(default_factory=FittingConfig)
    dtype: str = "float64"  #: parameter dtype: float64 or float32
    seed: int = 1

    def validate(self) -> "ModelConfig":
        d = self.descriptor
        if d.type not in ("se_e2_a", "e3nn"):
            raise ConfigError(f"descriptor.type: {d.type!r} is not known; allowed: 'se_e2_a', 'e3nn'")
        if d.type == "e3nn" and not (0 <= d.lmax <= 6 and d.channels > 0 and d.num_basis > 0 and d.layers >= 0
                                  and d.message_layers >= 0):
            raise ConfigError("descriptor: e3nn needs 0 <= lmax <= 6, channels > 0, num_basis > 0, layers >= 0 and "
                              "message_layers >= 0")
        if d.type != "e3nn" and d.message_layers:
            raise ConfigError("descriptor.message_layers needs descriptor.type: e3nn")
        if len(d.sel) != len(self.type_map):
            raise ConfigError(f"descriptor.sel has {len(d.sel)} entries but type_map has {len(self.type_map)}")
        if not 0 <= d.rcut_smth < d.rcut:
            raise ConfigError(f"descriptor: need 0 <= rcut_smth < rcut, got {d.rcut_smth} and {d.rcut}")
        if not 0 < d.axis_neuron <= d.neuron[-1]:
            raise ConfigError(f"descriptor.axis_neuron must lie in 1..{d.neuron[-1]}, got {d.axis_neuron}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype: {self.dtype!r}; allowed: 'float32', 'float64'")
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
        if is_dataclass(default):
            kwargs[key] = from_dict(type(default), value, prefix=f"{name}.")
        else:
            kwargs[key] = _coerce(value, default, name)
    return cls(**kwargs)


def _coerce(value: Any, default: Any, name: str) -> Any:
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
