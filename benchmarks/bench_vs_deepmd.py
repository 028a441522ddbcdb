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

from nnpot.bundled import bundled_dataset

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

# Each evaluation runs in a process of its own, so that its peak memory is its own: the host's
# peak resident set on CPU, torch's peak allocation on CUDA. Both print one JSON line.
PEAK = r'''
def peak_mib(device):
    import resource, torch
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
'''

DP_EVAL = PEAK + r'''
import json, sys, time
import numpy as np
from deepmd.infer import DeepPot
args = json.loads(sys.argv[1])
dp = DeepPot(args["model"])
d = np.load(args["box"])
coord, cell, types = d["coord"][None], d["cell"].reshape(1, 9), d["types"].tolist()
try:
    dp.eval(coord, cell, types)
    times = []
    for _ in range(args["repeats"]):
        t0 = time.perf_counter(); e, f, v = dp.eval(coord, cell, types); times.append(time.perf_counter() - t0)
    out = {"eval_s": min(times), "peak_MiB": peak_mib(args["device"])}
except Exception as exc:  # out of memory and the like are results too
    out = {"error": f"{type(exc).__name__}: {str(exc)[-400:]}"}
print("JSON" + json.dumps(out))
'''

NN_EVAL = PEAK + r'''
import json, sys, time
import numpy as np
import torch
from ase import Atoms
from nnpot.potentials import derivatives, make_batch
from nnpot.potentials.modelfile import load_model
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
m = load_model(args["model"], device=args["device"]).to(getattr(torch, args["dtype"]))
if args["tabulate"]:
    m = m.tabulated()
d = np.load(args["box"])
atoms = Atoms(numbers=np.where(d["types"] == 0, 8, 1), positions=d["coord"].reshape(-1, 3), cell=d["cell"], pbc=True)
times = []
for _ in range(args["repeats"] + 1):  # neighbor list included, best of the repeats after a warm-up
    t0 = time.perf_counter()
    batch = make_batch([atoms], m.type_map, m.cutoff, m.sel, dtype=m.dtype, device=args["device"])
    float(derivatives(m, batch, chunk_size=8192)["energy"][0])  # synchronises
    times.append(time.perf_counter() - t0)
print("JSON" + json.dumps({"eval_s": min(times[1:]), "peak_MiB": peak_mib(args["device"])}))
'''


def run(cmd, cwd, env, stderr=False):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stdout + (proc.stderr if stderr else "")


def dp_config(precision: str, type_map: list[str] | None = None, sel: list[int] | None = None,
              rcut: float = 6.0) -> dict:
    cfg = json.loads(json.dumps(DP_INPUT))
    cfg["model"]["descriptor"]["rcut"] = rcut
    if type_map is not None:
        cfg["model"]["type_map"], cfg["model"]["descriptor"]["sel"] = list(type_map), list(sel)
    cfg["model"]["descriptor"]["precision"] = precision
    cfg["model"]["fitting_net"]["precision"] = precision
    return cfg


