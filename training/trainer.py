"""The training loop behind ``nnpot train``.

Adam on ``loss = p_e dE^2 / N^k + p_f mean(dF^2) + p_v mean(dW^2) / N^k`` (``k`` 1 by default,
as in DeePMD-kit; :class:`~nnpot.potentials.config.LossConfig`) with DeePMD-kit's
exponential learning-rate decay and prefactor schedule (Wang et al., Comput. Phys. Commun. 228,
178 (2018)). The decay runs over ``num_steps`` or over the wall-clock budget ``max_time``,
whichever is nearer, so a time-limited run still ends at ``stop_lr``. ``weight_decay`` makes
it AdamW; ``optimizer: lkf`` replaces Adam by the layer-wise Kalman filter of
:mod:`nnpot.training.kalman`.

Outputs in the run folder: ``model.nnp`` (final), ``best.nnp`` (best validation score),
``checkpoints/``, ``config.yaml`` (resolved), ``valid.jsonl`` (one line per validation) and
``learning_curve.png``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from nnpot.atomic import atomic_path
from nnpot.data.convert import split_indices
from nnpot.data.h5format import open_datasets
from nnpot.errors import NNPotError
from nnpot.potentials.batch import NeighborCache, make_batch
from nnpot.potentials.derivatives import derivatives
from nnpot.potentials.evaluator import predict, resolve_device
from nnpot.potentials.model import EnergyModel
from nnpot.potentials.modelfile import latest_checkpoint, load_model, save_checkpoint, save_model
from nnpot.potentials.neighbors import neighbor_pairs
from nnpot.potentials.stats import apply_stats
from nnpot.training.auto_config import resolve_model_config
from nnpot.training.bias import energy_bias_shift
from nnpot.training.config import TrainConfig
from nnpot.training.distributed import BucketedAllReduce, average_gradients, init_distributed
from nnpot.training.kalman import LayerwiseKalman
from nnpot.training.metrics import error_metrics
from nnpot.training.plots import plot_learning_curve

__all__ = ["Trainer", "TrainingError", "ema_decay", "learning_rate", "decay_ratio", "prefactor"]

log = logging.getLogger(__name__)


class TrainingError(NNPotError, RuntimeError):
    """Training cannot go on (non-finite loss, unusable data)."""


def decay_ratio(config: TrainConfig, progress: float) -> float:
    """The decayed share of ``start_lr`` at ``progress`` in [0, 1], from 1 down to the floor
    ``stop / start_lr``: ``(stop/start_lr)^progress`` (``lr_schedule: exp``) or ``floor + (1 -
    floor) (1 + cos(pi progress)) / 2`` (``cosine``). ``stop`` is ``stop_lr``, or ``max(stop_lr,
    budget_stop_lr)`` when a ``max_time`` budget sets the pace of the decay. The decay runs over
    the part of the run after the warm-up."""
    stop = max(config.stop_lr, config.budget_stop_lr) if config.max_time else config.stop_lr
    floor = min(stop / config.start_lr, 1.0)
    w = config.warmup
    p = min(max((progress - w) / (1.0 - w), 0.0), 1.0)
    if config.lr_schedule == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))
    return floor ** p


def learning_rate(config: TrainConfig, progress: float) -> float:
    """``start_lr * warm-up * decay_ratio``, progress in [0, 1] (share of the steps or of the
    budget): the lr rises linearly from 0 over the first ``warmup`` share, then decays."""
    p = min(max(progress, 0.0), 1.0)
    warm = min(1.0, p / config.warmup) if config.warmup > 0 else 1.0
    return config.start_lr * warm * decay_ratio(config, p)


def ema_decay(decay: float, step: int) -> float:
    """The decay of the weight average at update ``step`` (0-based): ``min(decay, (1 + step) /
    (10 + step))``. The warm-up keeps the average from holding the initial weights for
    ``1 / (1 - decay)`` steps; after it the average spans the last ``1 / (1 - decay)`` steps."""
    return min(decay, (1 + step) / (10 + step))


def prefactor(start: float, limit: float, lr: float, start_lr: float) -> float:
    """DeePMD-kit's prefactor schedule: ``limit + (start - limit) * lr / start_lr``."""
    return limit + (start - limit) * lr / start_lr


