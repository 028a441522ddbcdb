"""Where the GPU time of one MD step goes: kernels per step and the most expensive operations.

Runs nnpot's velocity Verlet eagerly (the CUDA-graph path replays the same kernels) under
torch.profiler and prints the operators by device time per step; writes the table as JSON.

    python benchmarks/profile_md.py --atoms 192 --dtype float64 --tabulate [--model water.nnp]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from ase import units


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from bench_eval import replicate_for, water_model  # noqa: E402

from nnpot import NNPotCalculator  # noqa: E402
from nnpot.md import VelocityVerlet  # noqa: E402
from nnpot.md.state import thermalize  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--atoms", type=int, default=192)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--tabulate", action="store_true")
    p.add_argument("--model", help="a trained .nnp (default: random weights)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "profile_md.json"))
    args = p.parse_args()
    base, model = water_model(sel=(48, 96))
    if args.model:
        from nnpot import load_model

        model.load_state_dict(load_model(args.model).state_dict())
    atoms = base.repeat(replicate_for(args.atoms))
    thermalize(atoms, 300, 0, stationary=False)
    atoms.calc = NNPotCalculator(model, device="cuda", dtype=args.dtype, tabulate=args.tabulate)
    dyn = VelocityVerlet(atoms, 0.5 * units.fs, cuda_graphs=False)
    dyn.run(20)  # warm up: kernels compiled, lists built
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        dyn.run(args.steps)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    events.sort(key=lambda e: -e.device_time_total)
    total = sum(e.device_time_total for e in events)  # only device activity is recorded: kernels, copies
    kernels = sum(e.count for e in events)
    rows = [{"name": e.key[:90], "calls_per_step": e.count / args.steps,
             "us_per_step": e.device_time_total / args.steps} for e in events[: args.top]]
    print(f"{atoms.get_global_number_of_atoms()} atoms {args.dtype} tabulate={args.tabulate}: "
          f"{kernels / args.steps:.0f} kernels/step, {total / args.steps:.0f} us device time/step")
    for r in rows:
        print(f"{r['us_per_step']:9.1f} us {r['calls_per_step']:6.1f}x  {r['name']}")
    out = {"atoms": len(atoms), "dtype": args.dtype, "tabulate": args.tabulate,
           "kernels_per_step": kernels / args.steps, "device_us_per_step": total / args.steps, "top": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
