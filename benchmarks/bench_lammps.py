"""LAMMPS + nnpot against nnpot's own MD driver and DeePMD-kit's ``pair_style deepmd``, side by
side in one run, on water boxes of 1,536 and 12,288 atoms, on 1 and 2 CPU ranks.

The model is the DeePMD-kit-trained water model of the interop benchmark
(``runs/dp_water/model.dp``, from ``bench_deepmd_import.py``): DeePMD-kit runs it as
``model.pth``, nnpot as the ``.nnp`` that ``nnpot convert`` makes of it, so both evaluate the
same se_e2_a network (sel 46/92, embedding 25-50-100, fitting 240x3). NVE at 300 K, 0.5 fs,
``neighbor 2.0 bin``; timings are LAMMPS's own ``Loop time`` (setup excluded) and, for the
driver, the wall time of the steps after two warm-up steps. One thread per MPI rank; the
driver (a single process) gets as many threads as the LAMMPS runs get ranks.

DeePMD-kit's LAMMPS plugin needs torch 2.11: it runs from its own venv (``--dp-venv``,
shared/peers/README.md); its model is float64 (DeePMD-kit fixes the precision at training).

Also measured, from the same runs: how a rank's time splits between the model on its own
atoms and the work that grows with its ghost atoms (neighbor search over them, the force
exchange), from which the efficiency at 8, 64 and 512 GPUs for 10 million water atoms is
estimated on paper.

    python benchmarks/bench_lammps.py                      # ~20 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

INPUT = """units metal
atom_style atomic
atom_modify map yes
read_data {data}
{pair}
timestep 0.0005
neighbor 2.0 bin
neigh_modify every 1 delay 0 check yes
velocity all create 300 20261130 mom yes rot yes dist gaussian
fix nve all nve
thermo_style custom step temp pe etotal press
thermo {steps}
run {steps}
"""


def run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout + proc.stderr


def loop_time(out: str) -> tuple[float, int, dict[str, float]]:
    """LAMMPS's loop time, steps, and its timing breakdown (section -> % of the loop)."""
    m = re.search(r"Loop time of (\S+) on \d+ procs for (\d+) steps", out)
    if not m:
        raise RuntimeError(f"no Loop time line in:\n{out[-2000:]}")
    parts = {k: float(p) for k, p in re.findall(r"^(\w+)\s*\|[^|]+\|[^|]+\|[^|]+\|[^|]+\|\s*([\d.]+)\s*$", out, re.M)}
    return float(m.group(1)), int(m.group(2)), parts


