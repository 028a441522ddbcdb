"""Accuracy at equal data and equal wall-clock time: nnpot's models against MACE (and DeePMD-kit).

Every model trains on the same 80% of a dataset (seed 0) for the same budget, two runs at a
time with one core each, and is scored on the same held-out 20%: force RMSE (meV/A), energy
RMSE (meV/atom), steps, the learning curve against time, and how much the curve still fell over
the last quarter of the run (near zero: converged, the issue's criterion for the 2-hour runs).

* nnpot: each preset of :data:`PRESETS` through ``nnpot train`` (``--data train.h5
  --valid-data valid.h5 --max-time``); the final model is scored on every held-out frame.
* MACE (mace-torch 0.3.16 in its own venv, ``--mace-python``; ``../shared/peers/README.md``):
  ``mace_run_train`` on extxyz files of the same frames, with E0s from a least-squares fit of
  the training energies (MACE's ``average`` is degenerate at one composition), validated every
  epoch (every few epochs below 200 training frames) and stopped at the budget; its score is its last validation (the held-out frames) and
  its best is reported beside it. Two sizes: ``mace_small`` (32 channels, L=0, the CPU size) and
  ``mace`` (64 channels, L=1, correlation 3, two layers: the recipe of the issue).
* ``deepmd``: DeePMD-kit 3.2 se_e2_a (its water example's sizes, the data's type map and sel)
  through ``deepmd_job.py``, in its own venv (``--dp-python``, default ``.peers/dp``, as
  ``../shared/peers/README.md`` builds it): it times its first
  steps inside the budget and trains for the steps that fit in the rest.

    python benchmarks/bench_accuracy.py --dataset molecule_C3H3O4 --budget 30m \\
        --models ace64_l3 mace deepmd se_e2_a --mace-python /work/peers/mace/bin/python

Writes ``benchmarks/results/accuracy_<dataset>_<budget>.json`` and a learning-curve PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_train_budget import DP_PYTHON  # noqa: E402
from bench_training_ab import dataset_path, final_metrics, run_pairs, train_command  # noqa: E402

from nnpot.data import H5Dataset, write_h5  # noqa: E402

#: nnpot model presets: ``nnpot train --set`` overrides
#: ace's settings besides the descriptor: the winners of the A/B rounds (benchmarks/README.md);
#: the presets below were measured in float64, before ace's recipe became float32
_ACE = ["model.descriptor.type=ace", "model.dtype=float64", "model.fitting.neuron=[64,64]", "lr_schedule=cosine",
        "warmup=0.05"]
_ACE64 = [*_ACE, "model.descriptor.channels=64", "batch_size=4", "ema_decay=0.99"]
PRESETS = {
    "se_e2_a": [],
    "e3nn": ["model.descriptor.type=e3nn", "model.fitting.neuron=[64,64]"],
    "ace": _ACE,
    # the winners of the 4-minute A/B (benchmarks/README.md): 64 channels, batch 4, EMA 0.99
    "ace64": _ACE64,
    # ace64 with a 7 A cutoff: the local model sees further (MACE's two layers of 5 A see 10 A);
    # 2% lower forces in a 4-minute A/B (training_ab_molecule_C3H3O4_4m_ace64_pref.json)
    "ace64_r7": [*_ACE64, "model.descriptor.rcut=7.0"],
    # ace64 with one message-passing layer (receptive field 2 rcut, as MACE's two layers): more
    # capacity per training frame at about twice the step time
    "ace64_mp1": [*_ACE64, "model.descriptor.message_layers=1"],
    # ace64 with spherical harmonics to l = 3 (MACE's max_ell): 16% lower forces at 100 frames
    # in a 4-minute A/B, at half the steps (accuracy_molecule_C3H3O4_4m_100frames_ab4.json)
    "ace64_l3": [*_ACE64, "model.descriptor.lmax=3"],
    # ace64_l3 in float32, ace's training recipe since round 9 of the A/B (1.3x the steps, 15% lower
    # forces on ethanol at 4 minutes: accuracy_ethanol_xtb_4m_ab9.json)
    "ace64_l3_f32": [*_ACE64, "model.descriptor.lmax=3", "model.dtype=float32"],
    "ace_mp1": [*_ACE, "model.descriptor.message_layers=1"],
    # ace64_l3_f32 with one message-passing layer: the model that beat MACE on the molecule set and
    # ethanol at 30 minutes (accuracy_molecule_C3H3O4_30m_run6.json, accuracy_ethanol_xtb_30m_run4.json)
    "ace64_l3_mp1_f32": [*_ACE64, "model.descriptor.lmax=3", "model.dtype=float32", "model.descriptor.message_layers=1"],
    # the same with scalar messages (hidden_lmax 0: only invariants pass between layers): 2.4x
    # faster in MD at 1,536 water atoms (bench_md_vs_mace.py)
    "ace64_l3_mp1s_f32": [*_ACE64, "model.descriptor.lmax=3", "model.dtype=float32", "model.descriptor.message_layers=1",
                          "model.descriptor.hidden_lmax=0"],
    # L <= 1 messages with their harmonics capped at l = 2 (7 message paths instead of 10)
    "ace64_l3_mp1m2_f32": [*_ACE64, "model.descriptor.lmax=3", "model.dtype=float32",
                           "model.descriptor.message_layers=1", "model.descriptor.message_lmax=2"],
}
MACE = {
    "mace_small": ["--hidden_irreps", "32x0e", "--num_interactions", "2", "--correlation", "3"],
    "mace": ["--hidden_irreps", "64x0e + 64x1o", "--num_interactions", "2", "--correlation", "3"],
}


#: datasets this benchmark builds with a real labeller (into ``--work``), besides the bundled ones
GENERATED = {
    "ethanol_xtb": "ethanol in vacuum, GFN2-xTB (tblite): Langevin MD at 300, 600 and 1,000 K, 0.5 fs, "
                   "200 frames each, every 10 steps (bench_active_learning.py's labeller and seed)",
    "alloy4": "random fcc Cu-Al-Ni-Ag alloys, 32 atoms, rattled and strained, EMT; 300 frames "
              "(bench_elements.py's 4-element set)",
}


def generated_dataset(name: str, work: Path) -> Path:
    """The dataset ``name`` of :data:`GENERATED`, built once into ``work``."""
    path = work / f"{name}.h5"
    if path.exists():
        return path
    if name == "alloy4":
        from bench_elements import SETS

        from nnpot.data.emt_alloys import emt_alloy_frames

        frames = emt_alloy_frames(SETS[4], 300, seed=4)
    else:
        from bench_active_learning import SYSTEMS, make_seed, reference_md

        label = make_seed.SYSTEMS["ethanol"][1]
        frames = [label.label(a).frame for k, temperature in enumerate((300.0, 600.0, 1000.0))
                  for a in reference_md(SYSTEMS["ethanol"], label, temperature, 2000, 10, 30 + k)]
    write_h5(frames, path)
    return path


def parse_model(spec: str) -> tuple[str, str, list[str]]:
    """``NAME`` (a preset or MACE size) or ``NAME=PRESET:KEY=VALUE,...`` (a variant of an nnpot
    preset with extra ``--set`` overrides): the run's name, its preset and the extra overrides."""
    if "=" not in spec.split(":", 1)[0]:
        return spec, spec, []
    name, _, rest = spec.partition("=")
    preset, _, sets = rest.partition(":")
    return name, preset, [s for s in sets.split(";") if s]


