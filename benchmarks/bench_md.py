"""MD throughput, side by side in one run: nnpot's driver (CUDA graphs where available, and eager),
ASE's VelocityVerlet with NNPotCalculator (same model), and DeePMD-kit 3.2 + ASE's
VelocityVerlet (same architecture, float64, with and without vesin's O(N) neighbor list), on water
boxes replicated from the bundled data. Also: many 192-atom replicas in one batch, and the largest
box that runs. Prints a table and writes JSON.

    python benchmarks/bench_md.py --device cpu --sizes 192 1536 --dtypes float64 float32
    python benchmarks/bench_md.py --device cuda --sizes 192 1536 12288 98304 786432 \\
        --dp-python python3 --largest 1119744

DeePMD-kit's frozen model: --dp-model (benchmarks/bench_vs_deepmd.py writes runs/bench_dp/model.pth).
nnpot's model uses sel [48, 96] instead of [46, 92]: at 300 K these boxes soon have an atom with 93
H neighbors inside 6 A, which nnpot refuses (DeePMD-kit silently drops the farthest). nnpot's MD
speed does not depend on sel: its neighbor blocks are cut to the counts actually found.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from ase import units
from ase.md.verlet import VelocityVerlet as AseVelocityVerlet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_eval import replicate_for, water_model  # noqa: E402

from nnpot.md.state import thermalize  # noqa: E402

DP_MD = r'''
import json, sys, time
from ase.io import read
from ase import units
from ase.md.verlet import VelocityVerlet
from deepmd.calculator import DP
args = json.loads(sys.argv[1])
atoms = read(args["structure"])
atoms.calc = DP(model=args["model"])
dyn = VelocityVerlet(atoms, 0.5 * units.fs)
try:
    dyn.run(2)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args["seconds"]:
        dyn.run(5); steps += 5
    print("JSON" + json.dumps({"steps_per_s": steps / (time.perf_counter() - t0)}))
except Exception as exc:  # out of memory is a result too
    print("JSON" + json.dumps({"error": f"{type(exc).__name__}: {str(exc)[:300]}"}))
'''


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def rate(run, seconds: float, device: str, first: int = 10) -> float:
    """Steps per second of ``run(k)``, timed for at least ``seconds`` after a warm-up."""
    run(first)
    sync(device)
    steps, k, t0 = 0, first, time.perf_counter()
    while True:
        run(k)
        steps += k
        sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return steps / elapsed
        k = max(k, int(steps * (seconds - elapsed) / elapsed / 2) + 1)


def deepmd_rate(args, atoms0, n: int, vesin: bool) -> float | str | None:
    if not args.dp_python or not Path(args.dp_model).exists():
        return None
    path = ROOT / "runs" / f"bench_md_{n}.extxyz"
    path.parent.mkdir(exist_ok=True)
    atoms0.write(path)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), DP_INTRA_OP_PARALLELISM_THREADS=str(args.threads),
               DP_INTER_OP_PARALLELISM_THREADS="1")
    if vesin:
        env["PYTHONPATH"] = f"{env.get('PYTHONPATH', '')}:{args.vesin_path}"
    if not args.device.startswith("cuda"):
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run([args.dp_python, "-c", DP_MD, json.dumps({"structure": str(path), "model": args.dp_model,
                           "seconds": args.seconds})], capture_output=True, text=True, env=env)
    if "JSON" not in proc.stdout:
        return f"failed: {proc.stderr[-300:]}"
    out = json.loads(proc.stdout.split("JSON", 1)[1])
    return out.get("steps_per_s", out.get("error"))


def peak_mib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


def main() -> None:
    from nnpot import NNPotCalculator
    from nnpot.md import Replicas, VelocityVerlet

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[192, 1536])
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    p.add_argument("--seconds", type=float, default=3.0, help="time each measurement at least this long")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk", type=int, default=16384, help="atoms per model chunk")
    p.add_argument("--ase-max", type=int, default=98304, help="largest size for ASE's VelocityVerlet + calculator")
    p.add_argument("--eager-max", type=int, default=12288, help="largest size for the eager (no CUDA graph) driver")
    p.add_argument("--compile-sizes", type=int, nargs="*", default=[], help="sizes to also run with torch.compile (tabulated model with --tabulate)")
    p.add_argument("--dp-python", default=str(ROOT / ".peers" / "dp" / "bin" / "python"))
    p.add_argument("--dp-model", default=str(ROOT / "runs" / "bench_dp" / "model.pth"))
    p.add_argument("--dp-max", type=int, default=12288)
    p.add_argument("--vesin-path", default="", help="a folder holding vesin, to also run DeePMD-kit with it")
    p.add_argument("--replicas", type=int, nargs="*", default=[], help="replica counts of the 192-atom box")
    p.add_argument("--largest", type=int, nargs="*", default=[], help="float32 sizes to try for the largest box")
    p.add_argument("--model", help="a trained .nnp (physical forces; a random model heats the box and forces "
                                   "frequent neighbor rebuilds), its sel widened to [48, 96] as above; or a DeePMD-kit "
                                   ".dp/.yaml, run as it is with its own sel")
    p.add_argument("--sel", type=int, nargs=2, default=[48, 96],
                   help="nnpot's sel for O and H (room above DeePMD's [46, 92] for long hot runs)")
    p.add_argument("--tabulate", action="store_true",
                   help="also run nnpot's driver with tabulated embedding nets (and use them for replicas/largest)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "md.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.dp_python and not (Path(args.dp_python).exists() or args.dp_python in ("python3", "python")):
        args.dp_python = ""
    base, model = water_model(sel=tuple(args.sel))
    if args.model:
        from nnpot import load_model
        from nnpot.interop.deepmd_file import is_deepmd_file

        if is_deepmd_file(args.model):  # a DeePMD-kit model runs as it is, with its own sel
            model = load_model(args.model)
            args.sel = list(model.sel)
        else:
            model.load_state_dict(load_model(args.model).state_dict())
    tabulated = model.tabulated() if args.tabulate else None
    fast = tabulated if tabulated is not None else model
    gpu = args.device.startswith("cuda")
    rows, extra = [], {}
    meta = {"threads": args.threads, "torch": torch.__version__, "chunk": args.chunk,
            "gpu": torch.cuda.get_device_name() if gpu else None, "model": args.model or "random weights",
            "sel": args.sel, "tabulate": args.tabulate}

    def save() -> None:  # after every row, so a run cut short keeps what it measured
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**meta, "rows": rows, **extra}, indent=2))

    print(f"{'atoms':>8} {'dtype':>8}  {'driver':>10} {'us/atom-step':>12} {'eager':>9} {'ASE VV+calc':>11} "
          f"{'DeePMD+ASE':>10} {'+vesin':>9} {'x DeePMD':>8}  (steps/s, {args.device})")
    for n in args.sizes:
        atoms0 = base.repeat(replicate_for(n))
        thermalize(atoms0, 300, 0, stationary=False)
        dp = deepmd_rate(args, atoms0, n, vesin=False) if n <= args.dp_max else None
        dp_v = deepmd_rate(args, atoms0, n, vesin=True) if args.vesin_path and n <= args.dp_max else None
        for dtype in args.dtypes:
            row = {"atoms": n, "dtype": dtype, "device": args.device, "deepmd_ase_float64": dp,
                   "deepmd_ase_vesin_float64": dp_v}
            first = 50 if n <= 12288 else 10 if n <= 98304 else 3

            def measure(key: str, m, **driver_kw) -> None:
                """One driver timing; an error (out of memory, overflow) is recorded under its key."""
                try:
                    if gpu:
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                    a = atoms0.copy()
                    a.calc = NNPotCalculator(m, device=args.device, dtype=dtype, chunk_size=args.chunk)
                    dyn = VelocityVerlet(a, 0.5 * units.fs, **driver_kw)
                    row[key] = rate(dyn.run, args.seconds, args.device, first=first)
                    row[f"{key}_us_per_atom_step"] = 1e6 / row[key] / n
                    row[f"{key}_peak_MiB"] = peak_mib(args.device)
                    row[f"{key}_neighbor_builds"] = dyn.force_fn.evaluator.nlist.n_builds
                    row[f"{key}_rollbacks"] = dyn._graphs.n_rollbacks if dyn._graphs is not None else None
                    row["slots"], row["inner_slots"] = list(dyn.force_fn.evaluator.nlist.capacity), list(dyn.force_fn.evaluator.nlist.inner_capacity)
                except Exception as exc:  # out of memory and the like are results too
                    row[f"{key}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"

            measure("driver", model)
            if tabulated is not None:
                measure("driver_tabulated", tabulated)
            if n in args.compile_sizes:
                measure("driver_compiled", fast, compile=True)
            if gpu and n <= args.eager_max:
                measure("driver_eager", fast, cuda_graphs=False)
            if n <= args.ase_max:
                try:
                    c = atoms0.copy()
                    c.calc = NNPotCalculator(fast, device=args.device, dtype=dtype, chunk_size=args.chunk)
                    row["ase_vv_nnpot_calc"] = rate(AseVelocityVerlet(c, 0.5 * units.fs).run, args.seconds,
                                                    args.device, first=2)
                except Exception as exc:
                    row["ase_vv_nnpot_calc_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            row["us_per_atom_step"] = row.get("driver_us_per_atom_step")
            row["us_per_atom_step_tabulated"] = row.get("driver_tabulated_us_per_atom_step")
            best_dp = max([x for x in (dp, dp_v) if isinstance(x, float)], default=None)
            row["ratio_vs_deepmd"] = row["driver"] / best_dp if best_dp and "driver" in row else None
            row["ratio_tabulated_vs_deepmd"] = (row["driver_tabulated"] / best_dp
                                                if best_dp and "driver_tabulated" in row else None)
            rows.append(row)
            f = lambda x: f"{x:.1f}" if isinstance(x, float) else ("-" if x is None else "fail")  # noqa: E731
            print(f"{n:>8} {dtype:>8}  {f(row.get('driver')):>10} {f(row.get('us_per_atom_step')):>12} "
                  f"{f(row.get('driver_eager')):>9} {f(row.get('ase_vv_nnpot_calc')):>11} {f(dp):>10} {f(dp_v):>9} "
                  f"{f(row['ratio_vs_deepmd']):>8}  tabulated {f(row.get('driver_tabulated'))} "
                  f"({f(row.get('us_per_atom_step_tabulated'))} us, x{f(row.get('ratio_tabulated_vs_deepmd'))}) compiled {f(row.get('driver_compiled'))} builds {row.get('neighbor_builds')} "
                  f"rollbacks {row.get('driver_rollbacks')} slots {row.get('slots')} "
                  f"{' '.join(v for k, v in row.items() if k.endswith('_error'))}", flush=True)
            save()
    for r in args.replicas:
        images = []
        for k in range(r):
            a = base.copy()
            thermalize(a, 300, k, stationary=False)
            images.append(a)
        for dtype in args.dtypes:
            reps = Replicas(images, fast, 0.5 * units.fs, device=args.device, dtype=dtype, chunk_size=args.chunk)
            steps = rate(reps.run, args.seconds, args.device)
            extra.setdefault("replicas", []).append({"replicas": r, "atoms_each": len(base), "dtype": dtype,
                                                      "steps_per_s": steps, "replica_steps_per_s": steps * r,
                                                      "us_per_atom_step": 1e6 / (steps * r * len(base))})
            print(f"replicas {r:>5} x {len(base)} atoms {dtype:>8}: {steps:8.1f} steps/s, {steps * r:10.0f} replica-steps/s, "
                  f"{1e6 / (steps * r * len(base)):.3f} us/atom-step", flush=True)
            save()
    for n in args.largest:
        atoms0 = base.repeat(replicate_for(n))
        thermalize(atoms0, 300, 0, stationary=False)
        entry = {"atoms": n, "dtype": "float32"}
        try:
            if gpu:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            a = atoms0
            a.calc = NNPotCalculator(fast, device=args.device, dtype="float32", chunk_size=args.chunk)
            dyn = VelocityVerlet(a, 0.5 * units.fs)
            entry["tabulated"] = tabulated is not None
            entry["steps_per_s"] = rate(dyn.run, args.seconds, args.device, first=2)
            entry["us_per_atom_step"] = 1e6 / entry["steps_per_s"] / n
            entry["peak_MiB"] = peak_mib(args.device)
            del dyn
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        extra.setdefault("largest", []).append(entry)
        print(f"largest try {n:>9} atoms float32: {entry}", flush=True)
        save()
    save()


if __name__ == "__main__":
    main()