def driver_rate(model: Path, data: Path, dtype: str, threads: int, steps: int, device: str = "cpu") -> float:
    """Steps/s of nnpot's own VelocityVerlet in a fresh process with ``threads`` threads."""
    code = f"""
import time, torch, ase.io
from ase import units
from nnpot import NNPotCalculator
from nnpot.md import VelocityVerlet
from nnpot.md.state import thermalize
torch.set_num_threads({threads})
atoms = ase.io.read({str(data.with_suffix(".extxyz"))!r})
thermalize(atoms, 300, 0, stationary=False)
atoms.calc = NNPotCalculator({str(model)!r}, device={device!r}, dtype={dtype!r})
dyn = VelocityVerlet(atoms, 0.5 * units.fs)
dyn.run(2)
t = time.perf_counter()
dyn.run({steps})
print("RATE", {steps} / (time.perf_counter() - t))
"""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = run([sys.executable, "-c", code], ROOT, env)
    return float(re.search(r"RATE (\S+)", out).group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_lammps"))
    p.add_argument("--dp-model", default=str(ROOT / "runs" / "dp_water" / "model.dp"))
    p.add_argument("--dp-venv", default=str(ROOT / ".peers" / "dplmp"))
    p.add_argument("--sizes", type=int, nargs="+", default=[1536, 12288])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    p.add_argument("--steps", type=int, nargs="+", default=[10, 3], help="steps per size")
    p.add_argument("--device", default="cpu", help="nnpot's device: cpu, or auto (one GPU per rank)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "lammps.json"))
    args = p.parse_args()
    import ase.io

    from nnpot.bundled import bundled_dataset
    from nnpot.data import H5Dataset

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    dp_model = Path(args.dp_model).resolve()
    if not dp_model.exists():
        raise SystemExit(f"{dp_model} missing: run benchmarks/bench_deepmd_import.py first (it trains it)")
    venv = Path(args.dp_venv)
    base_env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    nnp = work / "model.nnp"
    nnp.unlink(missing_ok=True)  # this script's own output of an earlier run
    run([sys.executable, "-m", "nnpot.cli", "convert", str(dp_model), "-o", str(nnp)], work, base_env)
    pth = dp_model.with_suffix(".pth")
    cudart = sorted(venv.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    dp_env = dict(base_env, PATH=f"{venv / 'bin'}:{os.environ['PATH']}",
                  LD_LIBRARY_PATH=":".join([*map(str, cudart), os.environ.get("LD_LIBRARY_PATH", "")]))
    if not pth.exists():
        run([str(venv / "bin" / "dp"), "convert-backend", str(dp_model), str(pth)], work, dp_env)
    nnpot_bin = Path(sys.executable).parent
    frame = H5Dataset(bundled_dataset("water"))[0].to_atoms()
    frame.calc = None
    rows = []
    print(f"{'atoms':>6} {'ranks':>5} {'dtype':>7} | {'LAMMPS+nnpot':>12} {'nnpot driver':>12} {'LAMMPS+DeePMD':>13} | "
          f"{'us/atom-step':>12} {'vs driver':>9} {'vs DeePMD':>9}")
    for n, steps in zip(args.sizes, args.steps):
        rep = round((n / len(frame)) ** (1 / 3))
        data = work / f"water_{n}.data"
        box = frame.repeat((rep, rep, rep))
        ase.io.write(data, box, format="lammps-data", specorder=["O", "H"], masses=True, units="metal")
        ase.io.write(data.with_suffix(".extxyz"), box)
        for ranks in args.ranks:
            mpi = [str(nnpot_bin / "mpirun"), "-np", str(ranks)]
            dp_rate = None
            try:
                (work / "in.dp").write_text(INPUT.format(data=data, pair=f"pair_style deepmd {pth}\npair_coeff * * O H",
                                                         steps=steps))
                t, k, _ = loop_time(run([str(venv / "bin" / "mpirun"), "-np", str(ranks), str(venv / "bin" / "lmp"),
                                         "-in", "in.dp", "-log", "none"], work, dp_env))
                dp_rate = k / t
            except RuntimeError as exc:
                print(f"DeePMD-kit run failed: {str(exc)[:300]}")
            for dtype in args.dtypes:
                (work / "in.nnp").write_text(INPUT.format(data=data, pair=f"pair_style nnpot {nnp} dtype {dtype}\n"
                                                          "pair_coeff * * O H", steps=steps))
                out = run(mpi + [str(nnpot_bin / "nnpot"), "lammps", "in.nnp", "--log", "none", "--device", args.device],
                          work, base_env)
                t, k, parts = loop_time(out)
                summary = re.search(r"nnpot: (\d+) evaluations.*?([\d.]+) s in the model on rank 0 \((\d+) local and "
                                    r"(\d+) ghost", out)
                drv = driver_rate(nnp, data, dtype, ranks, steps, args.device)
                row = {"atoms": n, "ranks": ranks, "dtype": dtype, "steps": k,
                       "lammps_nnpot_steps_per_s": k / t, "driver_steps_per_s": drv,
                       "lammps_deepmd_steps_per_s": dp_rate if dtype == "float64" else None,
                       "deepmd_dtype": "float64", "lammps_breakdown_pct": parts}
                row["lammps_nnpot_us_per_atom_step"] = 1e6 * t / k / n
                row["driver_us_per_atom_step"] = 1e6 / drv / n
                row["cost_vs_driver"] = row["lammps_nnpot_us_per_atom_step"] / row["driver_us_per_atom_step"]
                row["speed_vs_deepmd"] = (k / t) / dp_rate if dp_rate else None
                if summary:
                    calls, model_s, local, ghosts = summary.groups()
                    row.update(rank0_local_atoms=int(local), rank0_ghost_atoms=int(ghosts),
                               rank0_model_s_per_call=float(model_s) / int(calls))
                rows.append(row)
                f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
                print(f"{n:>6} {ranks:>5} {dtype:>7} | {k / t:>12.3f} {drv:>12.3f} {f(row['lammps_deepmd_steps_per_s'], '13.3f')} | "
                      f"{row['lammps_nnpot_us_per_atom_step']:>12.1f} {row['cost_vs_driver']:>9.2f} "
                      f"{f(row['speed_vs_deepmd'], '9.2f')}", flush=True)
    result = {"machine": f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})",
              "date": str(date.today()), "command": "python benchmarks/bench_lammps.py", "device": args.device,
              "model": str(dp_model), "rows": rows, "ghost_efficiency": ghost_estimate(rows)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["ghost_efficiency"], indent=2))


def ghost_estimate(rows: list[dict]) -> dict:
    """Per rank, the model's work is on its own atoms only (energies of ghosts are never
    computed); what grows with the ghosts is the neighbor search over them, the position and
    force copies and the force exchange. On one rank the driver does the same model work with
    no ghosts (periodic shifts instead), so ``(t_lammps - t_driver) / ghosts`` bounds the cost
    of a ghost from above and ``t_driver / atoms`` is the cost of a local atom. From the largest
    ratio measured (float64), estimate for 10 million water atoms (0.1 atoms/A^3, cubic
    subdomains, ghost shell rcut + skin = 8 A) the efficiency ``1 / (1 + ratio * ghosts/local)``
    at 8, 64 and 512 GPUs, next to the extra model work that a shell of 2 x rcut (energies of
    ghosts computed redundantly, the other design) would cost."""
    one = [r for r in rows if r["dtype"] == "float64" and r["ranks"] == 1 and "rank0_ghost_atoms" in r]
    if not one:
        return {}
    per_size = {}
    for r in one:
        t_l, t_d = 1 / r["lammps_nnpot_steps_per_s"], 1 / r["driver_steps_per_s"]
        local_us = 1e6 * t_d / r["atoms"]
        ghost_us = max(0.0, 1e6 * (t_l - t_d) / r["rank0_ghost_atoms"])
        per_size[r["atoms"]] = {"us_per_local_atom": local_us, "us_per_ghost_atom_at_most": ghost_us,
                                "ghost_to_local_cost_at_most": ghost_us / local_us}
    ratio = max(v["ghost_to_local_cost_at_most"] for v in per_size.values())
    out = {"per_size": per_size, "ratio_used": ratio, "gpus": {}}
    for gpus in (8, 64, 512):
        local = 1e7 / gpus
        side = (local / 0.1) ** (1 / 3)
        ghosts = 0.1 * ((side + 16) ** 3 - side ** 3)
        out["gpus"][gpus] = {"atoms_per_gpu": local, "subdomain_A": side, "ghost_ratio": ghosts / local,
                             "efficiency_at_least": 1 / (1 + ratio * ghosts / local),
                             "redundant_work_2rcut_design": ((side + 12) ** 3 - side ** 3) / side ** 3}
    return out


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"done in {time.time() - t0:.0f} s")