def split(data: Path, work: Path, seed: int = 0) -> tuple[Path, Path]:
    """80/20 split of ``data`` by a seeded permutation, as nnpot files."""
    ds = H5Dataset(data)
    order = np.random.default_rng(seed).permutation(len(ds))
    n_valid = max(1, int(round(0.2 * len(ds))))
    paths = (work / "train.h5", work / "valid.h5")
    for path, idx in zip(paths, (order[n_valid:], order[:n_valid])):
        if not path.exists():
            write_h5([ds[int(i)] for i in sorted(idx)], path)
    return paths


def write_extxyz(h5: Path, out: Path) -> None:
    """The frames of ``h5`` as extxyz with MACE's REF_energy / REF_forces keys."""
    import ase.io

    images = []
    for frame in H5Dataset(h5):
        atoms = frame.to_atoms()
        atoms.calc = None
        atoms.info["REF_energy"] = float(frame.energy)
        atoms.arrays["REF_forces"] = np.asarray(frame.forces, dtype=float)
        images.append(atoms)
    ase.io.write(out, images, format="extxyz")


def fitted_e0s(h5: Path) -> dict[int, float]:
    """Per-element energies from least squares on the training energies (minimum norm)."""
    frames = list(H5Dataset(h5))
    zs = sorted({int(z) for f in frames for z in f.numbers})
    counts = np.array([[np.sum(f.numbers == z) for z in zs] for f in frames], dtype=float)
    e0, *_ = np.linalg.lstsq(counts, np.array([f.energy for f in frames]), rcond=None)
    return {z: float(e) for z, e in zip(zs, e0)}


