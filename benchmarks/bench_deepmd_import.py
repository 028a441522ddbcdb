"""A DeePMD-kit model, trained by DeePMD-kit, run in nnpot: same errors, and MD speed side by side.

In one run:

1. DeePMD-kit 3.2 (PyTorch backend, its own virtual environment, see shared/peers/README.md)
   trains se_e2_a on water data_0 + data_1 with its water recipe (DeePMD-kit's defaults
   otherwise, so ``type_one_side`` false), freezes it to ``model.pth`` and converts it with
   ``dp convert-backend`` to the backend-independent ``model.dp`` (skipped if ``--work`` holds
   them already);
2. ``dp test`` on the held-out data_2 against ``nnpot test -m model.dp`` on the same 80 frames:
   the energy and force RMSE printed by both, compared digit by digit;
3. ``benchmarks/bench_md.py --model model.dp --dp-model model.pth``: nnpot's MD driver (exact and
   tabulated) and ASE + NNPotCalculator against DeePMD-kit's ``DeepPot`` (its ASE calculator) +
   ASE's VelocityVerlet, with the very same weights.

    python benchmarks/bench_deepmd_import.py --steps 2000 --work runs/dp_water
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NNPOT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "water"

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_vs_deepmd import DP_INPUT as WATER_RECIPE  # noqa: E402


def dp_input(steps: int) -> dict:
    """DeePMD-kit's water recipe (as bench_vs_deepmd.py runs it) with DeePMD-kit's own default
    ``type_one_side`` (false), its learning rate decaying over ``steps``."""
    cfg = json.loads(json.dumps(WATER_RECIPE))
    del cfg["model"]["descriptor"]["type_one_side"]
    cfg["learning_rate"].update(decay_steps=max(steps // 20, 1), stop_lr=1e-6)
    cfg["training"].update(numb_steps=steps, disp_freq=200, save_freq=1000,
                           training_data={"systems": [str(DATA / "data_0"), str(DATA / "data_1")], "batch_size": 1})
    return cfg


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def train_deepmd(dp: str, work: Path, steps: int, env: dict) -> None:
    (work / "input.json").write_text(json.dumps(dp_input(steps), indent=1))
    run([dp, "--pt", "train", "input.json"], work, env)
    run([dp, "--pt", "freeze", "-o", "model.pth"], work, env)
    run([dp, "convert-backend", "model.pth", "model.dp"], work, env)


def deepmd_test(dp: str, work: Path, env: dict) -> dict[str, str]:
    """``dp test``'s printed energy-per-atom and force RMSE (as printed, eV and eV/A)."""
    out = run([dp, "--pt", "test", "-m", "model.pth", "-s", str(DATA / "data_2"), "-n", "100000"], work, env)
    found = {key: re.findall(rf"{label}\s*:\s*([0-9.eE+-]+)", out) for key, label in
             (("energy_rmse_per_atom", r"Energy RMSE/Natoms"), ("force_rmse", r"Force\s+RMSE"))}
    frames = re.findall(r"number of test data\s*:\s*(\d+)", out)
    if not all(found.values()):
        raise SystemExit(f"could not read dp test's output:\n{out[-2000:]}")
    return {"frames": frames[-1] if frames else None, **{k: v[-1] for k, v in found.items()}}


def nnpot_test(work: Path) -> dict:
    h5 = work / "data_2.h5"
    if not h5.exists():
        run([sys.executable, "-m", "nnpot.cli", "data", "convert", str(DATA / "data_2"), "-o", str(h5), "-q"], work)
    run([sys.executable, "-m", "nnpot.cli", "test", "-m", "model.dp", "-d", str(h5), "--json", "nnpot_test.json",
         "--force", "-q", "--device", "cpu"], work)
    return json.loads((work / "nnpot_test.json").read_text())


def same_digits(printed: str, value: float) -> bool:
    """Whether ``value`` prints as ``printed`` with as many significant digits."""
    mantissa = printed.lower().split("e")[0].lstrip("-")
    digits = len(mantissa.replace(".", "").lstrip("0"))
    return float(f"{value:.{max(digits, 1) - 1}e}") == float(printed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dp", default=str(ROOT / ".peers" / "dp" / "bin" / "dp"), help="DeePMD-kit's dp command")
    p.add_argument("--work", default=str(ROOT / "runs" / "dp_water"))
    p.add_argument("--steps", type=int, default=2000, help="DeePMD-kit training steps (batch 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--md-sizes", type=int, nargs="+", default=[192, 1536])
    p.add_argument("--md-seconds", type=float, default=5.0)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "deepmd_import.json"))
    args = p.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), DP_INTRA_OP_PARALLELISM_THREADS=str(args.threads),
               DP_INTER_OP_PARALLELISM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    if not (work / "model.dp").exists():
        print(f"training DeePMD-kit for {args.steps} steps in {work} ...", flush=True)
        train_deepmd(args.dp, work, args.steps, env)

    dp = deepmd_test(args.dp, work, env)
    nn = nnpot_test(work)
    rows = []
    print(f"\n{'held-out data_2':<24} {'dp test (printed)':>18} {'nnpot test':>22} {'same digits':>12}")
    for key, unit in (("energy_rmse_per_atom", "eV"), ("force_rmse", "eV/A")):
        same = same_digits(dp[key], nn[key])
        rows.append({"metric": key, "unit": unit, "dp_test": dp[key], "nnpot_test": nn[key], "same_digits": same})
        print(f"{key + ' (' + unit + ')':<24} {dp[key]:>18} {nn[key]:>22.15e} {str(same):>12}")

    md_json = work / "md_import.json"
    md = run([sys.executable, str(ROOT / "benchmarks" / "bench_md.py"), "--device", "cpu", "--model", "model.dp",
              "--dp-model", str(work / "model.pth"), "--dp-python", str(Path(args.dp).with_name("python")),
              "--sizes", *map(str, args.md_sizes), "--dtypes", "float64", "float32", "--tabulate",
              "--seconds", str(args.md_seconds), "--threads", str(args.threads), "--json", str(md_json)], work)
    print("\nMD with the imported model (steps/s, CPU):\n" + md.strip())
    result = {"machine": "CPU, 2 cores", "threads": args.threads, "deepmd_training_steps": args.steps,
              "frames": dp["frames"], "test": rows, "md": json.loads(md_json.read_text())}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
