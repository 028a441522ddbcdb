"""Training: schedule, losses fall, checkpoints resume exactly, bad input stops cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nnpot.cli import main
from nnpot.errors import ConfigError, DatasetError
from nnpot.training.trainer import Trainer, ema_decay, learning_rate
from nnpot.training.config import load_train_config, parse_duration

from .conftest import WATER

SMALL = ["model.descriptor.neuron=[8,16]", "model.descriptor.axis_neuron=4", "model.fitting.neuron=[16,16]",
         "stat_frames=8", "valid_frames=4", "valid_fraction=0.05"]


def _config(steps, extra=()):
    return load_train_config(None, SMALL + [f"num_steps={steps}", "valid_freq=4", "save_freq=2", *extra],
                             {"data": str(WATER)})


def test_schedule_and_durations():
    c = _config(10)
    assert learning_rate(c, 0) == pytest.approx(1e-3)
    assert learning_rate(c, 1) == pytest.approx(3.51e-8)
    assert parse_duration("1h30m") == 5400 and parse_duration("10m") == 600
    with pytest.raises(ConfigError, match="cannot read duration"):
        parse_duration("ten minutes")


def test_unknown_key_and_wrong_type_are_named():
    with pytest.raises(ConfigError, match="unknown key 'model.fitting.neurons'; allowed keys: activation, neuron"):
        load_train_config(None, ["model.fitting.neurons=[2]"], {"data": "x.h5"})
    with pytest.raises(ConfigError, match="batch_size: expected an integer, got 'many'"):
        load_train_config(None, ["batch_size=many"], {"data": "x.h5"})


def test_warmup_rises_linearly_then_cosine_decays_to_the_floor():
    """Warm-up over the first 10%: lr = start_lr p / 0.1; then a cosine from start_lr to the
    floor stop_lr, reached at the end; the prefactors follow the decay only (not the warm-up)."""
    from nnpot.training.trainer import decay_ratio

    c = _config(10, ["lr_schedule=cosine", "warmup=0.1", "start_lr=1e-2", "stop_lr=1e-4"])
    for p in (0.0, 0.03, 0.05, 0.1):
        assert learning_rate(c, p) == pytest.approx(1e-2 * p / 0.1, abs=1e-15)
    assert learning_rate(c, 0.55) == pytest.approx(1e-4 + (1e-2 - 1e-4) * 0.5, rel=1e-12)  # half way down
    assert learning_rate(c, 1.0) == pytest.approx(1e-4, rel=1e-12)  # the floor
    lrs = [learning_rate(c, p) for p in np.linspace(0.1, 1, 50)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone after the warm-up
    assert decay_ratio(c, 0.05) == 1.0 and decay_ratio(c, 1.0) == pytest.approx(1e-2)
    budget = _config(10, ["lr_schedule=cosine", "max_time=5m", "budget_stop_lr=2e-5"])
    assert learning_rate(budget, 1.0) == pytest.approx(2e-5)  # a budget sets the floor
    with pytest.raises(ConfigError, match="lr_schedule must be 'exp' or 'cosine', got 'linear'"):
        _config(10, ["lr_schedule=linear"]).validate()
    with pytest.raises(ConfigError, match="warmup must lie in"):
        _config(10, ["warmup=1.5"]).validate()


@pytest.mark.parametrize("extra", [(), ("ema_decay=0.9",), ("lr_schedule=cosine", "warmup=0.25"), ("weight_decay=0.1",),
                                   ("optimizer=lkf", "kalman_block=256", "kalman_force_atoms=12")],
                         ids=["plain", "ema", "cosine-warmup", "adamw", "kalman"])
def test_interrupted_run_resumes_to_identical_losses(tmp_path, extra):
    full = Trainer(_config(8, extra), tmp_path / "full", progress=False)
    full.run()
    part = Trainer(_config(8, extra), tmp_path / "part", progress=False)
    for _ in range(4):  # then "killed": only the step-4 checkpoint survives
        part.step()
        if part.state["step"] % 4 == 0:  # what run() does at a validation (valid_freq 4)
            part.refit_energy_bias()
        if part.state["step"] % 2 == 0:
            part._checkpoint()
    resumed = Trainer(_config(8, extra), tmp_path / "part", resume=True, progress=False)
    assert resumed.state["step"] == 4
    resumed.run()
    a = json.loads((tmp_path / "full" / "final_metrics.json").read_text())
    b = json.loads((tmp_path / "part" / "final_metrics.json").read_text())
    assert a["force_rmse"] == pytest.approx(b["force_rmse"], rel=1e-12)
    assert a["energy_rmse_per_atom"] == pytest.approx(b["energy_rmse_per_atom"], rel=1e-12)


def test_ema_is_the_warmed_up_average_of_the_weights(tmp_path):
    assert [ema_decay(0.99, t) for t in (0, 1, 8)] == pytest.approx([0.1, 2 / 11, 0.5])
    assert ema_decay(0.99, 10_000) == 0.99
    t = Trainer(_config(6, ["ema_decay=0.5"]), tmp_path / "r", progress=False)
    name = "fittings.0.layers.0.weight"
    expected = t.model.state_dict()[name].clone()
    for step in range(6):
        t.step()
        d = ema_decay(0.5, step)
        expected = d * expected + (1 - d) * t.model.state_dict()[name]
    assert not torch.allclose(expected, t.model.state_dict()[name])  # the average lags the weights
    torch.testing.assert_close(t._eval_model().state_dict()[name], expected, rtol=1e-12, atol=0)


def test_corrupt_latest_checkpoint_falls_back(tmp_path):
    t = Trainer(_config(4), tmp_path / "r", progress=False)
    t.run()
    ckpts = sorted((tmp_path / "r" / "checkpoints").glob("ckpt-*.pt"))
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:100])
    resumed = Trainer(_config(4), tmp_path / "r", resume=True, progress=False)
    assert resumed.state["step"] == int(ckpts[-2].stem.split("-")[1])


def test_nan_frames_are_refused_before_step_0_by_file_and_frame(tmp_path):
    import shutil

    import h5py

    shutil.copy(WATER, tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "r+") as fh:
        fh["energy"][:] = np.nan  # bypasses the readers' validation on purpose
    c = load_train_config(None, SMALL + ["num_steps=2"], {"data": str(tmp_path / "w.h5")})
    with pytest.raises(DatasetError, match=r"w\.h5: frame 0: energy is NaN or inf \(320 bad frames in all"):
        Trainer(c, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_cli_train_then_test_reduces_force_error(tmp_path, capsys):
    args = ["train", "--data", str(WATER), "--out", str(tmp_path / "run"), "-q", "--set", "num_steps=150",
            "--set", "valid_freq=25", "--set", "start_lr=0.005", "--set", "stop_lr=0.0005"] + [x for s in SMALL for x in ("--set", s)]
    assert main(args) == 0
    log = [json.loads(x) for x in (tmp_path / "run" / "valid.jsonl").read_text().splitlines()]
    assert log[-1]["force_rmse"] < 0.9 * log[0]["force_rmse"]  # after 25 steps vs after 150
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000
    assert main(["test", "-m", str(tmp_path / "run" / "model.nnp"), "-d", str(WATER), "--max-frames", "8",
                 "--json", str(tmp_path / "m.json"), "--plot", str(tmp_path / "plots"), "-q"]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"energy_rmse_per_atom", "energy_mae_per_atom", "force_rmse", "force_mae"} <= set(metrics)
    assert (tmp_path / "plots" / "parity_forces.png").exists()


def _ddp_worker(rank, world, port, out, grad_sync="bucketed"):
    import os

    import torch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer(_config(3, ["batch_size=1", "threads=1", f"grad_sync={grad_sync}"]), out, progress=False)
    for _ in range(3):
        trainer.step()
    if rank == 0:  # the trainer writes nothing before its first validation or checkpoint
        out.mkdir(parents=True, exist_ok=True)
        torch.save(trainer.model.state_dict(), out / "ddp_state.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("grad_sync", ["bucketed", "per-parameter"])
def test_two_gloo_ranks_equal_one_process_with_doubled_batch(tmp_path, grad_sync):
    import socket

    import torch
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, tmp_path / "ddp", grad_sync), nprocs=2, join=True)
    single = Trainer(_config(3, ["batch_size=2"]), tmp_path / "single", progress=False)
    for _ in range(3):
        single.step()
    ddp = torch.load(tmp_path / "ddp" / "ddp_state.pt", weights_only=True)
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-9, atol=1e-12)


def test_atom_budget_batches(tmp_path):
    """batch_atoms: frames in the seeded order, as many as fit in the budget, every frame once
    per epoch; a budget below one frame still takes that frame; training steps run on them."""
    trainer = Trainer(_config(2, ["batch_atoms=400"]), tmp_path / "a", progress=False)
    n_train = len(trainer.train_idx)
    seen = []
    while len(seen) < n_train - 1:
        batch = trainer._next_frames()
        assert len(batch) == 2 and trainer.train_atoms[batch].sum() <= 400  # the water frames have 192 atoms
        seen += batch
    assert len(set(seen)) == len(seen) and set(seen) <= set(trainer.train_idx.tolist())
    frames = Trainer(_config(2, ["batch_size=1"]), tmp_path / "b", progress=False)
    assert [frames._next_frames()[0] for _ in range(4)] == seen[:4]  # the same data order
    tiny = Trainer(_config(2, ["batch_atoms=10"]), tmp_path / "c", progress=False)
    assert len(tiny._next_frames()) == 1
    assert np.isfinite(trainer.step()["loss"])


def test_bootstrap_trains_on_a_seeded_resample_of_the_training_frames(tmp_path):
    """bootstrap: as many frames as the split leaves, drawn with replacement from them only (never
    a validation frame), the same for the same seed and different for another; steps run."""
    plain = Trainer(_config(2), tmp_path / "p", progress=False)
    runs = [Trainer(_config(2, ["bootstrap=true", f"seed={s}"]), tmp_path / f"b{k}", progress=False)
            for k, s in enumerate((1, 1, 2))]
    n = len(plain.train_idx)
    for run in runs:
        assert len(run.train_idx) == n and set(run.train_idx.tolist()) <= set(plain.train_idx.tolist())
        assert np.array_equal(run.valid_idx, plain.valid_idx)
        # with n >= 20 draws, a resample without repeats has probability n!/n^n < 1e-7
        assert len(set(run.train_idx.tolist())) < n
    assert np.array_equal(runs[0].train_idx, runs[1].train_idx)
    assert not np.array_equal(runs[0].train_idx, runs[2].train_idx)
    assert np.isfinite(runs[2].step()["loss"])


@pytest.mark.parametrize("norm_exp", [2, 1])
def test_loss_formula_and_energy_normalisation(tmp_path, norm_exp):
    """The loss equals p_e dE^2 / N^k + p_f mean(dF^2) recomputed by hand, for k = 2 ((dE/N)^2)
    and k = 1 (the default, DeePMD-kit's); the reported energy RMSE is per atom either way."""
    from nnpot.potentials import derivatives, make_batch
    from nnpot.training.trainer import prefactor

    trainer = Trainer(_config(2, ["batch_size=2", f"loss.energy_norm_exp={norm_exp}"]), tmp_path / "r",
                      progress=False)
    idx = trainer.train_idx[:2].tolist()
    lr = 1e-4
    loss, parts = trainer.loss(idx, lr)
    frames = [trainer.train_ds[i] for i in idx]
    m = trainer.model
    out = derivatives(m, make_batch(frames, m.type_map, m.cutoff, m.sel, dtype=m.dtype))
    n = np.array([f.n_atoms for f in frames], dtype=float)
    de = out["energy"].detach().numpy() - np.array([f.energy for f in frames])
    df = out["forces"].detach().numpy() - np.concatenate([f.forces for f in frames])
    lc = trainer.config.loss
    pe, pf = prefactor(lc.start_pref_e, lc.limit_pref_e, lr, 1e-3), prefactor(lc.start_pref_f, lc.limit_pref_f, lr, 1e-3)
    expected = pe * np.mean(de ** 2 / n ** norm_exp) + pf * np.mean(df ** 2)
    assert float(loss) == pytest.approx(expected, rel=1e-10)
    assert parts["rmse_e"] == pytest.approx(np.sqrt(np.mean((de / n) ** 2)), rel=1e-10)
    with pytest.raises(ConfigError, match="energy_norm_exp"):
        _config(2, ["loss.energy_norm_exp=3"]).validate()


def test_shared_embeddings_train_the_same_and_bad_setting_is_named(tmp_path):
    """share_embeddings on (plans cached per frame) and off give the same losses, step by step."""
    runs = {k: Trainer(_config(3, [f"model.descriptor.share_embeddings={k}"]), tmp_path / k, progress=False)
            for k in ("on", "off")}
    losses = {k: [t.step()["loss"] for _ in range(3)] for k, t in runs.items()}
    np.testing.assert_allclose(losses["on"], losses["off"], rtol=1e-10)
    idx = runs["on"].train_idx[:1].tolist()
    again = [float(runs["on"].loss(idx, 1e-4)[0]) for _ in range(2)]  # the second from the cache
    assert len(runs["on"].model.descriptor.plan_cache._store) >= 1 and again[0] == again[1]
    assert not runs["off"].model.descriptor.plan_cache._store
    with pytest.raises(ConfigError, match="share_embeddings must be one of auto, on, off, got 'sometimes'"):
        _config(2, ["model.descriptor.share_embeddings=sometimes"]).validate()


def test_max_time_run_resumes_and_finishes_its_budget(tmp_path):
    """A --max-time run resumes from its checkpoint and stops when the budget (elapsed time
    carried in the checkpoint, the final phase reserved) is spent. Its losses are not step-for-step those of an
    uninterrupted run: the learning rate follows elapsed wall-clock time, which differs."""
    c = _config(1000, ["max_time=4s", "save_freq=3"])
    part = Trainer(c, tmp_path / "t", progress=False)
    for _ in range(3):
        part.step()
    part.state["elapsed"] = 2.0  # as if killed 2 s into the budget, after the step-3 checkpoint
    part._checkpoint()
    resumed = Trainer(_config(1000, ["max_time=4s", "save_freq=3"]), tmp_path / "t", resume=True, progress=False)
    assert resumed.state["step"] == 3 and resumed.state["elapsed"] == 2.0
    resumed.run()
    # it trained on past the resume point, until the budget less the final phase's reserve (at
    # most half of it), and the final re-fit and validation fit inside the rest
    assert 2.0 < resumed.state["elapsed"] < 60 and resumed.state["step"] > 3
    assert (tmp_path / "t" / "model.nnp").is_file()
