"""Accuracy at equal wall-clock time: nnpot against DeePMD-kit 3.2 on the bundled water data.

Both train the default water se_e2_a architecture on the same 80% of the frames (seed 0) for the
same wall-clock budget on the same cores, with the learning rate decaying from 1e-3 to 1e-5
over the budget (DeePMD-kit gets the number of steps it manages in that time, measured first,
and decay_steps = steps / 100), then both are evaluated on the same held-out 20%. DeePMD-kit keeps
its default energy weighting dE^2/N, which is nnpot's default too since 2026-11-29 (earlier rows
used (dE/N)^2; ``--set loss.energy_norm_exp=2`` gives it back).

    python benchmarks/bench_train_budget.py --budget 10m [--precision float64]
    python benchmarks/bench_train_budget.py --budget 10m --descriptors e3nn e3nn_mp1 --skip-deepmd
    python benchmarks/bench_train_budget.py --budget 30m --descriptors   # DeePMD-kit only
    python benchmarks/bench_train_budget.py --budget 60m --concurrent --threads 1   # both at once, a core each
    python benchmarks/bench_train_budget.py --dataset molecule_C3H3O4 --budget 10m --concurrent --threads 1

``--dataset`` names a bundled dataset (default water). For any but water both codes get the type
map of the data (by atomic number) and the same ``sel``: nnpot's ``sel: auto`` rule applied to
every frame (largest count within rcut + 10%, even).

``--descriptors`` names the nnpot models trained one after another (see ``bench_eval.MODEL_VARIANTS``): the
default se_e2_a, ``e3nn`` (strictly local) and ``e3nn_mp1`` (one self-interaction and one
message-passing layer, receptive field 2 rcut).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from nnpot.bundled import bundled_dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_eval import MODEL_VARIANTS  # noqa: E402
from bench_vs_deepmd import dp_config, dp_train_step, run  # noqa: E402


#: DeePMD-kit's own venv, as ``../shared/peers/README.md`` builds it
DP_PYTHON = str(ROOT / ".peers" / "dp" / "bin" / "python")


def run_deepmd(dp_python: str, train: Path, valid: Path, dpw: Path, seconds: float, type_map: list[str],
               sel: list[int], *, precision: str = "float64", threads: int = 1, rcut: float = 6.0,
               timing_in_budget: bool = False, valid_frames: int = 0) -> dict:
    """DeePMD-kit trained in ``dpw`` on the frames of ``train`` for the steps it manages in
    ``seconds`` (timed over its first 140 steps, inside the budget when ``timing_in_budget``), the
    learning rate decaying from 1e-3 to 1e-5 over them, then tested on every frame of ``valid``. With
    ``valid_frames`` it also validates on that many held-out frames 20 times along the way: the
    learning curve, ``(seconds, force RMSE meV/A)``."""
    import os

    from nnpot.data import H5Dataset, write_deepmd

    started = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), DP_INTRA_OP_PARALLELISM_THREADS=str(threads),
               DP_INTER_OP_PARALLELISM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    dp_cmd = [dp_python, "-m", "deepmd"]
    dpw = dpw.resolve()  # DeePMD-kit runs inside it
    dpw.mkdir(parents=True, exist_ok=True)
    write_deepmd(H5Dataset(train), dpw / "dpdata", type_map=type_map, force=True)
    write_deepmd(H5Dataset(valid), dpw / "dpvalid", type_map=type_map, force=True)
    step = dp_train_step(dp_cmd, dpw, env, 140, precision, type_map=type_map, sel=sel, rcut=rcut)
    left = seconds - (time.perf_counter() - started if timing_in_budget else 0.0)
    steps = max(20, int(left / step))
    cfg = dp_config(precision, type_map=type_map, sel=sel, rcut=rcut)
    training = cfg["training"]
    training["training_data"]["systems"] = [str(p) for p in sorted((dpw / "dpdata").iterdir()) if p.is_dir()]
    training.update(numb_steps=steps, disp_freq=max(1, steps // 20), save_freq=steps)
    if valid_frames:
        training["validation_data"] = {"systems": [str(p) for p in sorted((dpw / "dpvalid").iterdir()) if p.is_dir()],
                                       "batch_size": 1, "numb_btch": valid_frames}
    cfg["learning_rate"].update(decay_steps=max(1, steps // 100), stop_lr=1e-5)
    (dpw / "input.json").write_text(json.dumps(cfg, indent=1))
    t0 = time.perf_counter()
    run([*dp_cmd, "--pt", "train", "input.json"], dpw, env)
    wall = time.perf_counter() - t0
    run([*dp_cmd, "--pt", "freeze", "-o", "model.pth"], dpw, env)
    _, out = run([*dp_cmd, "--pt", "test", "-m", "model.pth", "-s", str(dpw / "dpvalid"), "-n", "100000"], dpw,
                 env, stderr=True)
    e = re.findall(r"Energy RMSE/Natoms\s*:\s*([0-9.eE+-]+)", out)
    f = re.findall(r"Force\s+RMSE\s*:\s*([0-9.eE+-]+)", out)
    result = {"energy_rmse_per_atom": float(e[-1]), "force_rmse": float(f[-1]), "steps": steps, "step_s": step,
              "wall_s": wall}
    if valid_frames:
        result["curve"] = lcurve(dpw / "lcurve.out", (t0 - started) if timing_in_budget else 0.0, wall / steps)
    return result


def lcurve(path: Path, offset_s: float, step_s: float) -> list[tuple[float, float]]:
    """``(seconds, validation force RMSE in meV/A)`` from DeePMD-kit's lcurve.out, the time of a
    step taken as ``offset_s + step * step_s``."""
    lines = path.read_text().splitlines()
    names = lines[0].lstrip("#").split()
    rows = [dict(zip(names, map(float, x.split()))) for x in lines[1:] if x.strip() and not x.startswith("#")]
    return [(round(offset_s + r["step"] * step_s, 1), 1000 * r["rmse_f_val"]) for r in rows if r["step"] > 0]


def valid_energy_swing(log: Path) -> dict[str, float]:
    """How much the validation energy RMSE (eV/atom) moves over the second half of a run: its
    lowest and highest value and the median change from one validation to the next."""
    import numpy as np

    e = np.array([json.loads(x)["energy_rmse_per_atom"] for x in log.read_text().splitlines()])
    e = e[len(e) // 2:]
    return {"min": float(e.min()), "max": float(e.max()),
            "median_step_change": float(np.median(np.abs(np.diff(e)))) if len(e) > 1 else 0.0}


def data_settings(dataset: str) -> tuple[list[str], list[int]]:
    """Type map and sel of both codes: DeePMD-kit's water example, or from the data."""
    if dataset == "water":
        return ["O", "H"], [46, 92]
    return frame_settings(bundled_dataset(dataset), 6.0)