def dp_train_step(dp_cmd: list[str], work: Path, env, steps: int, precision: str, every: int = 20,
                  type_map: list[str] | None = None, sel: list[int] | None = None, rcut: float = 6.0) -> float:
    """Seconds per training step from DeePMD-kit's own log ("Batch N: total wall time = T s" per
    ``every`` batches), leaving out the first interval (start-up, statistics)."""
    import re

    cfg = dp_config(precision, type_map, sel, rcut)
    cfg["training"]["training_data"]["systems"] = [str(p) for p in sorted((work / "dpdata").iterdir()) if p.is_dir()]
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
    from nnpot.training.trainer import Trainer
    from nnpot.training.config import load_train_config

    config = load_train_config(None, [f"num_steps={steps * 100}", "valid_freq=1000000", f"threads={threads}",
                                      f"model.dtype={precision}", f"device={device}",
                                      f"model.descriptor.share_embeddings={share_embeddings}",
                                      "model.type_map=[O,H]", "model.descriptor.sel=[46,92]"],  # DeePMD-kit's
                               {"data": str(bundled_dataset("water"))})
    import tempfile

    trainer = Trainer(config, Path(tempfile.mkdtemp(prefix="bench_nnpot_train_")), progress=False)
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
                   help="nnpot training setting(s) to time (model.descriptor.share_embeddings), each in turn")
    p.add_argument("--dp-max", type=int, default=1 << 30, help="largest box given to DeePMD-kit's evaluation")
    p.add_argument("--skip-train", action="store_true", help="time energy+forces only")
    p.add_argument("--json", help="default benchmarks/results/vs_deepmd_<precision>[_cuda].json")
    args = p.parse_args()
    if "/" in args.dp_python:  # a path: absolute, since DeePMD-kit runs in its own work folder
        args.dp_python = os.path.abspath(args.dp_python)
    args.json = args.json or str(ROOT / "benchmarks" / "results" / f"vs_deepmd_{args.precision}{'_cuda' if args.device != 'cpu' else ''}.json")
    torch.set_num_threads(args.threads)
    from nnpot.data import H5Dataset, write_deepmd
    from nnpot.potentials import EnergyModel, apply_stats
    from nnpot.potentials.modelfile import save_model

    work = ROOT / "runs" / "bench_dp"
    work.mkdir(parents=True, exist_ok=True)
    ds = H5Dataset(bundled_dataset("water"))
    write_deepmd(ds, work / "dpdata", type_map=["O", "H"], force=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), DP_INTRA_OP_PARALLELISM_THREADS=str(args.threads),
               DP_INTER_OP_PARALLELISM_THREADS="1")
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    dp_cmd = [args.dp_python, "-m", "deepmd"]
    dp_step = dp_train_step(dp_cmd, work, env, 60 if args.skip_train else 40 + args.train_steps, args.precision)
    run([*dp_cmd, "--pt", "freeze", "-o", "model.pth"], work, env)
    nn_steps = {} if args.skip_train else {
        k: nnpot_train_step_time(args.train_steps, args.threads, args.precision, args.device, k)
        for k in args.share_embeddings}
    nn_step = nn_steps[args.share_embeddings[0]]["cached"] if nn_steps else None

    base = ds[0].to_atoms()
    boxes = []
    for n in args.sizes:
        atoms = base.repeat(replicate_for(n))
        path = work / f"box_{n}.npz"
        np.savez(path, coord=atoms.positions.reshape(-1), cell=atoms.cell.array, types=(atoms.numbers == 1).astype(int))
        boxes.append((atoms, path))
    model = EnergyModel()
    frames = [ds[i] for i in range(0, 320, 40)]
    apply_stats(model, frames, np.array([f.energy for f in frames]))
    save_model(model, work / "nnpot_model.nnp")

    def child(python: str, code: str, box: Path, **extra) -> dict:
        spec = {"box": str(box), "repeats": args.repeats, "device": args.device, **extra}
        return json.loads(run([python, "-c", code, json.dumps(spec)], work, env)[1].split("JSON", 1)[1])

    rows = []
    for atoms, path in boxes:
        nn = child(sys.executable, NN_EVAL, path, model=str(work / "nnpot_model.nnp"), threads=args.threads,
                   dtype=args.precision, tabulate=False)
        dp = (child(args.dp_python, DP_EVAL, path, model=str(work / "model.pth")) if len(atoms) <= args.dp_max
              else {"error": f"not run (--dp-max {args.dp_max})"})
        dp_t = dp.get("eval_s")
        rows.append({"atoms": len(atoms), "nnpot_s": nn["eval_s"], "nnpot_peak_MiB": nn["peak_MiB"], "deepmd_s": dp_t,
                     "deepmd_peak_MiB": dp.get("peak_MiB"), "deepmd_error": dp.get("error"),
                     "speedup": (dp_t / nn["eval_s"]) if dp_t else None})
        if args.tabulate:
            tab = child(sys.executable, NN_EVAL, path, model=str(work / "nnpot_model.nnp"), threads=args.threads,
                        dtype=args.precision, tabulate=True)
            rows[-1]["nnpot_tabulated_s"] = tab_t = tab["eval_s"]
            rows[-1]["nnpot_tabulated_peak_MiB"] = tab["peak_MiB"]
            rows[-1]["speedup_tabulated"] = (dp_t / tab_t) if dp_t else None
    print(f"precision {args.precision}")
    for k, t in nn_steps.items():
        print(f"training step, batch 1, water, {args.device}, {args.threads} threads, share_embeddings={k}: nnpot "
              f"{t['cached']:.3f} s (first epoch {t['first_epoch']:.3f} s), DeePMD-kit {dp_step:.3f} s -> "
              f"{dp_step / t['cached']:.2f}x ({dp_step / t['first_epoch']:.2f}x)")
    print(f"{'atoms':>8} {'nnpot (s)':>10} {'peak MiB':>9} {'DeePMD-kit (s)':>15} {'peak MiB':>9} {'DeePMD/nnpot':>13}"
          f"   (energy+forces, {args.precision}, {args.device})")
    for r in rows:
        dp_text = (f"{r['deepmd_s']:15.3f} {r['deepmd_peak_MiB']:9.0f}" if r["deepmd_s"]
                   else f"{'failed' if 'not run' not in r['deepmd_error'] else 'not run':>15} {'-':>9}")
        ratio = f"{r['speedup']:13.2f}" if r["speedup"] else f"{'-':>13}"
        tab = (f"   tabulated {r['nnpot_tabulated_s']:.4f} s" + (f" ({r['speedup_tabulated']:.2f}x)" if r["speedup_tabulated"] else "")
               if "nnpot_tabulated_s" in r else "")
        print(f"{r['atoms']:>8} {r['nnpot_s']:10.4f} {r['nnpot_peak_MiB']:9.0f} {dp_text} {ratio}{tab}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"precision": args.precision, "device": args.device, "threads": args.threads, "train_step_s": {"nnpot": nn_step, "deepmd": dp_step, "nnpot_by_setting": nn_steps},
                                           "eval": rows, "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
