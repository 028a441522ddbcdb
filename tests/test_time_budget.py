"""A time budget covers the whole job: a 1-minute run validates and checkpoints on a time
cadence, shows its final phase, ends inside its budget, resumes after a kill, and names an
undertrained model as such (and a converged one not)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nnpot.data import Frame, H5Dataset, write_h5
from nnpot.potentials.modelfile import latest_checkpoint
from nnpot.training.trainer import Trainer
from nnpot.training.config import load_train_config
from nnpot.potentials.evaluator import predict

from .conftest import MOLECULE, SMALL_TRAIN, WATER

pytestmark = pytest.mark.slow

MARGIN_S = 30  # start-up (imports, data, statistics) on a busy 2-core machine


def _rows(run):
    return [json.loads(line) for line in (run / "valid.jsonl").read_text().splitlines() if line.strip()]


def test_one_minute_run_has_a_learning_curve_and_checkpoints(budget_run):
    run, stdout, stderr, wall = budget_run
    rows = _rows(run)
    final_step = rows[-1]["step"]
    assert len([r for r in rows if r["step"] < final_step]) >= 3  # validations during the run, not only the last
    steps = sorted(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*.pt"))
    assert steps and steps[0] < final_step  # a checkpoint before the end: a kill would leave one to resume
    assert rows[-1]["time"] <= 60.0 + 5.0  # the final phase fits inside the budget (its estimate may be off by a little)


def test_the_budget_holds_for_the_whole_command(budget_run):
    wall = budget_run[3]
    assert wall < 60 + MARGIN_S, f"a --max-time 1m run took {wall:.0f} s"


def test_final_phase_shows_progress(budget_run):
    stderr = budget_run[2]
    for bar in ("training", "energy re-fit", "final validation"):
        assert f"{bar}:" in stderr, f"no {bar!r} progress bar"
    assert "timed:" in budget_run[1] + stderr  # the steps to expect, from the first seconds


def test_killed_midway_it_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nnpot.cli", "train", "--data", str(WATER), "--out", str(out), "--max-time", "40s",
           "--quiet"]
    for kv in SMALL_TRAIN:
        cmd += ["--set", kv]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "checkpoints").is_dir() and latest_checkpoint(out / "checkpoints") is not None \
                and (out / "valid.jsonl").is_file() and len(_rows(out)) >= 2:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.nnp").exists()
    resumed = subprocess.run([sys.executable, "-m", "nnpot.cli", "train", "--resume", str(out), "--quiet"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = _rows(out)
    steps = [r["step"] for r in rows]
    assert (out / "model.nnp").is_file() and steps == sorted(steps)
    assert len(steps) - len(set(steps)) <= 1  # the final row may repeat the last step
    again = subprocess.run([sys.executable, "-m", "nnpot.cli", "train", "--resume", str(out), "--quiet"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and len(_rows(out)) == len(rows)  # a finished run adds no row


def test_undertrained_warning_for_a_20_step_run(tmp_path):
    args = ["train", "--data", str(WATER), "--out", str(tmp_path / "r"), "--quiet", "--set", "num_steps=20"]
    for kv in SMALL_TRAIN:
        args += ["--set", kv]
    proc = subprocess.run([sys.executable, "-m", "nnpot.cli", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("warning: the model is undertrained: 20 steps"), last
    assert "label spread" in last and "--max-time" in last


def test_no_warning_for_a_converged_run(tmp_path):
    """Labels made by a model, and a run that starts from that model: it ends at the labels'
    own accuracy, so nothing is undertrained (the 10-atom molecule set: fast steps)."""
    source = H5Dataset(MOLECULE)
    config = lambda data, extra: load_train_config(None, SMALL_TRAIN + list(extra), {"data": str(data)})  # noqa: E731
    seed = Trainer(config(MOLECULE, ["num_steps=1", "model.descriptor.sel=auto"]), tmp_path / "seed", progress=False)
    seed.run()
    model = seed.model.eval()
    frames = [source[i] for i in range(60)]
    pred = predict(model, frames)
    offsets = np.concatenate([[0], np.cumsum([f.n_atoms for f in frames])])
    labelled = [Frame(numbers=f.numbers, positions=f.positions, cell=f.cell, pbc=f.pbc, energy=float(pred["energy"][k]),
                      forces=pred["forces"][offsets[k]:offsets[k + 1]]) for k, f in enumerate(frames)]
    data = tmp_path / "self.h5"
    write_h5(labelled, data)
    trainer = Trainer(config(data, ["num_steps=520", "valid_freq=260", "save_freq=260", "start_lr=1e-9",
                                    "stop_lr=1e-10", f"init_model={tmp_path / 'seed' / 'model.nnp'}"]),
                      tmp_path / "conv", progress=False)
    trainer.run()
    assert trainer.final_metrics["force_rmse"] < 0.01 * trainer.final_metrics["force_label_std"]
    assert trainer.undertrained() is None
