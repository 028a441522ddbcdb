"""Model files (``*.nnp``): weights, full config, statistics, version and provenance in one file.

The file is a ``torch.save`` archive holding only tensors, strings and numbers, and it is
read with ``torch.load(weights_only=True)``, which refuses to unpickle arbitrary objects: a
crafted file cannot run code on load.

Training checkpoints (``ckpt-*.pt``) are written atomically, verified on load, and the newest
good one wins. A checkpoint holds the model and EMA weights, optimizer state, step, epoch and
position in the epoch's frame order, elapsed wall time, the best validation score, and the torch
RNG state: everything a resumed run needs to continue as if it had never stopped. It too holds
only tensors and plain Python values and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import platform
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch

from nnpot._version import __version__
from nnpot.atomic import atomic_path, disk_full
from nnpot.errors import ConfigError, ModelFileError
from nnpot.potentials.config import ModelConfig, from_dict
from nnpot.potentials.descriptors.base import config_keys
from nnpot.potentials.ensemble import EnsembleModel
from nnpot.potentials.model import EnergyModel

__all__ = ["save_model", "load_model", "ModelFormat", "MODEL_FORMATS", "register_model_format", "model_format", "is_ensemble", "load_ensemble", "write_manifest", "save_checkpoint", "latest_checkpoint", "list_checkpoints", "FORMAT_NAME", "FORMAT_VERSION", "MANIFEST"]

log = logging.getLogger(__name__)

FORMAT_NAME = "nnpot-model"
FORMAT_VERSION = 1
#: the file that makes a folder an ensemble model (:mod:`nnpot.potentials.ensemble`)
MANIFEST = "ensemble.json"
ENSEMBLE_FORMAT = "nnpot-ensemble"


def _save(payload: dict, path: Path) -> None:
    """``torch.save`` through :func:`~nnpot.atomic.atomic_path`; a full disk is an ``ENOSPC``
    error naming the file (torch reports it as a RuntimeError of its archive writer)."""
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:
            if disk_full(tmp.parent):
                raise OSError(errno.ENOSPC, "no space left on device (the previous file is kept)", str(path)) from None
            raise ModelFileError(f"{path}: could not be written ({str(exc).splitlines()[0]})") from None


def save_model(model: EnergyModel, path: str | os.PathLike[str], provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` atomically."""
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
    _save(payload, path)
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
    except Exception as exc:  # weights_only loading runs no code: anything it raises means a damaged file
        raise ModelFileError(f"{path}: not a readable nnpot model file (truncated or corrupt?): "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if (not isinstance(payload, dict) or not isinstance(payload.get("meta_json"), str)
            or not isinstance(payload.get("state_dict"), dict)):
        raise ModelFileError(f"{path}: not an nnpot model file (no meta_json/state_dict)")
    try:
        meta = json.loads(payload["meta_json"])
    except (TypeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: model metadata is not valid JSON: {exc}") from None
    except RecursionError:  # absurdly nested metadata
        raise ModelFileError(f"{path}: model metadata is nested too deeply to read (a crafted file?)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelFileError(f"{path}: format is {found!r}, expected {FORMAT_NAME!r}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} (written by nnpot {meta.get('nnpot_version', '?')}) "
            f"is not supported; this nnpot reads version {FORMAT_VERSION}"
        )
    return meta, payload["state_dict"]


def _current_config(config: dict) -> dict:
    """The stored config in today's layout: files written before descriptors had their own
    config classes hold every descriptor's fields in one section; keep those of its type."""
    desc = dict(config.get("descriptor") or {})
    keys = config_keys(str(desc.get("type", "se_e2_a")))
    return {**config, "descriptor": {k: v for k, v in desc.items() if k in keys}}


@dataclass(frozen=True)
class ModelFormat:
    """Another code's model file: ``read(path) -> EnergyModel`` and, where nnpot can write it,
    ``write(model, path)``. Registered by suffix with :func:`register_model_format`."""

    name: str
    read: Callable[[str | os.PathLike[str]], EnergyModel]
    write: Callable[[EnergyModel, str | os.PathLike[str]], Any] | None = None


#: other codes' model formats by suffix, filled by the packages that provide them (nnpot.interop
#: registers DeePMD-kit's .dp/.yaml); found through the ``nnpot.model_formats`` entry points
MODEL_FORMATS: dict[str, ModelFormat] = {}
_ENTRY_POINTS = "nnpot.model_formats"
_loaded_entry_points = False


def register_model_format(suffixes: Sequence[str], fmt: ModelFormat) -> None:
    """Make ``load_model`` (and ``nnpot convert``) read files ending in ``suffixes`` with ``fmt``."""
    for suffix in suffixes:
        MODEL_FORMATS[suffix.lower()] = fmt


def model_format(path: str | os.PathLike[str]) -> ModelFormat | None:
    """The registered format of ``path`` by its suffix (None: an nnpot file or unknown). The
    ``nnpot.model_formats`` entry points are loaded on first use, so a lower layer needs no
    import of the packages above it."""
    global _loaded_entry_points
    if not _loaded_entry_points:
        _loaded_entry_points = True
        for ep in entry_points(group=_ENTRY_POINTS):
            try:
                ep.load()()
            except Exception as exc:  # noqa: BLE001  (a broken plug-in must not stop nnpot's own files)
                log.warning("model format plug-in %s could not be loaded: %s", ep.name, exc)
    return MODEL_FORMATS.get(Path(path).suffix.lower())


def _plain_weight(value: Any, expected: torch.Tensor | None) -> bool:
    """A stored weight nnpot can load: a dense tensor on real memory (not meta, sparse or
    complex), of the expected kind (floating or integer), with finite values."""
    if not torch.is_tensor(value) or value.layout != torch.strided or value.is_meta or value.is_complex():
        return False
    if expected is not None and value.is_floating_point() != expected.is_floating_point():
        return False
    return not value.is_floating_point() or bool(value.isfinite().all())


def is_ensemble(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an ensemble folder (holds :data:`MANIFEST`)."""
    return (Path(path) / MANIFEST).is_file()


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> EnergyModel:
    """Load a model file (``.nnp``, or another code's registered in :data:`MODEL_FORMATS`:
    DeePMD-kit's ``.dp``/``.yaml``) or an ensemble folder (:mod:`nnpot.potentials.ensemble`);
    optionally move it to ``device`` and cast it to ``dtype``."""
    if is_ensemble(path):
        return load_ensemble(path, device=device, dtype=dtype)
    fmt = model_format(path)
    if fmt is not None:
        model = fmt.read(path).to(device=device)
        return (model if dtype is None else model.to(dtype=dtype)).eval()
    meta, state = read_meta(path)
    try:
        config = from_dict(ModelConfig, _current_config(meta["config"])).validate()
    except (ConfigError, KeyError, TypeError, AttributeError) as exc:
        raise ModelFileError(f"{path}: the stored model config is not usable: {exc}") from None
    model = EnergyModel(config)
    expected = model.state_dict()
    bad = [k for k, v in state.items() if not _plain_weight(v, expected.get(k))]
    if bad:
        raise ModelFileError(f"{path}: weight {bad[0]!r} is not a finite, dense tensor of the expected kind "
                             "(a damaged or crafted file?)")
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise ModelFileError(f"{path}: the weights do not match the stored config (a damaged or edited file?)")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    model.meta = meta
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.eval()


def write_manifest(folder: str | os.PathLike[str], members: Sequence[str | os.PathLike[str]]) -> Path:
    """Write ``folder/ensemble.json`` naming ``members`` (paths relative to ``folder``), atomically."""
    folder = Path(folder)
    rel = [os.path.relpath(Path(m).resolve(), folder.resolve()) for m in members]
    with atomic_path(folder / MANIFEST) as tmp:
        tmp.write_text(json.dumps({"format": ENSEMBLE_FORMAT, "members": rel}, indent=1))
    return folder / MANIFEST


def load_ensemble(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                  device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> EnsembleModel:
    """An ensemble from a folder with :data:`MANIFEST`, or from a list of model files."""
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            if manifest.get("format") != ENSEMBLE_FORMAT or not isinstance(manifest.get("members"), list):
                raise ValueError("not an nnpot ensemble manifest")
        except (OSError, ValueError, AttributeError) as exc:
            raise ModelFileError(f"{folder / MANIFEST}: unreadable ensemble manifest ({exc})") from None
        paths = [folder / m for m in manifest["members"]]
    else:
        paths = [Path(p) for p in source]
    return EnsembleModel([load_model(p, device=device, dtype=dtype) for p in paths]).eval()


def _checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"ckpt-{step:09d}.pt"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoint files in ``folder``, oldest first."""
    return sorted(Path(folder).glob("ckpt-*.pt"))


def save_checkpoint(folder: str | Path, state: dict, keep: int = 3) -> Path:
    """Write ``state`` (must hold ``"step"``) atomically; keep the newest ``keep`` files."""
    folder = Path(folder)
    path = _checkpoint_path(folder, int(state["step"]))
    _save(state, path)
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(folder: str | Path) -> tuple[dict, Path] | None:
    """The newest checkpoint that loads; corrupt or partial ones are reported and skipped."""
    for path in reversed(list_checkpoints(folder)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "step" not in state or "model" not in state:
                raise ValueError("not a checkpoint dictionary")
            return state, path
        except (RuntimeError, ValueError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
            log.warning("skipping unreadable checkpoint %s: %s", path, exc)
    return None
