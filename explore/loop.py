"""The active-learning loop of ``nnpot explore``: train an ensemble, explore with MD, select by
the ensemble's deviation, label, append, fine-tune, until the explored frames are accurate.

Everything lives in the ``out`` folder, and each stage's results are on disk before the next
stage starts, so a killed run resumes where it stopped (``state.json`` names the iteration and
stage)::

    out/dataset.h5                the training data: the starting file plus every labelled frame,
                                  each appended block with its provenance in the file's sources
    out/iter_000/ensemble/        the ensemble of iteration 0 (iteration k fine-tunes k-1's)
    out/iter_000/explored.extxyz  frames examined along the exploration MD, with max_devi_f
    out/iter_000/selection.json   trust-window fractions and the selected frames
    out/iter_000/labels/          one file per selected frame: its labels, or its error
    out/summary.json, summary.png fractions and validation error per iteration

A frame is labelled at most once: its label file is written (atomically) as soon as the
reference calculation returns, and labelling skips frames that have one.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
from ase import units
from ase.data import chemical_symbols
from ase.io import read, write
from tqdm import tqdm

from nnpot.atomic import atomic_path
from nnpot.data import H5Dataset
from nnpot.data.h5format import append_h5
from nnpot.data.readers import read_ase
from nnpot.errors import NNPotError
from nnpot.explore.config import ExploreConfig
from nnpot.explore.report import plot_summary
from nnpot.explore.selection import select
from nnpot.md import Replicas
from nnpot.md.driver import MDError
from nnpot.md.state import thermalize
from nnpot.outputs import read_manifest, same_file, write_manifest
from nnpot.potentials import load_model
from nnpot.potentials.evaluator import predict
from nnpot.training.config import load_train_config
from nnpot.training.ensemble import is_ensemble_run, train_ensemble
from nnpot.training.metrics import error_metrics

__all__ = ["Explorer", "STAGES"]

STAGES = ("train", "explore", "select", "label", "append", "done")


#: what an exploration writes into its out folder (beside the iteration folders)
OUTPUTS = ("state.json", "dataset.h5", "summary.json", "summary.png")
ITERATION = re.compile(r"iter_\d{3,}")


def _holds(folder: Path, path: Path) -> bool:
    """Whether ``path`` lies inside ``folder``."""
    try:
        return folder.is_dir() and path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _write_json(path: Path, value) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=1))


class Explorer:
    """Runs :class:`~nnpot.explore.config.ExploreConfig` in ``config.out`` (resumable)."""

    def __init__(self, config: ExploreConfig, progress: bool = True, resume: bool = False, force: bool = False):
        self.config = config.validate()
        self._check_inputs()
        self.out = Path(config.out)
        self.progress = progress
        state = self.out / "state.json"
        if not (resume and state.exists()):
            self._clear_earlier_run(force)
        self.out.mkdir(parents=True, exist_ok=True)
        if resume and state.exists():
            self.state = json.loads(state.read_text())
        else:
            write_manifest(self.out, OUTPUTS, "nnpot explore")
            shutil.copyfile(config.data, self.out / "dataset.h5")
            self.state = {"iteration": 0, "stage": "train", "summary": []}
            self._save_state()

    def _clear_earlier_run(self, force: bool) -> None:
        """Before a fresh start: the out folder may hold only an earlier exploration's own
        outputs (listed in its manifest), replaced with ``force``; the user's other files there
        stay, and no input of this run (``data``, structures, test data) may be among them."""
        if not self.out.is_dir():
            return
        ours = [p for p in self.out.iterdir() if p.name in OUTPUTS or ITERATION.fullmatch(p.name)]
        if not ours:
            return
        if not force:
            raise NNPotError(f"{self.out}: holds an exploration already ({', '.join(sorted(p.name for p in ours)[:4])}); "
                             "continue it with --resume, or give --force to start it again (its own files are "
                             "replaced, nothing else)")
        listed = set(read_manifest(self.out) or ())
        foreign = [p.name for p in ours if p.name not in listed]
        if foreign:
            raise NNPotError(f"{self.out}: {', '.join(sorted(foreign)[:4])} was not written by nnpot explore; --force "
                             "replaces only an exploration's own files: choose another out folder")
        c = self.config
        for source in [c.data, *c.structures, c.test_data, c.random_pool]:
            if source and any(same_file(p, source) or _holds(p, Path(source)) for p in ours):
                raise NNPotError(f"{source}: an input of this exploration lies among the earlier run's files in "
                                 f"{self.out}; copy it elsewhere first, or choose another out folder")
        for p in ours:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    def _check_inputs(self) -> None:
        """Every input readable and the labeller importable, before anything is written."""
        known = set(np.unique(H5Dataset(self.config.data).check().numbers()).tolist())
        for path in [*self.config.structures, *([self.config.random_pool] if self.config.random_pool else [])]:
            if not Path(path).is_file():
                raise NNPotError(f"{path}: no such structure file")
            try:
                images = _read_structures(path)
                if not images:
                    raise ValueError("no structure in it")
            except NNPotError:
                raise
            except Exception as exc:  # ASE's readers raise many kinds
                raise NNPotError(f"{path}: cannot read structures from it ({type(exc).__name__}: {exc})") from None
            unknown = {int(z) for a in images for z in a.numbers} - known
            if unknown:
                raise NNPotError(f"{path}: element(s) {', '.join(chemical_symbols[z] for z in sorted(unknown))} do not "
                                 f"occur in {self.config.data}; the models can only learn elements the data holds")
        if self.config.pressures_bar and not any(all(a.pbc) for path in self.config.structures
                                                 for a in _read_structures(path)):
            raise NNPotError("pressures_bar: NPT exploration needs a seed structure periodic in all three "
                             "directions; none of the structures is")
        if self.config.test_data:
            H5Dataset(self.config.test_data)
        self.config.labeller.factory()()  # imports the reference code and checks its settings

    def _save_state(self) -> None:
        _write_json(self.out / "state.json", self.state)

    def _say(self, text: str) -> None:
        if self.progress:
            print(f"[explore it {self.state['iteration']}] {text}", flush=True)

    def iteration_dir(self, k: int | None = None) -> Path:
        return self.out / f"iter_{self.state['iteration'] if k is None else k:03d}"

    # --- the loop ---------------------------------------------------------------------------

    def run(self, stop_after: str | None = None) -> dict:
        """Run stages until done (``stop_after``: return after that stage, as if killed)."""
        steps = {"train": self.train, "explore": self.explore, "select": self.select, "label": self.label,
                 "append": self.append}
        while self.state["stage"] != "done":
            stage = self.state["stage"]
            nxt = steps[stage]()
            self.state["stage"] = nxt
            if nxt == "train" and stage == "append":
                self.state["iteration"] += 1
            self._save_state()
            if stop_after == stage:
                break
        return self.state

    def train(self) -> str:
        c, k = self.config, self.state["iteration"]
        write_manifest(self.out, [self.iteration_dir().name], "nnpot explore")  # before its folder exists
        folder = self.iteration_dir() / "ensemble"
        overrides = [f"{key}={json.dumps(v)}" for key, v in c.train.items()]
        steps = c.finetune_steps if k else c.train_steps
        budget = {"num_steps": steps} if steps > 0 else {"max_time": c.finetune_time if k else c.train_time}
        start = {"start_lr": c.finetune_start_lr, "loss.start_pref_e": c.finetune_start_pref_e,
                 "loss.start_pref_f": c.finetune_start_pref_f} if k else {}
        overrides += [f"{key}={json.dumps(v)}" for key, v in start.items() if v is not None]
        config = load_train_config(None, overrides, {"data": [str(self.out / "dataset.h5")], **budget,
                                                     "device": c.device, "seed": c.seed + 100 * k})
        previous = None
        if k:
            prev = self.iteration_dir(k - 1) / "ensemble"
            previous = [prev / f"member_{m}" / "model.nnp" for m in range(c.ensemble)]
        self._say(f"training {c.ensemble} models ({'fine-tuning' if k else 'from scratch'}, "
                  f"{config.max_time or config.num_steps} {'each' if config.max_time else 'steps each'})")
        train_ensemble(config, folder, c.ensemble, resume=is_ensemble_run(folder), progress=self.progress,
                       init_models=previous)
        self._record({"iteration": k, **self._validation(folder)})
        return "explore"

    def _validation(self, folder: Path) -> dict:
        if not self.config.test_data:
            return {}

        model = load_model(folder)
        metrics = error_metrics(predict(model, list(H5Dataset(self.config.test_data))))
        self._say(f"test set: force RMSE {metrics['force_rmse'] * 1e3:.1f} meV/A, energy RMSE "
                  f"{metrics['energy_rmse_per_atom'] * 1e3:.2f} meV/atom")
        return {"test_force_rmse": metrics["force_rmse"], "test_energy_rmse_per_atom": metrics["energy_rmse_per_atom"],
                "train_frames": len(H5Dataset(self.out / "dataset.h5"))}

    def _record(self, row: dict) -> None:
        rows = [r for r in self.state["summary"] if r["iteration"] != row["iteration"]]
        old = next((r for r in self.state["summary"] if r["iteration"] == row["iteration"]), {})
        self.state["summary"] = sorted(rows + [{**old, **row}], key=lambda r: r["iteration"])
        _write_json(self.out / "summary.json", self.state["summary"])

        plot_summary(self.state["summary"], self.out / "summary.png")

    def explore(self) -> str:
        """MD of every seed structure at every temperature with the ensemble: Langevin NVT, and
        NPT at every ``pressures_bar`` for the seeds periodic in all three directions. Every
        ``sample_every`` steps each replica's frame and its ``max_devi_f`` are kept."""
        c, k = self.config, self.state["iteration"]
        seeds = [a for path in c.structures for a in _read_structures(path)]
        bulk = [s for s, a in enumerate(seeds) if all(a.pbc)]
        runs = [(None, range(len(seeds)))] if not c.pressures_bar else \
            [(None, [s for s in range(len(seeds)) if s not in bulk])] + [(p, bulk) for p in c.pressures_bar]
        resume_from = self._run_ends() if c.continue_runs and k else {}
        kept = []
        for t_index, temperature in enumerate(c.temperatures_K):
            for p_index, (pressure, members) in enumerate(runs):
                if not members:
                    continue
                images = []
                for r in range(c.replicas):
                    for s in members:
                        a = resume_from.get((temperature, pressure, len(images)), seeds[s]).copy()
                        a.info = {}
                        thermalize(a, temperature, np.random.default_rng([c.seed, k, t_index, r, s, p_index]))
                        images.append(a)
                if pressure is None:  # Langevin NVT
                    ensemble_kw = {"friction": c.friction_per_fs / units.fs, "seed": c.seed + 1000 * k + t_index}
                    where = f"{temperature:g} K"
                else:
                    ensemble_kw = {"pressure_au": pressure * units.bar, "taut": c.taut_fs * units.fs,
                                   "taup": c.taup_fs * units.fs, "compressibility_au": c.compressibility_per_bar / units.bar,
                                   "seed": c.seed + 1000 * k + 100 * p_index + t_index}
                    where = f"{temperature:g} K and {pressure:g} bar"
                dyn = Replicas(images, self.iteration_dir() / "ensemble", c.timestep_fs * units.fs,
                               temperature_K=temperature, device=c.device, **ensemble_kw)
                left = np.zeros(len(images), dtype=bool)  # replicas that have had a failed frame
                dyn.attach(lambda dyn=dyn, t=temperature, p=pressure, left=left:
                           kept.extend(_sample(dyn, t, p, left, c.trust_hi if c.fail_rest_of_run else math.inf)),
                           c.sample_every)
                self._say(f"exploring {len(images)} replicas at {where} for {c.steps} steps")
                try:
                    dyn.run(c.steps)
                except MDError as exc:  # an unstable ensemble: what was sampled before stays
                    self._say(f"MD stopped early: {exc}")
        write(self.iteration_dir() / "explored.extxyz", kept, format="extxyz")
        return "select"

    def _run_ends(self) -> dict:
        """The last frame of each replica of the previous iteration that was not failed, keyed by
        (temperature, pressure or None, replica): where ``continue_runs`` picks the runs up."""
        ends = {}
        for a in read(self.iteration_dir(self.state["iteration"] - 1) / "explored.extxyz", ":"):
            if a.info.get("after_failure") or float(a.info["max_devi_f"]) >= self.config.trust_hi:
                continue
            key = (float(a.info["temperature_K"]), a.info.get("pressure_bar"), int(a.info["replica"]))
            if key not in ends or a.info["step"] > ends[key].info["step"]:
                ends[key] = a
        return ends

    def select(self) -> str:
        c = self.config
        frames = read(self.iteration_dir() / "explored.extxyz", ":")
        # a frame after its replica's first failed one counts as failed (fail_rest_of_run)
        devi = [math.inf if a.info.get("after_failure") else float(a.info["max_devi_f"]) for a in frames]
        # frames explored before rank_by existed carry max_devi_f only
        rank = [float(a.info.get(c.rank_by, a.info["max_devi_f"])) for a in frames]
        classes, chosen = select(frames, devi, c.trust_lo, c.trust_hi, c.max_select, pool=c.select_pool, rank=rank)
        if c.selection == "random":  # the baseline: as many frames, drawn from the reference pool
            frames, chosen = self._random_draw(c.max_select)
        n = max(len(classes), 1)
        fractions = {"accurate": float((classes == 0).sum() / n), "candidate": float((classes == 1).sum() / n),
                     "failed": float((classes == 2).sum() / n)}
        _write_json(self.iteration_dir() / "selection.json", {"fractions": fractions, "selected": chosen,
                                                               "explored": len(classes)})
        if chosen:
            write(self.iteration_dir() / "selected.extxyz", [frames[i] for i in chosen], format="extxyz")
        self._say(f"{len(classes)} frames: accurate {fractions['accurate']:.1%}, candidate "
                  f"{fractions['candidate']:.1%}, failed {fractions['failed']:.1%}; {len(chosen)} selected")
        self._record({"iteration": self.state["iteration"], **{f"{key}_fraction": v for key, v in fractions.items()},
                      "selected": len(chosen)})
        done = fractions["accurate"] >= c.accurate_threshold or not chosen
        last = self.state["iteration"] + 1 >= c.max_iterations
        return "done" if done or last else "label"

    def _random_draw(self, n: int) -> tuple[list, list[int]]:
        """``n`` pool frames not drawn before (seeded by iteration)."""
        pool = _read_structures(self.config.random_pool)
        used = set(self.state.setdefault("pool_used", []))
        free = [i for i in range(len(pool)) if i not in used]
        rng = np.random.default_rng([self.config.seed, self.state["iteration"]])
        chosen = sorted(int(i) for i in rng.choice(free, size=min(n, len(free)), replace=False))
        self.state["pool_used"] = sorted(used | set(chosen))
        return pool, chosen

    def label(self) -> str:
        folder = self.iteration_dir() / "labels"
        folder.mkdir(exist_ok=True)
        selected = read(self.iteration_dir() / "selected.extxyz", ":")
        calc = self.config.labeller.factory()()
        todo = [i for i in range(len(selected))
                if not (folder / f"{i:04d}.extxyz").exists() and not (folder / f"{i:04d}.error").exists()]
        for i in tqdm(todo, desc=f"labelling ({self.config.labeller.name})", disable=not self.progress):
            result = self.config.labeller.label(selected[i], calc)
            if result.frame is None:
                with atomic_path(folder / f"{i:04d}.error") as tmp:
                    tmp.write_text(result.error or "failed")
                continue
            with atomic_path(folder / f"{i:04d}.extxyz") as tmp:
                write(tmp, result.frame.to_atoms(), format="extxyz")
        return "append"

    def append(self) -> str:
        k = self.state["iteration"]
        dataset = self.out / "dataset.h5"
        if any(s.get("explore_iteration") == k for s in H5Dataset(dataset).sources):
            return "train"  # appended before an interruption
        folder = self.iteration_dir() / "labels"
        files = sorted(folder.glob("*.extxyz"))
        failures = {p.stem: p.read_text() for p in sorted(folder.glob("*.error"))}
        frames = [f for p in files for f in read_ase(p)]
        source = {"explore_iteration": k, **self.config.labeller.describe(), "frames": len(frames),
                  "failed": failures}
        if frames:
            append_h5(frames, dataset, sources=[source])
        self._say(f"labelled {len(frames)} frames ({len(failures)} failed); dataset now {len(H5Dataset(dataset))} frames")
        self._record({"iteration": k, "labelled": len(frames), "label_failures": len(failures)})
        return "train"


def _read_structures(path: str) -> list:
    if str(path).endswith(".h5"):
        return [f.to_atoms() for f in H5Dataset(path)]
    return read(path, ":")


def _sample(dyn, temperature: float, pressure: float | None, left: np.ndarray, hi: float) -> list:
    """The current frame of every replica, with its max_devi_f, avg_devi_f, temperature and
    (NPT) pressure in ``info``; none at step 0, where the replicas still sit on their seed. A replica whose
    sampled deviation has reached ``hi`` is marked in ``left``; its later frames carry
    ``after_failure`` (their trajectory has left the region the ensemble can be trusted in)."""
    if dyn.nsteps == 0:
        return []
    devi, mean = (dyn.force_fn.last[key].detach().cpu().double().numpy() for key in ("max_devi_f", "avg_devi_f"))
    out = []
    for b, image in enumerate(dyn.images):
        a = image.copy()
        a.calc = None
        a.info = {"max_devi_f": float(devi[b]), "avg_devi_f": float(mean[b]), "temperature_K": temperature,
                  "step": dyn.nsteps, "after_failure": bool(left[b]), "replica": b}
        left[b] |= devi[b] >= hi
        if pressure is not None:
            a.info["pressure_bar"] = pressure
        out.append(a)
    return out
