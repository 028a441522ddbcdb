"""nnpot against DeePMD-kit 3.2 (PyTorch backend) on the same data, architecture and machine.

Measures, in one run: training step time at batch 1 on the bundled water data (default water
recipe in both; DeePMD-kit's steady state against nnpot's first epoch, where it searches each
frame's neighbors, and its later epochs, where it reuses them), and energy+forces evaluation time per call for water boxes of several sizes
(float64, DeePMD-kit's default precision). DeePMD-kit runs in its own virtual environment
(see shared/peers/README.md); nothing of it is imported here.

    python benchmarks/bench_vs_deepmd.py --dp-python .peers/dp/bin/python --sizes 192 1536 12288
    python benchmarks/bench_vs_deepmd.py --device cuda --sizes 192 --share-embeddings off on   # both settings
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_eval import replicate_for  # noqa: E402

DP_INPUT = {
    "model": {
        "type_map": ["O", "H"],
        "descriptor": {"type": "se_e2_a", "sel": [46, 92], "rcut_smth": 0.5, "rcut": 6.0, "neuron": [25, 50, 100],
                       "resnet_dt": False, "axis_neuron": 16, "type_one_side": True, "seed": 1},
        "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True, "seed": 1},
    },
    "learning_rate": {"type": "exp", "decay_steps": 5000, "start_lr": 0.001, "stop_lr": 3.51e-8},
    "loss": {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1,
             "start_pref_v": 0, "limit_pref_v": 0},
    "training": {"training_data": {"systems": [], "batch_size": 1}, "numb_steps": 0, "seed": 10,
                 "disp_file": "lcurve.out", "disp_freq": 100000, "save_freq": 100000},
}

DP_EVAL = r'''
import json, sys, time
import numpy as np
from deepmd.infer import DeepPot
args = json.loads(sys.argv[1])
dp = DeepPot(args["model"])
out = []
for path in args["boxes"]:
    d = np.load(path)
    coord, cell, types = d["coord"][None], d["cell"].reshape(1, 9), d["types"].tolist()
    try:
        dp.eval(coord, cell, types)
        times = []
        for _ in range(args["repeats"]):
            t0 = time.perf_counter(); e, f, v = dp.eval(coord, cell, types); times.append(time.perf_counter() - t0)
        out.append({"atoms": len(types), "eval_s": min(times), "energy": float(np.ravel(e)[0])})
    except Exception as exc:  # out of memory and the like are results too
        out.append({"atoms": len(types), "error": f"{type(exc).__name__}: {str(exc)[-400:]}"})
print("JSON" + json.dumps(out))
'''


def run(cmd, cwd, env, stderr=False):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stdout + (proc.stderr if stderr else "")


def dp_config(precision: str) -> dict:
    cfg = json.loads(json.dumps(DP_INPUT))
    cfg["model"]["descriptor"]["precision"] = precision
    cfg["model"]["fitting_net"]["precision"] = precision
    return cfg


def dp_train_step(dp_cmd: list[str], work: Path, env, steps: int, precision: str, every: int = 20) -> float:
    """Seconds per training step from DeePMD-kit's own log ("Batch N: total wall time = T s" per
    ``every`` batches), leaving out the first interval (start-up, statistics)."""
    import re

    cfg = dp_config(precision)
    cfg["training"]["training_data"]["systems"] = [str(p) for p in sorted((work / "dpdata").iterdir())]
    cfg["training"]["numb_steps"] = steps
    cfg["training"]["disp_freq"] = every
    (work / "input.json").write_text(json.dumps(cfg, indent=1))
    _, out = run([*dp_cmd, "--pt", "train", "input.json"], work, env, stderr=True)
    walls = [float(t) for t in re.findall(r"Batch\s+\d+: total wall time = ([0-9.]+) s", out)]
    if len(walls) < 3:
        raise SystemExit(f"could not read DeePMD-kit's timings:\n{out[-2000:]}")
    return float(np.mean(walls[2:])) / every


def nnpot_train_step_time(steps: int, threads: int, precision: str, device: str = "cpu",
                          share_embeddings: str = "auto") -> dict[str, float]:
    """Seconds per nnpot training step at batch 1: ``first_epoch`` (each frame's neighbor list
    and embedding plan made in the step, as DeePMD-kit does in every step) and ``cached`` (a
    later epoch, where they are reused: the steady state of a run longer than one epoch)."""
    from nnpot.potentials.train import Trainer
    from nnpot.potentials.train_config import load_train_config

    config = load_train_config(None, [f"num_steps={steps * 100}", "valid_freq=1000000", f"threads={threads}",
                                      f"model.dtype={precision}", f"device={device}",
                                      f"share_embeddings={share_embeddings}"],
                               {"data": str(ROOT / "examples" / "data" / "water.h5")})
    trainer = Trainer(config, ROOT / "runs" / "bench_nnpot_train", progress=False)
    epoch = len(trainer.train_idx)

    def timed(n: int) -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            trainer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n

    timed(5)
    first = timed(min(steps, epoch - 5))
    timed(epoch - 5 - min(steps, epoch - 5))  # the rest of the first epoch
    return {"first_epoch": first, "cached": timed(steps)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dp-python", default=str(ROOT / ".peers" / "dp" / "bin" / "python"))
    p.add_argument("--sizes", type=int, nargs="+", default=[192, 1536, 12288])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precision", choices=["float64", "float32"], default="float64", help="both codes, same precision")
    p.add_argument("--device", default="cpu", help="cpu or cuda, for both codes")
    p.add_argument("--tabulate", action="store_true", help="also time nnpot with tabulated embedding nets")
    p.add_argument("--share-embeddings", nargs="+", default=["auto"], choices=["auto", "on", "off"],
                   help="nnpot training setting(s) to time (TrainConfig.share_embeddings), each in turn")
    p.add_argument("--json", help="default benchmarks/results/vs_deepmd_<precision>[_cuda].json")
    args = p.parse_args()
    args.json = args.json or str(ROOT / "benchmarks" / "results" / f"vs_deepmd_{args.precision}{'_cuda' if args.device != 'cpu' else ''}.json")
    torch.set_num_threads(args.threads)
    from nnpot.data import H5Dataset, write_deepmd
    from nnpot.potentials import EnergyModel, apply_stats, derivatives, make_batch

    work = ROOT / "runs" / "bench_dp"
    work.mkdir(parents=True, exist_ok=True)
    ds = H5Dataset(ROOT / "examples" / "data" / "water.h5")
    write_deepmd(ds, work / "dpdata", type_map=["O", "H"])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), DP_INTRA_OP_PARALLELISM_THREADS=str(args.threads),
               DP_INTER_OP_PARALLELISM_THREADS="1")
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    dp_cmd = [args.dp_python, "-m", "deepmd"]
    dp_step = dp_train_step(dp_cmd, work, env, 40 + args.train_steps, args.precision)
    run([*dp_cmd, "--pt", "freeze", "-o", "model.pth"], work, env)
    nn_steps = {k: nnpot_train_step_time(args.train_steps, args.threads, args.precision, args.device, k)
                for k in args.share_embeddings}
    nn_step = nn_steps[args.share_embeddings[0]]["cached"]

    base = ds[0].to_atoms()
    boxes = []
    for n in args.sizes:
        atoms = base.repeat(replicate_for(n))
        path = work / f"box_{n}.npz"
        np.savez(path, coord=atoms.positions.reshape(-1), cell=atoms.cell.array, types=(atoms.numbers == 1).astype(int))
        boxes.append((atoms, path))
    _, out = run([args.dp_python, "-c", DP_EVAL, json.dumps({"model": str(work / "model.pth"), "repeats": args.repeats,
                                                            "boxes": [str(b[1]) for b in boxes]})], work, env)
    dp_eval = json.loads(out.split("JSON", 1)[1])
    model = EnergyModel()
    frames = [ds[i] for i in range(0, 320, 40)]
    apply_stats(model, frames, np.array([f.energy for f in frames]))
    model = model.to(dtype=getattr(torch, args.precision), device=args.device).eval()
    tabulated = model.tabulated() if args.tabulate else None

    def eval_time(m, atoms) -> float:  # neighbor list included, best of the repeats after a warm-up
        times = []
        for _ in range(args.repeats + 1):
            t0 = time.perf_counter()
            batch = make_batch([atoms], m.type_map, m.cutoff, m.sel, dtype=m.dtype, device=args.device)
            float(derivatives(m, batch, chunk_size=8192)["energy"][0])  # synchronises
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    rows = []
    for (atoms, _), dp_row in zip(boxes, dp_eval):
        nn_t = eval_time(model, atoms)
        dp_t = dp_row.get("eval_s")
        rows.append({"atoms": len(atoms), "nnpot_s": nn_t, "deepmd_s": dp_t, "deepmd_error": dp_row.get("error"),
                     "speedup": (dp_t / nn_t) if dp_t else None})
        if tabulated is not None:
            rows[-1]["nnpot_tabulated_s"] = tab_t = eval_time(tabulated, atoms)
            rows[-1]["speedup_tabulated"] = (dp_t / tab_t) if dp_t else None
    print(f"precision {args.precision}")
    for k, t in nn_steps.items():
        print(f"training step, batch 1, water, {args.device}, {args.threads} threads, share_embeddings={k}: nnpot "
              f"{t['cached']:.3f} s (first epoch {t['first_epoch']:.3f} s), DeePMD-kit {dp_step:.3f} s -> "
              f"{dp_step / t['cached']:.2f}x ({dp_step / t['first_epoch']:.2f}x)")
    print(f"{'atoms':>8} {'nnpot (s)':>10} {'DeePMD-kit (s)':>15} {'DeePMD/nnpot':>13}   (energy+forces, {args.precision}, {args.device})")
    for r in rows:
        dp_text = f"{r['deepmd_s']:15.3f}" if r["deepmd_s"] else f"{'failed':>15}"
        ratio = f"{r['speedup']:13.2f}" if r["speedup"] else f"{'-':>13}"
        tab = (f"   tabulated {r['nnpot_tabulated_s']:.4f} s ({r['speedup_tabulated']:.2f}x)"
               if r.get("speedup_tabulated") else "")
        print(f"{r['atoms']:>8} {r['nnpot_s']:10.4f} {dp_text} {ratio}{tab}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"precision": args.precision, "device": args.device, "threads": args.threads, "train_step_s": {"nnpot": nn_step, "deepmd": dp_step, "nnpot_by_setting": nn_steps},
                                           "eval": rows, "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
