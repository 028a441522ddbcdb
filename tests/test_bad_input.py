"""Bad input through the CLI, as a careless or hostile user gives it: every case ends in a
one-line error that names the problem, never a traceback, and every file that existed before
is byte-identical after."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnpot.cli import main
from nnpot.data import write_h5
from nnpot.potentials import save_model

from .conftest import WATER

SMALL = ["--set", "model.descriptor.neuron=[8,16]", "--set", "model.descriptor.axis_neuron=4",
         "--set", "model.fitting.neuron=[16,16]", "--set", "stat_frames=4", "--set", "valid_frames=2"]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


@pytest.fixture()
def ws(tmp_path, small_model, water, monkeypatch):
    """A workspace: a small dataset, a bad one, a model, a finished-looking run, a user folder."""
    monkeypatch.chdir(tmp_path)
    frames = [water[i] for i in range(8)]
    write_h5(frames, "small.h5")
    bad = [water[i] for i in range(4)]
    bad[2].positions = bad[2].positions.copy()
    bad[2].positions[5, 1] = np.nan
    write_h5(bad, "nan.h5", validate=False)
    write_h5(frames[:2], "two.h5")
    save_model(small_model, "model.nnp")
    Path("run").mkdir()
    Path("run/config.yaml").write_text("data: small.h5\n")
    Path("run/model.nnp").write_bytes(Path("model.nnp").read_bytes())
    Path("mine").mkdir()
    Path("mine/notes.txt").write_text("my own notes\n")
    Path("out.xyz").write_text("not nnpot's\n")
    Path("empty.h5").write_bytes(b"")
    data = Path(WATER).read_bytes()
    Path("truncated.h5").write_bytes(data[: len(data) // 3])
    Path("md.yaml").write_text("structure: small.h5\nmodel: model.nnp\nsteps: 5\noutput: mdout\n")
    Path("mdout").mkdir()
    Path("mdout/md.log").write_text("an earlier run\n")
    Path("garbage.xyz").write_text("this is not\na structure\n")
    Path("empty.xyz").write_text("0\nProperties=species:S:1:pos:R:3\n")
    Path("bad.nnp").write_bytes(b"PK\x03\x04 not really a model")
    system = Path("dpuser/water")  # the user's own DeePMD-kit system
    (system / "set.000").mkdir(parents=True)
    (system / "type.raw").write_text("0\n")
    np.save(system / "set.000" / "energy.npy", np.zeros(1))
    write_h5(frames[:2], "dpuser/in.h5")
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"{b}: &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefg", "bcdefgh")]
    Path("bomb.yaml").write_text("\n".join(levels) + "\nmodel: [" + ", ".join(["*h"] * 9) + "]\n")
    import h5py

    with h5py.File("huge.dp", "w") as fh:  # declares 8 TB and stores nothing
        fh.create_dataset("variable_0000", shape=(10 ** 6, 10 ** 6), dtype="f8", chunks=(100, 100))
        fh.attrs["json"] = json.dumps({"model": {"descriptor": {"@variables": {"w": "/variable_0000"}}}})
    for name in ("ens", "ensbroken"):
        Path(name).mkdir()
        Path(name, "member_0").mkdir()
        Path(name, "member_0", "config.yaml").write_text("data: small.h5\n")
    Path("ens/ensemble_plan.json").write_text('{"members": 2}')
    write_h5(frames[:2], "floatz.h5")
    with h5py.File("floatz.h5", "r+") as fh:  # crafted: atomic numbers as floats, one of them 6.5
        z = fh["numbers"][:].astype(float)
        z[3] = 6.5
        del fh["numbers"]
        fh.create_dataset("numbers", data=z, maxshape=(None,), chunks=True)
    write_h5(frames[:2], "noframes.h5")
    with h5py.File("noframes.h5", "r+") as fh:  # crafted: a valid header and no frames
        for name in ("cell", "energy", "forces", "numbers", "pbc", "positions", "weight"):
            fh[name].resize(0, axis=0)
        fh["frame_offsets"].resize(1, axis=0)
    Path("ensbroken/ensemble_plan.json").write_text('{"members": ')
    return tmp_path


TRAIN = ["train", "--data", "small.h5", "--out", "fresh", *SMALL]

#: (case id, argv, words the one-line message must contain)
CASES = [
    ("export-into-user-folder", ["data", "export", "small.h5", "--format", "deepmd", "-o", "mine"], "--force"),
    ("export-force-user-folder", ["data", "export", "small.h5", "--format", "deepmd", "-o", "mine", "--force"],
     "nnpot did not write it"),
    ("export-force-user-systems", ["data", "export", "small.h5", "--format", "deepmd", "-o", "dpuser", "--force"],
     "nnpot did not write it"),
    ("export-parent-folder", ["data", "export", "small.h5", "--format", "deepmd", "-o", "..", "--force"],
     "an input of this command"),
    ("export-onto-its-input", ["data", "export", "small.h5", "-o", "small.h5", "--force"], "is an input"),
    ("export-xyz-force-user-file", ["data", "export", "small.h5", "-o", "out.xyz", "--force"],
     "nnpot did not write it"),
    ("export-into-folder-of-input", ["data", "export", "dpuser/in.h5", "--format", "deepmd", "-o", "dpuser", "--force"],
     "an input of this command"),
    ("config-yaml-alias-bomb", ["train", "bomb.yaml", "--data", "small.h5", "--out", "fresh"], "aliases"),
    ("convert-yaml-alias-bomb-model", ["convert", "bomb.yaml", "-o", "bomb.nnp"], "aliases"),
    ("convert-dp-huge-declared-shape", ["convert", "huge.dp", "-o", "huge.nnp"], "declares shape"),
    ("train-set-bad-yaml", [*TRAIN, "--set", "num_steps=[1,"], "not valid YAML"),
    ("resume-ensemble-with-set", ["train", "--resume", "ens", "--set", "num_steps=5"], "would be ignored"),
    ("resume-ensemble-broken-plan", ["train", "--resume", "ensbroken"], "unreadable ensemble plan"),
    ("single-run-into-ensemble", ["train", "--data", "small.h5", "--out", "ens", "--force"], "holds an ensemble"),
    ("ensemble-into-single-run", ["train", "--data", "small.h5", "--out", "run", "--ensemble", "2", "--force"],
     "holds a single training run"),
    ("export-onto-file", ["data", "export", "small.h5", "--format", "deepmd", "-o", "out.xyz"], "not a folder"),
    ("export-xyz-exists", ["data", "export", "small.h5", "-o", "out.xyz"], "--force"),
    ("convert-exists", ["data", "convert", "small.h5", "-o", "out.xyz"], "--force"),
    ("convert-onto-its-input", ["data", "convert", "small.h5", "-o", "small.h5", "--force"], "is an input"),
    ("convert-force-user-file", ["data", "convert", "small.h5", "-o", "out.xyz", "--force"], "nnpot did not write it"),
    ("convert-nan-source", ["data", "convert", "nan.h5", "-o", "new.h5"], "nan.h5: frame 2: positions"),
    ("split-duplicate-names", ["data", "split", "small.h5", "--names", "a", "a"], "distinct"),
    ("split-empty-part", ["data", "split", "two.h5", "--fractions", "0.9", "0.05", "0.05"], "no frame"),
    ("info-missing", ["data", "info", "missing.h5"], "no such file"),
    ("info-truncated", ["data", "info", "truncated.h5"], "truncated"),
    ("train-existing-run", ["train", "--data", "small.h5", "--out", "run"], "--resume run"),
    ("train-out-is-file", ["train", "--data", "small.h5", "--out", "out.xyz"], "not a folder"),
    ("train-max-time-0", [*TRAIN, "--max-time", "0"], "max_time: the budget must be positive"),
    ("train-max-time-0s", [*TRAIN, "--max-time", "0s"], "max_time: the budget must be positive"),
    ("train-max-time-negative", [*TRAIN, "--max-time=-5m"], "max_time"),
    ("train-empty-widths", [*TRAIN, "--set", "model.fitting.neuron=[]"], "fitting.neuron"),
    ("train-zero-width", [*TRAIN, "--set", "model.descriptor.neuron=[8,0]"], "descriptor.neuron"),
    ("train-huge-width", [*TRAIN, "--set", "model.fitting.neuron=[100000]"], "fitting.neuron"),
    ("train-bad-activation", [*TRAIN, "--set", "model.fitting.activation=swish9"], "fitting.activation"),
    ("train-negative-threads", [*TRAIN, "--set", "threads=-1"], "threads must be >= 0"),
    ("train-negative-seed", [*TRAIN, "--set", "seed=-3"], "seed must be >= 0"),
    ("train-zero-steps", [*TRAIN, "--set", "num_steps=0"], "num_steps must be >= 1"),
    ("train-zero-valid-freq", [*TRAIN, "--set", "valid_freq=0"], "valid_freq must be >= 1"),
    ("train-nan-lr", [*TRAIN, "--set", "start_lr=.nan"], "start_lr"),
    ("train-bad-device", [*TRAIN, "--set", "device=cuda:7"], "device"),
    ("train-unknown-device", [*TRAIN, "--set", "device=tpu"], "device"),
    ("train-missing-data", ["train", "--data", "missing.h5", "--out", "fresh"], "no such file"),
    ("train-empty-file", ["train", "--data", "empty.h5", "--out", "fresh"], "not a readable"),
    ("train-truncated-file", ["train", "--data", "truncated.h5", "--out", "fresh"], "truncated"),
    ("train-nan-frame", ["train", "--data", "nan.h5", "--out", "fresh", *SMALL], "nan.h5: frame 2: positions"),
    ("train-type-map-misses", [*TRAIN, "--set", "model.type_map=[O]"], "element(s) H of the data are not in the type map"),
    ("train-bad-sel-word", [*TRAIN, "--set", "model.descriptor.sel=many"], "descriptor.sel must be a list"),
    ("train-not-an-element", [*TRAIN, "--set", "model.type_map=[O,Hx]"], "Hx is not a chemical element"),
    ("train-no-valid-frames", ["train", "--data", "two.h5", "--out", "fresh", "--set", "valid_fraction=0.1"],
     "no validation frames"),
    ("train-negative-sel", [*TRAIN, "--set", "model.descriptor.sel=[-1,4]"], "sel entries must be >= 1"),
    ("train-absurd-rcut", [*TRAIN, "--set", "model.descriptor.rcut=500"], "rcut"),
    ("resume-with-set", ["train", "--resume", "run", "--set", "num_steps=5"], "would be ignored"),
    ("resume-nothing", ["train", "--resume", "mine"], "nothing to resume"),
    ("md-zero-steps", ["md", "md.yaml", "--set", "steps=0", "--set", "output=new"], "steps must be >= 1"),
    ("md-negative-dt", ["md", "md.yaml", "--set", "timestep_fs=-1", "--set", "output=new"], "timestep_fs"),
    ("md-negative-T", ["md", "md.yaml", "--set", "temperature_K=-5", "--set", "output=new"], "temperature_K"),
    ("md-frame-out-of-range", ["md", "md.yaml", "--set", "frame=99", "--set", "output=new"], "out of range"),
    ("md-garbage-structure", ["md", "md.yaml", "--set", "structure=garbage.xyz", "--set", "output=new"],
     "garbage.xyz"),
    ("md-empty-structure", ["md", "md.yaml", "--set", "structure=empty.xyz", "--set", "output=new"], "no atoms"),
    ("md-output-exists", ["md", "md.yaml"], "already holds md.log"),
    ("md-bad-model", ["md", "md.yaml", "--set", "model=bad.nnp", "--set", "output=new"], "bad.nnp"),
    ("test-bad-model", ["test", "-m", "bad.nnp", "-d", "small.h5"], "bad.nnp"),
    ("test-json-exists", ["test", "-m", "model.nnp", "-d", "small.h5", "--json", "out.xyz"], "--force"),
    ("test-nan-data", ["test", "-m", "model.nnp", "-d", "nan.h5"], "frame 2"),
    ("test-zero-frames", ["test", "-m", "model.nnp", "-d", "small.h5", "--max-frames", "0"], "must be >= 1"),
    ("info-non-integer-numbers", ["data", "info", "floatz.h5"], "integers"),
    ("info-no-frames", ["data", "info", "noframes.h5"], "holds no frames"),
    ("test-no-frames", ["test", "-m", "model.nnp", "-d", "noframes.h5"], "holds no frames"),
    ("change-bias-no-frames", ["change-bias", "model.nnp", "-d", "noframes.h5", "-o", "nb.nnp"], "holds no frames"),
    ("md-unknown-trajectory-suffix", ["md", "md.yaml", "--set", "trajectory=md.dcd", "--set", "output=new"],
     "trajectory"),
    ("approx-zero-threads", ["approx", "depth", "--threads", "0"], "must be >= 1"),
]


@pytest.mark.parametrize("argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_changes_nothing(ws, capsys, argv, words):
    before = _snapshot(ws)
    parent_before = sorted(os.listdir(ws.parent))
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code not in (0, None), err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and words in lines[-1], err
    assert len([line for line in lines if "error" in line]) == 1, err
    assert _snapshot(ws) == before  # nothing created, changed or removed
    assert sorted(os.listdir(ws.parent)) == parent_before  # no temporary folder left beside


def test_bad_dataset_is_reported_by_info(ws, capsys):
    assert main(["data", "info", "nan.h5"]) == 1
    out = capsys.readouterr().out
    assert "1 bad frame(s)" in out and "frame 2: positions contain NaN or inf" in out


def test_export_replaces_only_its_own_export_with_force(ws):
    assert main(["data", "export", "small.h5", "--format", "deepmd", "-o", "dp"]) == 0
    assert main(["data", "export", "two.h5", "--format", "deepmd", "-o", "dp", "--force"]) == 0
    assert np.load("dp/system_000/set.000/energy.npy").shape == (2,)


def test_fresh_run_with_force_keeps_the_old_run_until_its_first_step(ws):
    """--force replaces an earlier run, but a run that fails before its first step leaves it."""
    before = _snapshot(ws / "run")
    assert main(["train", "--data", "nan.h5", "--out", "run", "--force", *SMALL]) == 2
    assert _snapshot(ws / "run") == before
    assert main(["train", "--data", "small.h5", "--out", "run", "--force", *SMALL, "--set", "num_steps=2",
                 "--set", "valid_freq=1", "-q"]) == 0
    assert "num_steps: 2" in Path("run/config.yaml").read_text()


def _run(code: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("distance", [1e5, 1e9])
def test_far_atom_gives_the_right_answer_in_calculator_md_and_training(ws, distance):
    """An atom 1e5 A or more away along a non-periodic direction once killed the process with a
    floating-point trap in the neighbor search; it is searched apart and adds nothing."""
    code = f"""
