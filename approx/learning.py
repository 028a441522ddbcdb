"""Learning curves of a potential: force and energy RMSE against training-set size and against
fitting-net width at a fixed training budget (steps). This is the study to run on one's own data
(``nnpot approx learning-curve --data FILE.h5``) to decide whether more data or a bigger network
helps. No universal exponent exists; the fitted ones are the result.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnpot.approx.result import Series, StudyResult
from nnpot.bundled import bundled_dataset
from nnpot.data import H5Dataset, write_h5
from nnpot.potentials.descriptors.base import config_keys
from nnpot.training.config import load_train_config
from nnpot.training.trainer import Trainer

__all__ = ["LearningCurveConfig", "learning_curve"]


@dataclass
class LearningCurveConfig:
    data: str = ""  #: HDF5 dataset; empty: the bundled water data
    # the full setting: a mid-size se_e2_a (about 8 steps/s on 2 CPU cores), 2,500 steps per point
    # (16 to 156 epochs); frames and widths together take about an hour on 2 cores
    frames: list[int] = field(default_factory=lambda: [16, 64, 256])
    widths: list[int] = field(default_factory=lambda: [30, 60, 240])  #: fitting widths at max(frames)
    steps: int = 2500  #: training steps per point (batch 1; the learning rate decays 1e-3 -> 1e-5)
    valid_frames: int = 64
    embedding: list[int] = field(default_factory=lambda: [16, 32, 64])
    axis_neuron: int = 8
    fitting: list[int] = field(default_factory=lambda: [120, 120, 120])
    seed: int = 0
    descriptor: str = "se_e2_a"  #: or e3nn (its default settings; embedding/axis_neuron then unused)
    #: every step on all of a point's frames (batch = the training set) instead of one frame: the
    #: same noise-free optimisation at every size, so the curve measures data, not how many passes
    #: over each frame ``steps`` allowed (with one frame per step, more frames means fewer passes
    #: and noisier gradients, and at a few hundred steps the error can even rise with the data)
    full_batch: bool = False

    @classmethod
    def quick(cls) -> "LearningCurveConfig":
        return cls(frames=[4, 16, 64], widths=[8, 32], steps=60, valid_frames=16, embedding=[8, 16],
                   axis_neuron=4, fitting=[32, 32])


def _train_and_score(c: LearningCurveConfig, train_path: Path, valid_path: Path, fitting: list[int], out: Path,
                     n_frames: int) -> dict:
    overrides = [f"num_steps={c.steps}", f"valid_freq={c.steps + 1}", f"save_freq={c.steps + 1}", "stat_frames=16",
                 f"model.fitting.neuron={fitting}", f"seed={c.seed}", "stop_lr=1e-5",
                 f"model.descriptor.type={c.descriptor}", f"batch_size={n_frames if c.full_batch else 1}"]
    # the embedding widths apply to descriptors that have embedding nets
    embedding = {"neuron": c.embedding, "axis_neuron": c.axis_neuron}
    overrides += [f"model.descriptor.{k}={v}" for k, v in embedding.items() if k in config_keys(c.descriptor)]
    config = load_train_config(None, overrides, {"data": str(train_path), "valid_data": str(valid_path)})
    trainer = Trainer(config, out, progress=False)
    trainer.run()
    return trainer.validate(trainer.valid_idx)


def learning_curve(config: LearningCurveConfig | None = None, quick: bool = True) -> StudyResult:
    c = config or (LearningCurveConfig.quick() if quick else LearningCurveConfig())
    data = Path(c.data) if c.data else bundled_dataset("water")
    t0 = time.perf_counter()
    ds = H5Dataset(data)
    order = np.random.default_rng(c.seed).permutation(len(ds))
    valid_idx, pool = order[: c.valid_frames], order[c.valid_frames:]
    if max(c.frames) > len(pool):
        raise ValueError(f"{data}: {len(pool)} frames left after validation, fewer than {max(c.frames)}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        valid_path = tmp / "valid.h5"
        write_h5((ds[int(i)] for i in np.sort(valid_idx)), valid_path, validate=False)
        force_n, energy_n = [], []
        for n in c.frames:
            path = tmp / f"train_{n}.h5"
            write_h5((ds[int(i)] for i in np.sort(pool[:n])), path, validate=False)
            m = _train_and_score(c, path, valid_path, c.fitting, tmp / f"run_{n}", n)
            force_n.append([m["force_rmse"]])
            energy_n.append([m["energy_rmse_per_atom"]])
        full = tmp / f"train_{max(c.frames)}.h5"
        force_w = []
        for w in c.widths:
            m = _train_and_score(c, full, valid_path, [w] * len(c.fitting), tmp / f"run_w{w}", max(c.frames))
            force_w.append([m["force_rmse"]])
    frames = [float(n) for n in c.frames]
    series = [Series("force RMSE vs training frames", frames, force_n, None, metric="RMSE (eV/A, eV/atom)"),
              Series("energy RMSE per atom vs training frames", frames, energy_n, None, metric="RMSE (eV/A, eV/atom)"),
              Series(f"force RMSE vs fitting width ({max(c.frames)} frames)", [float(w) for w in c.widths], force_w,
                     None, metric="RMSE (eV/A, eV/atom)")][: 3 if len(c.widths) >= 2 else 2]  # widths: optional
    for s in series:
        s.fit_rate()
    return StudyResult("learning-curve", "training frames / fitting-net width", series, time.perf_counter() - t0, quick,
                       notes={"data": str(data), "steps": c.steps, "valid_frames": c.valid_frames,
                              "descriptor": c.descriptor, "full_batch": c.full_batch})