#: what a training run writes into its folder (and a fresh run with ``force`` replaces)
RUN_OUTPUTS = ("config.yaml", "valid.jsonl", "model.nnp", "best.nnp", "final_metrics.json", "learning_curve.png",
               "checkpoints")
FINAL_REFIT_FRAMES = 4096  #: training frames at most in the energy-bias re-fit before a model is saved
TIME_CADENCE = 0.05  #: a time-budgeted run validates and checkpoints at least this often (share of the budget)
FINAL_SHARE = 0.2  #: the final re-fit and validation take at most this share of a time budget
UNDERTRAINED_RATIO = 0.5  #: a final force RMSE above this share of the labels' spread is named undertrained
UNDERTRAINED_STEPS = 500  #: and so is a run that ends with fewer steps
ESTIMATE_AFTER_S = 15.0  #: a time-budgeted run times its steps this long, then prints the steps to expect


class Trainer:
    """Trains an :class:`EnergyModel` as ``config`` says, writing into ``out_dir``.

    A fresh run into a folder that already holds a run is refused unless ``force`` is given;
    then the earlier run's files (:data:`RUN_OUTPUTS`) are replaced, but only once the first
    training step has succeeded, so a run that fails before leaves them as they were.
    """

    def __init__(self, config: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
                 force: bool = False):
        self.config = config.validate()
        self.out = Path(out_dir)
        self.progress = progress
        self._claimed = resume  # a resumed run owns its folder already
        self._force = force
        if not resume:
            self._check_out_dir()
        if config.threads:
            torch.set_num_threads(config.threads)
        self.dist, self.device = init_distributed(resolve_device(config.device))
        self._load_data()
        self._init_model = None
        if config.init_model and not resume:  # fine-tuning: the starting model's architecture and weights

            self._init_model = load_model(config.init_model)
            self.config.model = copy.deepcopy(self._init_model.config)
        self.config.model, self.resolved = resolve_model_config(
            self.config.model, _parts(self.train_ds), _parts(self.valid_ds) if self.valid_ds is not self.train_ds else (),
            seed=self.config.seed)
        self.neighbor_cache = NeighborCache()  # training frames keep their neighbor lists
        self.model = EnergyModel(self.config.model).to(self.device)
        self.bucketed = BucketedAllReduce(self.model.parameters(), self.dist) if config.grad_sync == "bucketed" else None
        self.optimizer = self._make_optimizer()
        self.ema = None
        self.state = {"step": 0, "epoch": 0, "pos": 0, "elapsed": 0.0, "best": math.inf, "stale": 0,
                      "valid_t": 0.0, "save_t": 0.0, "valid_s_per_frame": 0.0}
        self.final_metrics: dict | None = None
        found = latest_checkpoint(self.out / "checkpoints") if resume else None
        if resume and found is None:
            raise TrainingError(f"{self.out}: nothing to resume (no readable checkpoint in checkpoints/)")
        if found is not None:
            self._restore(*found)
        else:
            self._initialise()

    # --- set-up ---------------------------------------------------------------------------

    def _make_optimizer(self) -> torch.optim.Optimizer | LayerwiseKalman:
        c = self.config
        if c.optimizer == "lkf":
            if self.dist.world > 1:
                raise TrainingError("optimizer: lkf runs in one process; use adam for data-parallel training")
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            try:  # half the free memory at most: the checkpoint writes it out again
                return LayerwiseKalman(self.model.parameters(), c.kalman_block, c.kalman_lambda, c.kalman_nue,
                                       max_bytes=available // 2)
            except MemoryError as exc:
                raise TrainingError(f"optimizer: lkf: {exc}") from None
        if c.weight_decay > 0:
            return torch.optim.AdamW(self.model.parameters(), lr=c.start_lr, weight_decay=c.weight_decay)
        return torch.optim.Adam(self.model.parameters(), lr=c.start_lr)

    def _load_data(self) -> None:
        c = self.config
        self.train_ds = open_datasets(c.data).check()  # bad frames are refused before step 0
        self.train_atoms = self.train_ds.n_atoms
        if c.valid_data:
            self.valid_ds = open_datasets(c.valid_data).check()
            self.train_idx = np.arange(len(self.train_ds))
            self.valid_idx = np.arange(len(self.valid_ds))
        else:
            if len(self.train_ds) < 2:
                raise TrainingError(f"{self.train_ds.path}: need at least 2 frames to split off validation")
            self.train_idx, self.valid_idx = (np.sort(p) for p in split_indices(
                len(self.train_ds), [1 - c.valid_fraction, c.valid_fraction], c.split_seed))
            self.valid_ds = self.train_ds
        if len(self.valid_idx) == 0:
            where = (", ".join(c.valid_data) if c.valid_data
                     else f"{self.train_ds.path} (valid_fraction {c.valid_fraction} of {len(self.train_ds)} frames)")
            raise TrainingError(f"{where}: no validation frames; give --valid-data or raise valid_fraction")
        if len(self.train_idx) == 0:
            raise TrainingError(f"{self.train_ds.path}: no training frames left after the validation split")
        if c.bootstrap:  # bagging: a seeded resample, duplicates and all
            self.train_idx = np.sort(np.random.default_rng([c.seed, 7]).choice(self.train_idx, len(self.train_idx)))
        rng = np.random.default_rng(c.seed)
        self.valid_subset = np.sort(rng.permutation(self.valid_idx)[: c.valid_frames])
        self._order: tuple[int, np.ndarray] | None = None  #: (epoch, its permutation of train_idx)

    def _stat_sample(self) -> np.ndarray:
        """The training frames that set the statistics and the energy bias (seeded)."""
        rng = np.random.default_rng(self.config.seed)
        return np.sort(rng.permutation(self.train_idx)[: self.config.stat_frames])

    def _initialise(self) -> None:
        c = self.config
        sample = self._stat_sample()
        frames = [self.train_ds[int(i)] for i in sample]
        self._report_overlaps(frames, sample)
        self.model.cpu()
        if self._init_model is not None:
            self.model.load_state_dict(self._init_model.state_dict())
        else:
            apply_stats(self.model, frames, np.array([f.energy for f in frames]))
        self.model.to(self.device)
        if c.ema_decay:
            self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _check_out_dir(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise TrainingError(f"{self.out}: exists and is not a folder; choose another --out")
        found = [name for name in RUN_OUTPUTS if (self.out / name).exists()]
        if found and not self._force:
            raise TrainingError(f"{self.out}: already holds a training run ({', '.join(found)}); continue it with "
                                f"--resume {self.out}, or start a new run in another --out folder (or with --force, "
                                "which replaces that run's files)")

    def _claim(self) -> None:
        """Before the first file of a fresh run is written: replace an earlier run's outputs
        (only with ``force``; checked at start) and write the resolved config."""
        if self._claimed or not self.dist.main:
            return


        self.out.mkdir(parents=True, exist_ok=True)
        for name in RUN_OUTPUTS:
            path = self.out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        with atomic_path(self.out / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        self._claimed = True

    def _report_overlaps(self, frames, indices) -> None:
        thr = self.config.overlap_threshold
        for f, idx in zip(frames, indices):
            i, j, s = neighbor_pairs(torch.as_tensor(f.positions), torch.as_tensor(f.cell), torch.as_tensor(f.pbc), thr)
            if len(i):
                log.warning("training frame %d has atoms %d and %d closer than %.2f A", idx, int(i[0]), int(j[0]), thr)

    def _restore(self, state: dict, path: Path) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainingError(f"{path}: the checkpoint does not match the run's config.yaml (edited since?): "
                                f"{str(exc).splitlines()[0]}") from None
        self.ema = state.get("ema")
        self.state = {**self.state, **state["loop"]}
        torch.set_rng_state(state["torch_rng"])
        self._forget_after(self.state["step"])
        log.info("resumed from %s at step %d", path, self.state["step"])

    def _forget_after(self, step: int) -> None:
        """Drop the validation rows logged after the checkpoint being resumed: the resumed run
        logs those steps again, so ``valid.jsonl`` holds each step once."""
        log_path = self.out / "valid.jsonl"
        if not self.dist.main or not log_path.is_file():
            return
        rows = [line for line in log_path.read_text().splitlines() if line.strip()]
        keep = [line for line in rows if json.loads(line).get("step", 0) <= step]
        if len(keep) != len(rows):
            with atomic_path(log_path) as tmp:
                tmp.write_text("".join(line + "\n" for line in keep))

    def _checkpoint(self) -> None:
        if not self.dist.main:
            return
        self._claim()
        save_checkpoint(self.out / "checkpoints", {
            "step": self.state["step"],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema,
            "loop": dict(self.state),
            "torch_rng": torch.get_rng_state(),
            "config_json": json.dumps(self.config.to_dict()),
        }, keep=self.config.keep_checkpoints)

    # --- the loop -------------------------------------------------------------------------

    def _progress(self) -> float:
        c, s = self.config, self.state
        p = s["step"] / c.num_steps
        budget = self._training_budget()
        if budget is not None:
            p = max(p, s["elapsed"] / budget)
        return p

    def _final_frames(self) -> tuple[int, int]:
        """How many training frames the final energy re-fit and how many validation frames the
        final validation take: all (up to :data:`FINAL_REFIT_FRAMES`), unless a time budget
        cannot hold them at the measured evaluation speed (then as many as fit in
        :data:`FINAL_SHARE` of it; the re-fit runs energies only, about half a validation's cost)."""
        c = self.config
        refit = min(len(self.train_idx), FINAL_REFIT_FRAMES) if c.bias_refit_frames else 0
        valid = len(self.valid_idx)
        budget, per_frame = c.max_seconds(), self.state["valid_s_per_frame"]
        if budget is None or per_frame <= 0:
            return refit, valid
        room = FINAL_SHARE * budget / per_frame  # validation frames' worth of time
        if valid + refit / 2 > room:
            valid = max(min(valid, c.valid_frames), min(valid, int(room * 2 / 3)))
            refit = max(min(refit, c.bias_refit_frames), min(refit, int(2 * (room - valid))))
        return refit, valid

    def _reserve(self) -> float:
        """Seconds the final phase is expected to take (re-fit, validation, save), measured."""
        refit, valid = self._final_frames()
        return 1.2 * self.state["valid_s_per_frame"] * (valid + refit / 2) + 1.0  # 20% spare: speed varies

    def _training_budget(self) -> float | None:
        """The seconds of a time budget left to training steps once the final phase is reserved."""
        budget = self.config.max_seconds()
        return None if budget is None else max(0.5 * budget, budget - self._reserve())

    def _due(self, freq: int, last_key: str, cost: float = 0.0) -> bool:
        """Every ``freq`` steps, and in a time-budgeted run also every :data:`TIME_CADENCE` of it
        (but never so often that work costing ``cost`` seconds takes over a fifth of the time)."""
        s, budget = self.state, self.config.max_seconds()
        if s["step"] % freq == 0:
            return True
        return budget is not None and s["elapsed"] - s[last_key] >= max(TIME_CADENCE * budget, 4 * cost)

    def _next_frame(self) -> int:
        """The next training frame in this epoch's seeded order (moving to the next epoch)."""
        c, s = self.config, self.state
        while True:
            if self._order is None or self._order[0] != s["epoch"]:  # one permutation per epoch
                self._order = (s["epoch"], np.random.default_rng([c.seed, s["epoch"]]).permutation(self.train_idx))
            order = self._order[1]
            if s["pos"] < len(order):
                s["pos"] += 1
                return int(order[s["pos"] - 1])
            s["epoch"] += 1
            s["pos"] = 0

    def _next_frames(self) -> list[int]:
        """This rank's frames of the next global batch: ``batch_size`` frames per rank, or with
        ``batch_atoms`` as many consecutive frames as fit in that many atoms (at least one).
        Every rank draws the whole global batch, so the data order is the same for any rank."""
        c, s = self.config, self.state
        per_rank: list[list[int]] = []
        for _ in range(self.dist.world):
            picked, atoms = [], 0
            while True:
                if c.batch_atoms <= 0 and len(picked) == c.batch_size:
                    break
                mark = (s["epoch"], s["pos"])
                frame = self._next_frame()
                n = int(self.train_atoms[frame])
                if c.batch_atoms > 0 and picked and atoms + n > c.batch_atoms:
                    s["epoch"], s["pos"] = mark  # leave it for the next batch
                    break
                picked.append(frame)
                atoms += n
            per_rank.append(picked)
        return per_rank[self.dist.rank]

    def _training_frames(self, indices: list[int]) -> tuple[list, Callable[[], dict], tuple[torch.Tensor, ...]]:
        """The training frames ``indices``, a function that evaluates the model on them with the
        graph kept (energies, forces, virials) and their atom counts, energies and forces."""
        model = self.model
        frames = [self.train_ds[i] for i in indices]
        tensor = lambda x: torch.as_tensor(np.asarray(x), dtype=model.dtype, device=self.device)  # noqa: E731

        def forward() -> dict:
            batch = make_batch(frames, model.type_map, model.cutoff, model.sel, device=self.device, dtype=model.dtype,
                               tight=True, cache=self.neighbor_cache, keys=indices)
            return derivatives(model, batch, create_graph=True)

        refs = (tensor([f.n_atoms for f in frames]), tensor([f.energy for f in frames]),
                tensor(np.concatenate([f.forces for f in frames])))
        return frames, forward, refs

    def loss(self, indices: list[int], lr: float) -> tuple[torch.Tensor, dict]:
        """The loss of the frames ``indices`` and its parts, with the prefactors at learning rate
        ``lr`` (the decayed rate, before any warm-up factor: :func:`decay_ratio` times start_lr)."""
        c, lc = self.config, self.config.loss
        frames, forward, (n, e_ref, f_ref) = self._training_frames(indices)
        out = forward()
        norm_exp = lc.energy_norm_exp
        de = out["energy"] - e_ref
        l_e = (de ** 2 / n ** norm_exp).mean()
        l_f = ((out["forces"] - f_ref) ** 2).mean()
        pe = prefactor(lc.start_pref_e, lc.limit_pref_e, lr, c.start_lr)
        pf = prefactor(lc.start_pref_f, lc.limit_pref_f, lr, c.start_lr)
        loss = pe * l_e + pf * l_f
        parts = {"rmse_e": float(((de.detach() / n) ** 2).mean().sqrt()), "rmse_f": float(l_f.detach().sqrt())}
        pv = prefactor(lc.start_pref_v, lc.limit_pref_v, lr, c.start_lr)
        with_virial = [k for k, f in enumerate(frames) if f.virial is not None]
        if pv > 0 and with_virial:
            v_ref = torch.as_tensor(np.stack([frames[k].virial for k in with_virial]), dtype=n.dtype, device=n.device)
            dw = out["virial"][with_virial] - v_ref
            n_v = n[with_virial, None, None]
            loss = loss + pv * (dw ** 2 / n_v ** norm_exp).mean()
            parts["rmse_v"] = float(((dw.detach() / n_v) ** 2).mean().sqrt())
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the loss became {float(loss.detach())} at step {self.state['step']} on training frame(s) {indices} of "
                f"{self.train_ds.path}; check those frames (nnpot data info) or lower start_lr"
            )
        return loss, parts

    def _kalman_step(self, indices: list[int]) -> dict:
        """One step of the Kalman filter: an update on the frames' energies per atom, then one per
        group of 6 atoms' forces (``kalman_force_atoms`` random atoms), each on the weights the
        previous one left. Each measurement is sign-flipped so that its error is positive, and
        the force measurements are scaled by ``kalman_force_weight``: their noise is the
        filter's ``lambda`` over its square."""
        kf = self.optimizer
        _, forward, (n, e_ref, f_ref) = self._training_frames(indices)

        def update(pred: torch.Tensor, ref: torch.Tensor, weight: float = 1.0) -> None:
            sign = weight * torch.sign(ref - pred.detach())
            error = float((sign * (ref - pred.detach())).mean())
            if not math.isfinite(error):
                raise TrainingError(f"the error became {error} at step {self.state['step']} on training frame(s) "
                                    f"{indices} of {self.train_ds.path}; check those frames (nnpot data info)")
            (sign * pred).mean().backward()
            kf.step(error)

        kf.zero_grad()
        out = forward()
        parts = {"rmse_e": float((((out["energy"].detach() - e_ref) / n) ** 2).mean().sqrt()),
                 "rmse_f": float(((out["forces"].detach() - f_ref) ** 2).mean().sqrt())}
        update(out["energy"] / n, e_ref / n)
        picked = torch.randperm(len(f_ref))[: self.config.kalman_force_atoms]
        for group in picked.split(6):
            kf.zero_grad()
            update(forward()["forces"][group], f_ref[group], self.config.kalman_force_weight)
        kf.zero_grad()
        return {"loss": parts["rmse_e"] ** 2 + parts["rmse_f"] ** 2, "lr": 0.0, **parts}

    def step(self) -> dict:
        c = self.config
        if c.optimizer == "lkf":
            out = self._kalman_step(self._next_frames())
            self._update_ema()
            self.state["step"] += 1
            return out
        lr = learning_rate(c, self._progress())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        indices = self._next_frames()
        self.optimizer.zero_grad(set_to_none=True)
        # the prefactors follow the decay, not the warm-up
        decayed = c.start_lr * decay_ratio(c, self._progress()) if c.warmup > 0 else lr
        loss, parts = self.loss(indices, decayed)
        loss.backward()
        if self.bucketed is not None:
            self.bucketed.finish()
        else:
            average_gradients(self.model.parameters(), self.dist)
        if c.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.optimizer.step()
        self._update_ema()
        self.state["step"] += 1
        return {"loss": float(loss.detach()), "lr": lr, **parts}

    def _update_ema(self) -> None:
        if self.ema is None:
            return
        decay = ema_decay(self.config.ema_decay, self.state["step"])
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                if v.dtype.is_floating_point:
                    self.ema[k].mul_(decay).add_(v, alpha=1 - decay)

    @torch.no_grad()
    def refit_energy_bias(self, final: bool = False) -> np.ndarray:
        """Shift the per-element energy bias by the least-squares fit of the energy residuals
        on ``bias_refit_frames`` training frames, or with ``final`` on every training frame up to
        :data:`FINAL_REFIT_FRAMES` (fewer where a time budget cannot hold them:
        :meth:`_final_frames`); DeePMD-kit's ``dp change-bias``, in closed form. Forces do
        not see a constant per-element shift, so under a force-dominated loss the offset drifts;
        this pins it again and changes no force. Returns the shift (eV per element)."""
        n = self.config.bias_refit_frames
        if n == 0:
            return np.zeros(len(self.model.type_map))
        rng = np.random.default_rng(self.config.seed)  # the same frames every time
        sample = rng.permutation(self.train_idx)[: max(n, self._final_frames()[0]) if final else n]
        frames = [self.train_ds[int(i)] for i in np.sort(sample)]
        delta = energy_bias_shift(self._eval_model(), frames, batch_size=max(1, self.config.batch_size),
                                  progress=final and self.progress)
        shift = torch.as_tensor(delta, dtype=self.model.dtype, device=self.device)
        self.model.energy_bias.add_(shift)
        if self.ema is not None:
            self.ema["energy_bias"].add_(shift.to(self.ema["energy_bias"]))
        return delta

    def _eval_model(self) -> EnergyModel:
        if self.ema is None:
            return self.model
        shadow = EnergyModel(self.config.model).to(self.device)
        shadow.load_state_dict(self.ema)
        return shadow

    def validate(self, indices: Sequence[int] | None = None, progress: bool = False) -> dict:
        """Validation metrics of the current (EMA) weights on ``indices`` (default: the subset)."""
        idx = self.valid_subset if indices is None else indices
        model = self._eval_model()
        t0 = time.perf_counter()
        pred = predict(model, [self.valid_ds[int(i)] for i in idx], batch_size=max(1, self.config.batch_size),
                       progress=progress and self.progress, desc="final validation")
        if len(idx):
            self.state["valid_s_per_frame"] = (time.perf_counter() - t0) / len(idx)
        metrics = error_metrics(pred)
        lc = self.config.loss
        metrics["score"] = lc.limit_pref_e * metrics["energy_rmse_per_atom"] ** 2 + lc.limit_pref_f * metrics["force_rmse"] ** 2
        return metrics

    def _log_validation(self, metrics: dict, train: dict) -> None:
        s = self.state
        if not self.dist.main:  # every rank tracks the best score, so early stopping agrees
            s["stale"] = 0 if metrics["score"] < s["best"] else s["stale"] + 1
            s["best"] = min(s["best"], metrics["score"])
            return
        self._claim()
        row = {"step": s["step"], "time": round(s["elapsed"], 2), "lr": train.get("lr"), "train_loss": train.get("loss"),
               **{k: v for k, v in metrics.items() if not isinstance(v, dict)}}
        with open(self.out / "valid.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if metrics["score"] < s["best"]:
            s["best"] = metrics["score"]
            s["stale"] = 0
            save_model(self._eval_model(), self.out / "best.nnp", provenance=self._provenance(metrics))
        else:
            s["stale"] += 1

    def _provenance(self, metrics: dict | None = None) -> dict:
        return {"data": [str(Path(p).resolve()) for p in self.config.data], "step": self.state["step"],
                "elapsed_s": round(self.state["elapsed"], 1), "validation": metrics or {},
                "train_config": self.config.to_dict()}

    def _done(self) -> bool:
        c, s = self.config, self.state
        budget = self._training_budget()
        if s["step"] >= c.num_steps or (budget is not None and s["elapsed"] >= budget):
            return True
        return bool(c.early_stop_patience and s["stale"] >= c.early_stop_patience)

    def run(self) -> Path:
        """Train until done; return the path of the final model."""
        c, s = self.config, self.state
        budget = c.max_seconds()  # a wall-clock budget: the bar counts its seconds, not num_steps
        total = round(budget) if budget is not None else c.num_steps
        fmt = "{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]" if budget is not None else None
        bar = tqdm(total=total, initial=min(round(s["elapsed"]), total) if budget is not None else s["step"], unit=" steps",
                   bar_format=fmt, disable=not self.progress, dynamic_ncols=True, desc="training")
        last = {}
        t0 = time.perf_counter() - s["elapsed"]
        start = (s["step"], s["elapsed"])
        try:
            while not self._done():
                last = self.step()
                s["elapsed"] = time.perf_counter() - t0
                if budget is not None and start is not None and s["elapsed"] - start[1] >= ESTIMATE_AFTER_S:
                    self._say_expected_steps(bar, start)
                    start = None
                bar.update(min(round(s["elapsed"]), bar.total) - bar.n if budget is not None else 1)
                bar.set_postfix(step=s["step"], loss=f"{last['loss']:.3g}", rmse_f=f"{last['rmse_f']:.3f}",
                                lr=f"{last['lr']:.2e}", refresh=False)
                self._validate_and_save_when_due(last, t0)
        finally:
            bar.close()  # the line ends before any error message
        if s.get("finished") and not last:  # a finished run resumed again adds no row
            self.final_metrics = json.loads((self.out / "final_metrics.json").read_text())
        else:
            self._finish(last, t0)
        return self.out / "model.nnp"

    def _say_expected_steps(self, bar, start: tuple[int, float]) -> None:
        """After :data:`ESTIMATE_AFTER_S` of a time budget: the step rate here and the steps the
        budget will give (what a user compares with the result to expect)."""
        s = self.state
        rate = (s["step"] - start[0]) / (s["elapsed"] - start[1])
        expected = s["step"] + rate * (self._training_budget() - s["elapsed"])
        if self.progress and self.dist.main:
            bar.write(f"timed: {rate:.2f} steps/s on {torch.get_num_threads()} thread(s) here, so the "
                      f"{self.config.max_time} budget gives about {expected:,.0f} steps")

    def _validate_and_save_when_due(self, last: dict, t0: float) -> None:
        c, s = self.config, self.state
        if self._due(c.valid_freq, "valid_t", cost=s["valid_s_per_frame"] * len(self.valid_subset)):
            self.refit_energy_bias()
            self._log_validation(self.validate(), last)
            s["elapsed"] = time.perf_counter() - t0
            s["valid_t"] = s["elapsed"]
        if self._due(c.save_freq, "save_t"):
            s["save_t"] = s["elapsed"]
            self._checkpoint()

    def _finish(self, last: dict, t0: float) -> None:
        """The final phase: energy re-fit on the training frames, validation on every
        validation frame, the saved model, metrics and learning curve."""
        s = self.state
        self.refit_energy_bias(final=True)
        n_valid = self._final_frames()[1]
        idx = self.valid_idx if n_valid >= len(self.valid_idx) else np.sort(
            np.random.default_rng(self.config.seed).permutation(self.valid_idx)[:n_valid])
        final = self.validate(idx, progress=True)
        s["elapsed"] = time.perf_counter() - t0
        self._log_validation(final, last)
        s["finished"] = True
        self._checkpoint()
        self.final_metrics = final
        if self.dist.main:
            save_model(self._eval_model(), self.out / "model.nnp", provenance=self._provenance(final))
            with atomic_path(self.out / "final_metrics.json") as tmp:
                tmp.write_text(json.dumps(final, indent=2))
            plot_learning_curve(self.out / "valid.jsonl", self.out / "learning_curve.png")

    def undertrained(self) -> str | None:
        """A ``warning:`` line when the run ended far short of a useful model (too few steps, or
        a validation force error near the spread of the labels), else None."""
        m, steps = self.final_metrics, self.state["step"]
        if not m:
            return None
        rmse, spread = m["force_rmse"], m.get("force_label_std", math.nan)
        if not (rmse > UNDERTRAINED_RATIO * spread or steps < UNDERTRAINED_STEPS):
            return None
        threads = torch.get_num_threads()
        return (f"warning: the model is undertrained: {steps} steps, validation force RMSE {rmse * 1e3:.0f} meV/A "
                f"against a label spread of {spread * 1e3:.0f} meV/A. Train longer (a larger --max-time or num_steps), "
                f"on more cores (now {threads} thread(s): --set threads=N) or a GPU, before using it for MD")

def _parts(ds) -> list:
    """The datasets a (possibly united) dataset is made of."""
    return list(getattr(ds, "datasets", [ds]))
