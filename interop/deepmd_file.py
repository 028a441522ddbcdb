"""DeePMD-kit's backend-independent model files, ``.dp`` and ``.yaml``, as plain trees.

DeePMD-kit 3 serialises a model as a tree of dicts and lists whose arrays sit under
``@variables`` keys (``deepmd/dpmodel``; ``dp convert-backend`` writes and reads it):

* ``.dp`` is HDF5: the root attribute ``json`` holds the tree with each array replaced by the
  path of a root dataset (``/variable_0000``, ...);
* ``.yaml`` holds the same tree with each array inline as
  ``{"@class": "np.ndarray", "@is_variable": true, "dtype": ..., "value": [...]}``.

The top level has ``model`` (the tree), ``model_def_script`` (the training input's model
section), and ``software``, ``version``, ``time`` and ``backend`` fields. Nothing here knows what
the tree means (that is :mod:`nnpot.interop.deepmd_model`); reading never runs code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import yaml

from nnpot.atomic import atomic_path
from nnpot.configio import read_yaml
from nnpot.errors import ConfigError, ModelFileError

__all__ = ["DEEPMD_SUFFIXES", "is_deepmd_file", "read_deepmd_file", "write_deepmd_file"]

DEEPMD_SUFFIXES = (".dp", ".yaml", ".yml")


def is_deepmd_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a DeePMD-kit backend-independent model (by its suffix)."""
    return Path(path).suffix.lower() in DEEPMD_SUFFIXES


def _map_variables(node: Any, fn: Callable[[Any], Any], inside: bool = False) -> Any:
    """The tree with every array leaf (anything below an ``@variables`` key, or a dict marked
    ``@is_variable``) replaced by ``fn(leaf)``; ``None`` leaves stay ``None``."""
    if isinstance(node, dict):
        if node.get("@is_variable", False):
            return fn(node)
        return {k: _map_variables(v, fn, inside or k == "@variables") for k, v in node.items()}
    if isinstance(node, list):
        return [_map_variables(v, fn, inside) for v in node]
    if node is None or not inside:
        return node
    return fn(node)


def read_deepmd_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The tree of a ``.dp`` or ``.yaml`` file, arrays as numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        tree = _read_dp(path) if path.suffix.lower() == ".dp" else _read_yaml(path)
    except ModelFileError:
        raise
    except ConfigError as exc:  # YAML the reader refuses (aliases)
        raise ModelFileError(str(exc)) from None
    except Exception as exc:  # h5py, json and yaml errors all mean a damaged or foreign file
        raise ModelFileError(f"{path}: not a readable DeePMD-kit model file (truncated or corrupt?): "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(tree, dict) or not isinstance(tree.get("model"), dict):
        raise ModelFileError(f"{path}: not a DeePMD-kit model file (no 'model' tree at the top level)")
    return tree


def _read_dp(path: Path) -> Any:
    with h5py.File(path, "r") as f:
        if "json" not in f.attrs:
            raise ModelFileError(f"{path}: an HDF5 file without DeePMD-kit's 'json' attribute")

        def load(ref: Any) -> np.ndarray:
            if not isinstance(ref, str) or ref not in f or not isinstance(f[ref], h5py.Dataset):
                raise ModelFileError(f"{path}: the tree names a variable {ref!r} the file does not hold")
            _check_declared_size(path, f[ref])
            return np.asarray(f[ref][()])

        return _map_variables(json.loads(f.attrs["json"]), load)


MAX_VARIABLE_BYTES = 1 << 30  #: no weight array of a model file comes near this
MAX_EXPANSION = 1000  #: declared bytes per stored byte that compression can explain


def _check_declared_size(path: Path, dataset: Any) -> None:
    """Refuse a dataset whose declared shape is huge, or far larger than the bytes the file
    stores for it, before anything is allocated (a crafted file could ask for gigabytes)."""
    declared = int(np.prod(dataset.shape, dtype=np.float64)) * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if declared > MAX_VARIABLE_BYTES or (declared > 4096 and declared > MAX_EXPANSION * max(stored, 1)):
        raise ModelFileError(f"{path}: variable {dataset.name} declares shape {dataset.shape} ({declared:,} bytes) "
                             f"but the file stores {stored:,} bytes for it; the file is damaged or crafted")


def _read_yaml(path: Path) -> Any:
    def load(leaf: Any) -> np.ndarray:
        if isinstance(leaf, dict) and leaf.get("@class") == "np.ndarray":
            return np.asarray(leaf["value"], dtype=np.dtype(leaf["dtype"]))
        return np.asarray(leaf)

    with open(path, encoding="utf-8") as f:
        return _map_variables(read_yaml(f, str(path)), load)


def write_deepmd_file(path: str | os.PathLike[str], tree: dict[str, Any]) -> Path:
    """Write ``tree`` (arrays as numpy arrays) as ``.dp`` or ``.yaml``, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in DEEPMD_SUFFIXES:
        raise ModelFileError(f"{path}: DeePMD-kit model files end in {', '.join(DEEPMD_SUFFIXES)}")
    with atomic_path(path) as tmp:
        if suffix == ".dp":
            _write_dp(Path(tmp), tree)
        else:
            _write_yaml(Path(tmp), tree)
    return path


def _write_dp(path: Path, tree: dict[str, Any]) -> None:
    with h5py.File(path, "w") as f:
        count = iter(range(1 << 30))

        def store(array: Any) -> str:
            return f.create_dataset(f"variable_{next(count):04d}", data=np.asarray(array)).name

        f.attrs["json"] = json.dumps(_map_variables(tree, store), separators=(",", ":"))


def _write_yaml(path: Path, tree: dict[str, Any]) -> None:
    def inline(array: Any) -> dict[str, Any]:
        array = np.asarray(array)
        return {"@class": "np.ndarray", "@is_variable": True, "@version": 1, "dtype": array.dtype.name,
                "value": array.tolist()}

    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(_map_variables(tree, inline), f)