import numpy as np
from ase import Atoms
from ase.io import write
from nnpot.cli import main
from nnpot.data import H5Dataset, write_h5
from nnpot.potentials import NNPotCalculator, load_model
water = H5Dataset("small.h5")
slab = water[0].to_atoms(); slab.calc = None; slab.pbc = [True, True, False]
far = slab + Atoms("H", positions=[[1.0, 1.0, {distance}]], cell=slab.cell, pbc=slab.pbc)
model = load_model("model.nnp")
slab.calc = NNPotCalculator(model, device="cpu"); far.calc = NNPotCalculator(model, device="cpu")
lone = Atoms("H", positions=[[0.0, 0.0, 0.0]]); lone.calc = NNPotCalculator(model, device="cpu")
e_far, e_slab, e_lone = far.get_potential_energy(), slab.get_potential_energy(), lone.get_potential_energy()
assert abs(e_far - (e_slab + e_lone)) < 1e-6, (e_far, e_slab, e_lone)  # the far atom has no neighbors
assert np.allclose(far.get_forces()[:-1], slab.get_forces(), atol=1e-9)
assert np.allclose(far.get_forces()[-1], 0)
write("far.extxyz", far)
assert main(["md", "md.yaml", "--set", "structure=far.extxyz", "--set", "output=farmd", "-q"]) == 0
frame = water[1]; frame.pbc = np.array([True, True, False])
frame.positions = np.vstack([frame.positions, [[1.0, 1.0, {distance}]]])
frame.numbers = np.append(frame.numbers, 1); frame.forces = np.vstack([frame.forces, np.zeros((1, 3))])
write_h5([water[0], frame, water[2], water[3]], "far.h5")
assert main(["train", "--data", "far.h5", "--out", "farrun", "--set", "model.descriptor.neuron=[8,16]",
             "--set", "model.descriptor.axis_neuron=4", "--set", "model.fitting.neuron=[16,16]",
             "--set", "num_steps=4", "--set", "valid_fraction=0.25", "--set", "batch_size=2", "-q"]) == 0
