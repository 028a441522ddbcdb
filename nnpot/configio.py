"""Configuration files and ``--set`` overrides, read in one place for every command.

Training, MD and approximation studies are typed dataclasses. :func:`load_config` builds one
from defaults, a YAML/JSON file, options given on the command line and dotted ``KEY=VALUE``
overrides (values read as YAML: ``--set model.fitting.neuron=[120,120]``); unknown keys and
wrong types are errors that name the key and what is allowed. A section whose class depends
on its content (a descriptor's settings, chosen by its ``type``) provides a classmethod
``config_class_for(value, default)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields, is_dataclass
from typing import Any

import yaml

from nnpot.errors import ConfigError

__all__ = ["load_config", "load_tree", "from_dict", "parse_override", "set_dotted", "read_yaml"]


def read_yaml(stream: Any, where: str) -> Any:
    """YAML (or JSON) from ``stream`` (text or an open file), without anchors and aliases: a
    kilobyte of nested aliases expands to gigabytes (a "billion laughs" file), and no nnpot
    file needs them. Errors are :class:`~nnpot.errors.ConfigError` naming ``where``."""
    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):  # noqa: ANN001  (PyYAML's signature)
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ConfigError(f"{where}: YAML anchors and aliases (&name, *name) are not accepted; write the "
                                  "values out")
            return super().compose_node(parent, index)

    try:
        return yaml.load(stream, Loader=NoAliasLoader)  # noqa: S506  (a SafeLoader without aliases)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to read") from None


def load_config(cls: type, path: str | None = None, overrides: Iterable[str] = (), extra: dict[str, Any] | None = None,
                base: dict[str, Any] | None = None) -> Any:
    """``cls`` from ``base`` (a tree of values), the YAML/JSON file ``path``, the dotted keys of
    ``extra`` (command-line options; None values are skipped) and ``KEY=VALUE`` ``overrides``,
    in that order, each later one winning. Returns the dataclass, type-checked."""
    return from_dict(cls, load_tree(path, overrides, extra, base))


def load_tree(path: str | None = None, overrides: Iterable[str] = (), extra: dict[str, Any] | None = None,
              base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The merged tree of values :func:`load_config` builds its dataclass from."""
    tree: dict = dict(base or {})
    if path:
        try:
            with open(path) as fh:
                tree.update(read_yaml(fh, path) or {})
        except ConfigError:
            raise
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: not a YAML/JSON mapping: {exc}") from None
    for key, value in (extra or {}).items():
        if value is not None:
            set_dotted(tree, key, value)
    for item in overrides:
        set_dotted(tree, *parse_override(item))
    return tree


def set_dotted(tree: dict, key: str, value: Any) -> None:
    """``tree["a"]["b"] = value`` for ``key = "a.b"``, making sections as needed."""
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {p!r} is not a section")
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """``"key=value"`` from a ``--set`` option: the stripped key and the value read as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    return key.strip(), read_yaml(value, f"--set {key.strip()}")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
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
        if is_dataclass(default):  # a section; its class may depend on the data (config_class_for)
            chooser = getattr(type(default), "config_class_for", None)
            kwargs[key] = from_dict(chooser(value, default) if chooser else type(default), value, prefix=f"{name}.")
        else:
            annotation = str(known[key].type)
            if default == [] and annotation in _NUMBER_LISTS:  # an empty default: its items' type from the annotation
                default = [_NUMBER_LISTS[annotation]]
            if default is None and value is not None and annotation in _OPTIONAL_NUMBERS:  # unset by default
                default = _OPTIONAL_NUMBERS[annotation]
            kwargs[key] = _coerce(value, default, name)
    return cls(**kwargs)


_NUMBER_LISTS = {"list[float]": 0.0, "list[int]": 0}
_OPTIONAL_NUMBERS = {"float | None": 0.0, "int | None": 0}


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
            kind = "an integer" if isinstance(default, int) else "a number"
            raise ConfigError(f"{name}: expected {kind}, got {value!r}") from None
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