def mace_command(python: str, name: str, work: Path, seconds: float, e0s: dict[int, float], rcut: float,
                 train_frames: int) -> list[str]:
    """``mace_run_train`` for ``seconds``; it validates about every 200 training frames (every epoch
    at 200 frames or more), so that on small sets it does not spend its budget on validation."""
    exe = str(Path(python).with_name("mace_run_train"))
    every = max(1, -(-200 // max(train_frames, 1)))
    d = work / name
    return ["timeout", "--signal=TERM", str(int(seconds)), exe, "--name", name, "--seed", "0",
            "--train_file", str(work / "train.xyz"), "--valid_file", str(work / "valid.xyz"),
            "--energy_key", "REF_energy", "--forces_key", "REF_forces", "--E0s", json.dumps(e0s).replace('"', ""),
            "--model", "MACE", "--r_max", str(rcut), *MACE[name], "--batch_size", "5", "--valid_batch_size", "10",
            "--max_num_epochs", "100000", "--eval_interval", str(every), "--device", "cpu", "--default_dtype", "float64",
            "--ema", "--ema_decay", "0.99", "--amsgrad", "--error_table", "PerAtomRMSE",
            "--log_dir", str(d / "logs"), "--model_dir", str(d), "--checkpoints_dir", str(d / "checkpoints"),
            "--results_dir", str(d / "results")]


_EVAL = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.\d+ INFO: Epoch (\d+):.*?RMSE_E_per_atom=\s*([\d.]+) meV, "
                   r"RMSE_F=\s*([\d.]+) meV / A")


def mace_metrics(work: Path, name: str, started: float) -> dict:
    """Validation RMSEs per epoch from MACE's log: the last one scores the run, the best is kept beside it."""
    logs = sorted((work / name / "logs").glob("*.log"))
    curve = []
    for line in (logs[0].read_text().splitlines() if logs else []):
        m = _EVAL.search(line)
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() - started
            curve.append((round(t, 1), float(m.group(4)), float(m.group(3)), int(m.group(2))))
    if not curve:
        return {"error": "no validation in MACE's log"}
    last, best = curve[-1], min(curve, key=lambda x: x[1])
    return {"force_rmse_meV_A": last[1], "energy_rmse_meV_atom": last[2], "epochs": last[3] + 1,
            "best_force_rmse_meV_A": best[1], "curve": [(t, f) for t, f, _, _ in curve]}


def deepmd_metrics(out: Path) -> dict:
    """The RMSEs, steps and curve ``deepmd_job.py`` wrote."""
    m = json.loads((out / "metrics.json").read_text())
    return {"force_rmse_meV_A": 1000 * m["force_rmse"], "energy_rmse_meV_atom": 1000 * m["energy_rmse_per_atom"],
            "steps": m["steps"], "curve": m["curve"], "sel": m["sel"]}


def still_improving(curve: list) -> dict:
    """How far a learning curve fell over the last quarter of its run, and when it was lowest.

    A run has converged in the issue's sense when this gain is near zero: ``gain_last_quarter_pct``
    is the drop from the last point before three quarters of the run to its last point, in percent
    of the former; ``best_at_min`` is the time of the lowest point.
    """
    if len(curve) < 2:
        return {}
    t_end = curve[-1][0]
    before = [f for t, f in curve if t <= 0.75 * t_end] or [curve[0][1]]
    best_t = min(curve, key=lambda p: p[1])[0]
    return {"gain_last_quarter_pct": round(100 * (before[-1] - curve[-1][1]) / before[-1], 1),
            "best_at_min": round(best_t / 60, 1)}


def subset_curve(name: str) -> bool:
    """Whether ``name``'s learning curve scores a validation subset before its last point: nnpot
    validates a fixed subset of the held-out frames during the run and all of them at the end;
    MACE and DeePMD-kit score every held-out frame at every point."""
    return name not in MACE and name != "deepmd"


def plot(rows: dict, png: Path, title: str) -> None:
    """The learning curves against wall time; an nnpot curve is dashed over its validation subset
    and its final score on every held-out frame is a separate marker of the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, row in rows.items():
        curve = row.get("curve")
        if not curve:
            continue
        t, f = (np.array(v, dtype=float) for v in zip(*curve))
        if subset_curve(name) and len(t) > 1:
            line, = ax.plot(t[:-1] / 60, f[:-1], ls="--", marker=".", label=f"{name} (validation subset)")
            ax.plot(t[-1:] / 60, f[-1:], ls="none", marker="*", ms=12, color=line.get_color(),
                    label=f"{name}, all held-out frames")
        else:
            ax.plot(t / 60, f, marker=".", label=name)
    ax.set(xlabel="wall time (min)", ylabel="held-out force RMSE (meV/A)", yscale="log", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="molecule_C3H3O4",
                    help=f"a bundled dataset, an nnpot .h5 file, or one built here: {', '.join(GENERATED)}")
    ap.add_argument("--budget", default="30m")
    ap.add_argument("--models", nargs="+", default=["ace", "mace"],
                    help="presets, MACE sizes, or NAME=PRESET:KEY=VALUE;KEY=VALUE for a variant of a preset")
    ap.add_argument("--rcut", type=float, default=5.0, help="cutoff of every model, Angstrom")
    ap.add_argument("--mace-python", default="/work/peers/mace/bin/python")
    ap.add_argument("--dp-python", default=DP_PYTHON, help="a Python with deepmd-kit 3.2 (for the deepmd job)")
    ap.add_argument("--frames", type=int, default=0, help="train on the first N training frames only (0: all)")
    ap.add_argument("--work", default="runs/accuracy")
    ap.add_argument("--tag", default="", help="suffix of the result file's name")
    ap.add_argument("--replot", metavar="RESULT_JSON", help="only redraw the PNG beside a result file of this benchmark")
    args = ap.parse_args()
    if args.replot:
        replot(Path(args.replot))
        return
    from nnpot.errors import ConfigError
    from nnpot.training.config import parse_duration

    try:
        seconds = parse_duration(args.budget)
    except ConfigError as exc:
        raise SystemExit(f"--budget: {exc}") from None
    tag = f"{args.dataset}_{args.budget}" + (f"_{args.frames}frames" if args.frames else "")
    work = Path(args.work) / tag
    work.mkdir(parents=True, exist_ok=True)
    source = generated_dataset(args.dataset, Path(args.work)) if args.dataset in GENERATED else dataset_path(args.dataset)
    train, valid = split(source, work)
    if args.frames:
        available = len(H5Dataset(train))
        if not 0 < args.frames <= available:
            raise SystemExit(f"--frames {args.frames}: the training split has {available} frames; give 1 to "
                             f"{available}, or 0 for all")
        sub = work / f"train_{args.frames}.h5"
        if not sub.exists():
            write_h5([H5Dataset(train)[i] for i in range(args.frames)], sub)
        train = sub
    jobs = []
    for spec in args.models:
        name, preset, extra = parse_model(spec)
        if preset in PRESETS:
            overrides = [f"model.descriptor.rcut={args.rcut}"] + PRESETS[preset] + extra + ["valid_freq=100000"]
            cmd = train_command(train, work / name, args.budget, overrides)
            jobs.append((name, cmd[:4] + ["--valid-data", str(valid)] + cmd[4:]))
        elif name in MACE:
            for split_file, xyz in ((train, "train.xyz"), (valid, "valid.xyz")):
                if not (work / xyz).exists() or args.frames:
                    write_extxyz(split_file, work / xyz)
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # e3nn 0.4.4 under torch >= 2.6 (peers README)
            jobs.append((name, mace_command(args.mace_python, name, work, seconds, fitted_e0s(train), args.rcut,
                                            len(H5Dataset(train)))))
        elif name == "deepmd":
            jobs.append((name, [sys.executable, str(ROOT / "benchmarks" / "deepmd_job.py"), "--train", str(train),
                                "--valid", str(valid), "--out", str(work / name), "--budget", args.budget,
                                "--rcut", str(args.rcut), "--dp-python", args.dp_python]))
        else:
            raise SystemExit(f"unknown model {spec!r}; choose from {sorted(PRESETS) + sorted(MACE) + ['deepmd']}, "
                             "or NAME=PRESET:KEY=VALUE,... for a variant of an nnpot preset")
    t0 = time.time()
    runs = run_pairs(jobs, work)
    rows = {}
    print(f"{args.dataset}, {args.budget} each, one core each, two at a time")
    print(f"{'model':12s} {'force RMSE meV/A':>17s} {'best':>7s} {'energy meV/atom':>16s} {'steps/epochs':>13s} "
          f"{'last-quarter gain %':>20s}")
    for name, cmd in jobs:
        row = {"command": " ".join(cmd), **runs[name]}
        try:
            if name in MACE:
                row.update(mace_metrics(work, name, t0))
            elif name == "deepmd":
                row.update(deepmd_metrics(work / name))
            else:
                row.update(final_metrics(work / name))
        except (OSError, ValueError, KeyError) as exc:
            row["error"] = str(exc)
        curve = row.get("curve", [])
        # nnpot's last point scores every held-out frame, the ones before it a fixed subset
        row.update(still_improving(curve[:-1] if subset_curve(name) else curve))
        rows[name] = row
        if "force_rmse_meV_A" in row:
            print(f"{name:12s} {row['force_rmse_meV_A']:17.1f} {row.get('best_force_rmse_meV_A', float('nan')):7.1f} "
                  f"{row['energy_rmse_meV_atom']:16.1f} {row.get('steps', row.get('epochs', 0)):13d} "
                  f"{row.get('gain_last_quarter_pct', float('nan')):20.1f}")
        else:
            print(f"{name:12s} failed: {row.get('error', 'see log')}")
    out = ROOT / "benchmarks" / "results" / f"accuracy_{tag}{'_' + args.tag if args.tag else ''}.json"
    result = {"benchmark": "accuracy", "dataset": args.dataset, "budget": args.budget, "rcut": args.rcut,
              "frames": args.frames or "all", "date": time.strftime("%Y-%m-%d"),
              "machine": f"{os.cpu_count()} CPU cores, one thread per run, two runs at a time", "models": rows}
    out.write_text(json.dumps(result, indent=1))
    plot(rows, out.with_suffix(".png"), f"{args.dataset}: {args.budget} each")
    print(f"wrote {out}")


def replot(result: Path) -> None:
    """Redraw the learning-curve PNG beside ``result``, an ``accuracy_*.json`` of this benchmark."""
    try:
        data = json.loads(result.read_text())
        rows, title = data["models"], f"{data['dataset']}: {data['budget']} each"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"--replot: {result} is not a readable result of bench_accuracy.py ({exc})") from None
    plot(rows, result.with_suffix(".png"), title)
    print(f"wrote {result.with_suffix('.png')}")


if __name__ == "__main__":
    main()
