"""The descriptor protocol and registry.

A descriptor maps the neighbor vectors of center atoms to per-atom invariant features that the
per-element fitting nets turn into energies. Every descriptor is a :class:`Descriptor`
subclass with its own config dataclass (a :class:`DescriptorConfig` subclass) and registers
under a name, the value of ``model.descriptor.type``::

    @register_descriptor("my_desc", MyConfig)
    class MyDescriptor(Descriptor): ...

Generic code (the model, derivatives, statistics, the evaluator, training) only uses what the
protocol declares, never a descriptor's type. Built-in descriptors live in their own modules,
imported on first use from :data:`BUILTIN`; adding one is a new module and one line there.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn

from nnpot.errors import ConfigError

__all__ = ["Descriptor", "DescriptorConfig", "register_descriptor", "descriptor_config_class",
           "build_descriptor", "descriptor_names", "available_descriptors", "slot_type_index", "BUILTIN"]

#: name -> module that registers it when imported
BUILTIN: dict[str, str] = {
    "se_e2_a": "nnpot.potentials.descriptors.se_e2_a",
    "e3nn": "nnpot.potentials.descriptors.e3nn",
    "ace": "nnpot.potentials.descriptors.ace",
}

_REGISTRY: dict[str, tuple[type[DescriptorConfig], type[Descriptor]]] = {}


@dataclass
class DescriptorConfig:
    """What every descriptor has: its registered name, cutoff and neighbor capacity."""

    type: str = "se_e2_a"  #: the registered descriptor name
    rcut: float = 6.0  #: cutoff radius, Angstrom
    rcut_smth: float = 0.5  #: the smooth switch starts here, Angstrom
    #: max neighbors per type within rcut, or "auto": from the training data's neighbor counts
    #: (:mod:`nnpot.training.auto_config`)
    sel: list[int] | str = "auto"

    @classmethod
    def config_class_for(cls, value: Any, default: DescriptorConfig) -> type[DescriptorConfig]:
        """The config class of the descriptor a section's ``type`` names (for ``from_dict``)."""
        kind = value.get("type", default.type) if isinstance(value, dict) else default.type
        return descriptor_config_class(str(kind))

    def validate(self, n_types: int | None) -> None:
        """Raise :class:`~nnpot.errors.ConfigError` naming the first bad field (``n_types``
        None: the type map is still to come from the data)."""
        if isinstance(self.sel, str) and self.sel != "auto":
            raise ConfigError(f"descriptor.sel must be a list of neighbor counts or 'auto', got {self.sel!r}")
        if self.sel != "auto":
            if n_types is not None and len(self.sel) != n_types:
                raise ConfigError(f"descriptor.sel has {len(self.sel)} entries but type_map has {n_types}")
            if any(int(s) < 1 for s in self.sel):
                raise ConfigError(f"descriptor.sel entries must be >= 1, got {list(self.sel)}")
            if sum(self.sel) > 4096:
                raise ConfigError(f"descriptor.sel sums to {sum(self.sel)} neighbors, beyond any sane potential (4096)")
        if not 0 < self.rcut <= 30:
            raise ConfigError(f"descriptor.rcut must lie in (0, 30] Angstrom, got {self.rcut}")
        if not 0 <= self.rcut_smth < self.rcut:
            raise ConfigError(f"descriptor: need 0 <= rcut_smth < rcut, got {self.rcut_smth} and {self.rcut}")


def _check_widths(name: str, widths: Sequence[int], limit: int = 4096) -> None:
    if not widths or any(int(w) < 1 or int(w) > limit for w in widths):
        raise ConfigError(f"{name} must be a non-empty list of widths in 1..{limit}, got {list(widths)}")


