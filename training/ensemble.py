"""Training an ensemble: ``N`` members that differ in their initial weights and data order.

Member ``k`` is an ordinary training run in ``OUT/member_k`` with ``seed + k`` (data order,
statistics sample) and ``model.seed + k`` (initial weights); the validation split
(``split_seed``) is the same for all, so their errors compare. ``OUT/ensemble.json`` names the
members once all have finished (:mod:`nnpot.potentials.ensemble`). A resumed ensemble skips
finished members and resumes the one that was interrupted. With ``bootstrap`` each member also
trains on its own seeded resample of the training frames (bagging).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from nnpot.atomic import atomic_path
from nnpot.errors import ConfigError
from nnpot.potentials.modelfile import MANIFEST, write_manifest
from nnpot.training.config import TrainConfig
from nnpot.training.trainer import Trainer, TrainingError

__all__ = ["train_ensemble", "member_config", "is_ensemble_run", "PLAN"]

PLAN = "ensemble_plan.json"  #: the member count, written when an ensemble run starts


def is_ensemble_run(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds an ensemble run (finished or not)."""
    return (Path(folder) / PLAN).is_file()


def _planned_members(plan: Path) -> int:
    try:
        n = json.loads(plan.read_text())["members"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{plan}: unreadable ensemble plan ({type(exc).__name__}: {exc}); the run cannot be "
                          "resumed") from None
    if not isinstance(n, int) or isinstance(n, bool):
        raise ConfigError(f"{plan}: 'members' must be an integer, got {n!r}")
    return n


def member_config(config: TrainConfig, k: int) -> TrainConfig:
    """Member ``k``'s config: seeds shifted by ``k``."""
    c = copy.deepcopy(config)
    c.seed += k
    c.model.seed += k
    return c


def train_ensemble(config: TrainConfig, out: str | os.PathLike[str], n: int, resume: bool = False,
                   progress: bool = True, force: bool = False,
                   init_models: list[str | os.PathLike[str]] | None = None) -> Path:
    """Train ``n`` members into ``out/member_k`` one after the other; returns ``out`` (an
    ensemble folder that :func:`~nnpot.potentials.modelfile.load_model` reads). ``resume``
    takes the member count from the run's plan. ``init_models``: member ``k`` fine-tunes
    ``init_models[k]`` (the previous ensemble's members)."""
    out = Path(out)
    plan = out / PLAN
    if resume:
        n = _planned_members(plan) if plan.is_file() else n
    elif (plan.is_file() or (out / MANIFEST).is_file()) and not force:
        raise TrainingError(f"{out}: already holds an ensemble; continue it with --resume {out}, or give --force "
                            "to replace it, or choose another --out")
    if n < 2:
        raise ConfigError(f"an ensemble needs at least 2 members, got {n}")
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(plan) as tmp:
            tmp.write_text(json.dumps({"members": n}))
    models = []
    for k in range(n):
        folder = out / f"member_{k}"
        models.append(folder / "model.nnp")
        if resume and (folder / "final_metrics.json").is_file() and models[-1].is_file():
            continue  # finished before the interruption
        again = resume and (folder / "checkpoints").is_dir()
        if progress:
            print(f"ensemble member {k + 1}/{n} -> {folder}", flush=True)
        c = member_config(config, k)
        if init_models is not None:
            c.init_model = str(init_models[k])
        trainer = Trainer(c, folder, resume=again, progress=progress, force=force)
        trainer.run()
        if not trainer.dist.main:
            return out
    write_manifest(out, models)
    return out