def frame_settings(path: Path, rcut: float) -> tuple[list[str], list[int]]:
    """Type map (by atomic number) and sel of the frames of ``path``: nnpot's ``sel: auto`` rule
    (largest count within ``rcut`` + 10%, even)."""
    from ase.data import atomic_numbers

    from nnpot.data import H5Dataset
    from nnpot.training.auto_config import dataset_elements, neighbor_counts

    ds = H5Dataset(path)
    type_map = dataset_elements([ds])
    counts = neighbor_counts(list(ds), rcut, elements=[atomic_numbers[e] for e in type_map])
    return type_map, [counts["suggested_sel"][e] for e in type_map]


def main() -> None:
    import threading

    from nnpot.cli import main as nnpot_main
    from nnpot.data import split
    from nnpot.training.config import parse_duration

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="10m")
    p.add_argument("--dataset", default="water", help="a bundled dataset: water or molecule_C3H3O4")
    p.add_argument("--precision", default="float64", choices=["float64", "float32"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dp-python", default=DP_PYTHON)
    p.add_argument("--skip-deepmd", action="store_true")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra nnpot config override for every nnpot run (e.g. loss.energy_norm_exp=2)")
    p.add_argument("--tag", default="", help="suffix of the nnpot run folders and of the JSON file")
    p.add_argument("--descriptors", nargs="*", default=["se_e2_a"], choices=list(MODEL_VARIANTS),
                   help="nnpot models to train, one after another (none: DeePMD-kit only)")
    p.add_argument("--concurrent", action="store_true",
                   help="train DeePMD-kit at the same time as nnpot (give each code its cores with --threads)")
    args = p.parse_args()
    seconds = parse_duration(args.budget)
    name = "" if args.dataset == "water" else f"{args.dataset}_"
    work = ROOT / "runs" / f"budget_{name}{args.budget}_{args.precision}"
    work.mkdir(parents=True, exist_ok=True)
    split(bundled_dataset(args.dataset), [0.8, 0.2], [work / "train.h5", work / "valid.h5"], seed=0)
    args.type_map, args.sel = data_settings(args.dataset)
    result = {"budget": args.budget, "precision": args.precision, "threads": args.threads,
              "concurrent": args.concurrent}
    dp_result: dict = {}

    def deepmd() -> None:
        try:
            dp_result.update(run_deepmd(args.dp_python, work / "train.h5", work / "valid.h5", work / "deepmd",
                                        seconds, args.type_map, args.sel,
                                        precision=args.precision, threads=args.threads))
        except SystemExit as err:  # a thread would swallow it silently
            dp_result["error"] = str(err)

    dp_thread = threading.Thread(target=deepmd)
    if args.concurrent and not args.skip_deepmd:
        dp_thread.start()

    for desc in args.descriptors:
        key = ("nnpot" if desc == "se_e2_a" else f"nnpot_{desc}") + (f"_{args.tag}" if args.tag else "")
        t0 = time.perf_counter()
        sets = [f"threads={args.threads}", f"model.dtype={args.precision}", f"model.type_map=[{','.join(args.type_map)}]",
                f"model.descriptor.sel={args.sel}",  # the same as DeePMD-kit's, for a like-for-like run
                *(f"model.{k}={v}" for k, v in MODEL_VARIANTS[desc].items()), *args.sets]
        # --force: the run folders are this benchmark's own; a fresh run each time, never an old model
        if nnpot_main(["train", "--data", str(work / "train.h5"), "--valid-data", str(work / "valid.h5"), "--out",
                       str(work / key), "--max-time", args.budget, *(x for s in sets for x in ("--set", s)), "-q",
                       "--force"]):
            raise SystemExit(f"nnpot train failed for {key}")
        result[f"{key}_wall_s"] = time.perf_counter() - t0
        if nnpot_main(["test", "-m", str(work / key / "model.nnp"), "-d", str(work / "valid.h5"), "--json",
                       str(work / f"{key}_test.json"), "-q", "--force"]):
            raise SystemExit(f"nnpot test failed for {key}")
        m = json.loads((work / f"{key}_test.json").read_text())
        result[key] = {k: m[k] for k in ("energy_rmse_per_atom", "force_rmse")}
        log = [json.loads(x) for x in (work / key / "valid.jsonl").read_text().splitlines()]
        result[key]["steps"] = log[-1]["step"]
        result[key]["valid_energy_swing"] = valid_energy_swing(work / key / "valid.jsonl")

    if not args.skip_deepmd:
        if not args.concurrent:
            dp_thread.start()
        dp_thread.join()
        if "error" in dp_result:
            raise SystemExit(f"DeePMD-kit's run failed: {dp_result['error']}")
        result["deepmd"] = dp_result
        result["deepmd_wall_s"] = dp_result.pop("wall_s")
    print(json.dumps(result, indent=2))
    tag = "" if args.descriptors == ["se_e2_a"] else "_" + "_".join(args.descriptors or ["deepmd"])
    tag += f"_{args.tag}" if args.tag else ""
    tag += "_concurrent" if args.concurrent else ""
    result["nnpot_sets"] = args.sets
    out = ROOT / "benchmarks" / "results" / f"train_budget_{name}{args.budget}_{args.precision}{tag}.json"
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