class Descriptor(nn.Module):
    """The protocol. Subclasses set ``dim_out`` and implement :meth:`forward`; the rest has
    defaults that fit a strictly local descriptor without statistics or tables.

    Neighbor layout (what :meth:`forward` receives): se_e2_a's padded per-type blocks,
    ``rij`` ``[n, sum(capacity), 3]`` with ``capacity[t]`` slots for neighbor type ``t``,
    nearest first, zero vectors in empty slots (``mask`` False). The capacity may differ from
    ``sel``; a descriptor's energies must not depend on it (empty slots must be neutral, or
    corrected for, as se_e2_a does).
    """

    config: DescriptorConfig

    def __init__(self, config: DescriptorConfig, n_types: int, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.config = config
        self.n_types = int(n_types)

    # rcut and sel have one owner, the config (which the model's config holds too): read, never copied
    @property
    def rcut(self) -> float:
        """Cutoff radius, Angstrom."""
        return float(self.config.rcut)

    @property
    def sel(self) -> list[int]:
        """Neighbors of each type within ``rcut`` that the model accounts for."""
        return [int(s) for s in self.config.sel]

    #: features per atom
    dim_out: int
    #: whether the embedding nets are tables (inference-only fast path)
    is_tabulated: ClassVar[bool] = False

    @property
    def is_local(self) -> bool:
        """Whether an atom's features depend on its own neighbor slots only (then atoms can be
        evaluated in chunks and domain decomposition needs a shell of ``rcut``): true unless the
        config has message-passing layers (``message_layers`` > 0)."""
        return int(getattr(self.config, "message_layers", 0)) == 0

    @property
    def receptive_field(self) -> float:
        """Angstrom: how far an atom's energy can see; each message-passing layer adds ``rcut``."""
        return self.rcut * (1 + int(getattr(self.config, "message_layers", 0)))

    def inputs(self, batch: Any, centers: slice, whole: bool) -> dict[str, Any]:
        """Extra keyword arguments of :meth:`forward` for the centers ``centers`` of ``batch``
        (an :class:`~nnpot.potentials.batch.AtomsBatch`; ``whole``: the chunk is the whole
        batch). Non-local descriptors get the neighbor indices here; a descriptor may also
        precompute work (se_e2_a's embedding plan). Nothing here may wait on the device when
        ``batch.groups`` is set (CUDA-graph capture).

        Under domain decomposition (``batch.counted``) some neighbors of the ghosts that send
        messages have no row and so no features: their index is -1 here. Only the senders'
        own messages, which no counted energy reads, lose them."""
        if self.is_local:
            return {}
        index = batch.neighbors.index[centers]
        if batch.counted is not None:
            index = torch.where(index < batch.n_centers, index, torch.full_like(index, -1))
        return {"index": index}

    def fit_statistics(self, structures: Sequence, type_map: Sequence[str]) -> None:
        """Set input normalisation from training structures (default: none needed)."""

    def tabulated(self, stride: float = 0.01, r_min: float = 0.5) -> Descriptor:
        """A faster inference-only copy with tables in place of nets, where the descriptor has one."""
        raise ConfigError(f"descriptor {self.config.type!r} has no tabulated form")

    @property
    def can_tabulate(self) -> bool:
        return type(self).tabulated is not Descriptor.tabulated

    def forward(self, rij: torch.Tensor, mask: torch.Tensor, center_types: torch.Tensor,
                capacity: tuple[int, ...], **inputs: Any) -> torch.Tensor:
        """``[n, dim_out]`` features from ``rij`` ``[n, K, 3]`` (Angstrom), ``mask`` ``[n, K]``,
        ``center_types`` ``[n]`` and the slot ``capacity`` per neighbor type."""
        raise NotImplementedError


def slot_type_index(capacity: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """``[sum(capacity)]`` the neighbor type of each slot, on the device of ``like`` (``[n, K,
    ...]``). Built from ``like`` rather than with a ``device=`` argument, so that a TorchScript
    trace of a descriptor (the metatomic export) follows the device it is moved to."""
    out = like.new_zeros(like.shape[1], dtype=torch.long)
    start = 0
    for cap in list(capacity)[:-1]:
        start += int(cap)
        out[start:] += 1
    return out


def register_descriptor(name: str, config_class: type[DescriptorConfig]) -> Callable[[type], type]:
    """Class decorator: register a :class:`Descriptor` under ``name`` with its config class."""
    def wrap(cls: type[Descriptor]) -> type[Descriptor]:
        _REGISTRY[name] = (config_class, cls)
        return cls
    return wrap


def _lookup(name: str) -> tuple[type[DescriptorConfig], type[Descriptor]]:
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _REGISTRY:
        raise ConfigError(f"descriptor.type: {name!r} is not known; allowed: {', '.join(descriptor_names())}")
    return _REGISTRY[name]


def descriptor_names() -> list[str]:
    """Every registered or built-in descriptor name."""
    return sorted(set(BUILTIN) | set(_REGISTRY))


def available_descriptors() -> list[str]:
    """The names ``model.descriptor.type`` accepts (:func:`descriptor_names`)."""
    return descriptor_names()


def descriptor_config_class(name: str) -> type[DescriptorConfig]:
    """The config dataclass of descriptor ``name``."""
    return _lookup(name)[0]


def build_descriptor(config: DescriptorConfig, n_types: int, dtype: torch.dtype = torch.float64) -> Descriptor:
    """The descriptor module that ``config`` describes."""
    return _lookup(config.type)[1](config, n_types, dtype=dtype)


def config_keys(name: str) -> set[str]:
    """The fields of descriptor ``name``'s config."""
    return {f.name for f in fields(descriptor_config_class(name))}
