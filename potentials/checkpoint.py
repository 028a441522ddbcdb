"""Training checkpoints: written atomically, verified on load, the newest good one wins.

A checkpoint holds the model and EMA weights, optimizer state, step, epoch and position in
the epoch's frame order, elapsed wall time, the best validation score, and the torch RNG
state: everything a resumed run needs to continue as if it had never stopped. It holds only
tensors and plain Python values and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import torch

from nnpot.atomic import atomic_path

__all__ = ["save_checkpoint", "latest_checkpoint", "list_checkpoints"]

log = logging.getLogger(__name__)


def _path(folder: Path, step: int) -> Path:
    return folder / f"ckpt-{step:09d}.pt"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoint files in ``folder``, oldest first."""
    return sorted(Path(folder).glob("ckpt-*.pt"))


def save_checkpoint(folder: str | Path, state: dict, keep: int = 3) -> Path:
    """Write ``state`` (must hold ``"step"``) atomically; keep the newest ``keep`` files."""
    folder = Path(folder)
    path = _path(folder, int(state["step"]))
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
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
