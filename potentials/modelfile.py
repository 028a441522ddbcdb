"""Model files (``*.nnp``): weights, full config, statistics, version and provenance in one file.

The file is a ``torch.save`` archive holding only tensors, strings and numbers, and it is
read with ``torch.load(weights_only=True)``, which refuses to unpickle arbitrary objects: a
crafted file cannot run code on load.
"""

from __future__ import annotations

import json
import os
import pickle
import platform
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from nnpot.atomic import atomic_path
from nnpot.errors import ModelFileError
from nnpot.potentials.config import ModelConfig, from_dict
from nnpot.potentials.model import EnergyModel

__all__ = ["save_model", "load_model", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "nnpot-model"
FORMAT_VERSION = 1


def save_model(model: EnergyModel, path: str | os.PathLike[str], provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` atomically."""
    from nnpot import __version__

    if model.is_tabulated:
        raise ValueError("a tabulated model is derived at load time; save the exact model it was made from")
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "nnpot_version": __version__,
        "config": model.config.to_dict(),
        "type_map": model.type_map,
        "cutoff": model.cutoff,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "provenance": provenance or {},
    }
    payload = {
        "meta_json": json.dumps(meta),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_meta(path: str | os.PathLike[str]) -> tuple[dict, dict]:
    """``(meta, state_dict)`` of a model file, checked for format and version."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelFileError(f"{path}: refused to load: the file is truncated or holds objects other than "
                             "tensors and plain values (nnpot never unpickles code)") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable nnpot model file (truncated or corrupt?): {exc}") from None
    if not isinstance(payload, dict) or "meta_json" not in payload or "state_dict" not in payload:
        raise ModelFileError(f"{path}: not an nnpot model file (no meta_json/state_dict)")
    try:
        meta = json.loads(payload["meta_json"])
    except (TypeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: model metadata is not valid JSON: {exc}") from None
    if meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} (written by nnpot {meta.get('nnpot_version', '?')}) "
            f"is not supported; this nnpot reads version {FORMAT_VERSION}"
        )
    return meta, payload["state_dict"]


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> EnergyModel:
    """Load a model file; optionally move it to ``device`` and cast it to ``dtype``."""
    meta, state = read_meta(path)
    config = from_dict(ModelConfig, meta["config"])
    model = EnergyModel(config)
    try:
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) if k in model.state_dict() else v
                               for k, v in state.items()})
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match the stored config: {exc}") from None
    model.meta = meta
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.eval()