print("ok")
"""
    result = _run(code, ws)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_sigkill_mid_run_resumes_to_the_same_losses_and_optimizer_state(ws):
    """A real process killed with SIGKILL in the middle of a step-based run, then resumed: every
    logged loss and the final optimizer state equal those of an uninterrupted run."""
    import signal
    import time

    import torch

    args = [sys.executable, "-m", "nnpot.cli", "train", "--data", "small.h5", *SMALL, "--set", "num_steps=16",
            "--set", "valid_freq=1", "--set", "save_freq=3", "--set", "valid_fraction=0.25", "-q"]
    assert subprocess.run(args + ["--out", "full"], cwd=ws, capture_output=True, timeout=300).returncode == 0
    proc = subprocess.Popen(args + ["--out", "part"], cwd=ws, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = ws / "part" / "valid.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 8):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = len(log.read_text().splitlines())
    assert 8 <= killed_at < 17  # killed mid-run, after some checkpoints
    resumed = subprocess.run([sys.executable, "-m", "nnpot.cli", "train", "--resume", "part", "-q"], cwd=ws,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    rows = {k: [json.loads(line) for line in (ws / k / "valid.jsonl").read_text().splitlines()] for k in ("full", "part")}
    assert [r["step"] for r in rows["part"]] == [r["step"] for r in rows["full"]]  # each step logged once
    for a, b in zip(rows["full"], rows["part"]):
        assert a["train_loss"] == b["train_loss"] and a["force_rmse"] == b["force_rmse"], (a, b)
    last = {k: torch.load(sorted((ws / k / "checkpoints").glob("*.pt"))[-1], weights_only=True) for k in ("full", "part")}
    for (_, sa), (_, sb) in zip(sorted(last["full"]["optimizer"]["state"].items()),
                                sorted(last["part"]["optimizer"]["state"].items())):
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("kind", ["complex", "meta", "sparse", "integer", "nested"])
def test_crafted_model_files_get_one_line(ws, capsys, kind):
    """Weights of a kind nnpot never writes, or metadata nested a million deep: a clear error."""
    import torch

    payload = torch.load("model.nnp", weights_only=True)
    state = payload["state_dict"]
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 2)
    if kind == "complex":
        state[name] = state[name].to(torch.complex128)
    elif kind == "meta":
        state[name] = torch.empty(state[name].shape, device="meta", dtype=state[name].dtype)
    elif kind == "sparse":
        state[name] = state[name].to_sparse()
    elif kind == "integer":
        state[name] = state[name].to(torch.int64)
    else:
        payload["meta_json"] = "[" * 1_000_000 + "]" * 1_000_000
    torch.save(payload, "crafted.nnp")
    code = main(["test", "-m", "crafted.nnp", "-d", "small.h5"])
    err = capsys.readouterr().err
    assert code == 2 and "crafted.nnp" in err and "Traceback" not in err and "internal error" not in err, err
