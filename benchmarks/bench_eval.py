"""Energy+forces evaluation time and peak memory of the default se_e2_a water model.

Water boxes are built by replicating frame 0 of the bundled data (192 atoms). Prints a table
and writes JSON. Usage:
    python benchmarks/bench_eval.py [--device cpu|cuda] [--sizes 192 1536] [--dtypes float64 float32]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from nnpot.bundled import bundled_dataset
from nnpot.data import H5Dataset
from nnpot.potentials import EnergyModel, apply_stats, derivatives, make_batch

ROOT = Path(__file__).resolve().parents[1]

#: model variants the benchmarks compare, by name: dotted ModelConfig keys on top of the defaults
MODEL_VARIANTS: dict[str, dict[str, object]] = {
    "se_e2_a": {},
    "e3nn": {"descriptor.type": "e3nn"},
    "e3nn_mp1": {"descriptor.type": "e3nn", "descriptor.message_layers": 1},  # receptive field 2 rcut
}


def write_result(name: str, rows: list[dict], **fields) -> Path:
    """``benchmarks/results/<name>.json`` with the date, the machine and ``rows``; prints its path."""
    out = ROOT / "benchmarks" / "results" / f"{name}.json"
    out.write_text(json.dumps({"benchmark": name, "date": time.strftime("%Y-%m-%d"),
                               "machine": f"{os.cpu_count()} CPU cores", **fields, "rows": rows}, indent=1))
    print(f"wrote {out}")
    return out


def variant_config(name: str):
    """The :class:`~nnpot.potentials.ModelConfig` of ``MODEL_VARIANTS[name]`` (through the same
    dotted-key, type-checked path as ``--set``)."""
    from nnpot.potentials import ModelConfig
    from nnpot.configio import from_dict, set_dotted

    tree: dict = {}
    for key, value in {"type_map": ["O", "H"], "descriptor.sel": [46, 92], **MODEL_VARIANTS[name]}.items():
        set_dotted(tree, key, value)
    return from_dict(ModelConfig, tree)


def replicate_for(n_atoms: int) -> tuple[int, int, int]:
    k = round((n_atoms / 192) ** (1 / 3))
    if 192 * k ** 3 == n_atoms:
        return (k, k, k)
    for reps in ((2, 2, 2), (4, 4, 4), (8, 4, 4), (8, 8, 8), (16, 8, 8)):
        if 192 * np.prod(reps) == n_atoms:
            return reps
    raise SystemExit(f"{n_atoms} is not 192 times a box replication")


def water_model(sel: tuple[int, int] | None = None, descriptor: str = "se_e2_a"):
    """Frame 0 of the bundled water data (192 atoms, no calculator) and the default water model
    (``sel`` changed if given) with statistics from 8 frames (random weights: speed does not
    depend on them). ``descriptor``: a name in ``MODEL_VARIANTS``."""
    ds = H5Dataset(bundled_dataset("water"))
    base = ds[0].to_atoms()
    base.calc = None
    config = variant_config(descriptor)
    if sel is not None:
        config.descriptor.sel = list(sel)
    model = EnergyModel(config)
    frames = [ds[i] for i in range(0, 320, 40)]
    apply_stats(model, frames, np.array([f.energy for f in frames]))
    return base, model


def measure(m, atoms, args, dtype) -> dict:
    """Neighbor-list time, best-of-``repeats`` energy+forces time and peak memory for one box."""
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    batch = make_batch([atoms], m.type_map, m.cutoff, m.sel, device=args.device, dtype=dtype)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t_nl = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = derivatives(m, batch, chunk_size=args.chunk)
        float(out["energy"][0])  # synchronises
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    best = min(times)
    return {"atoms": len(atoms), "dtype": str(dtype).replace("torch.", ""), "device": args.device, "neighbor_s": t_nl,
            "eval_s": best, "us_per_atom": best / len(atoms) * 1e6, "peak_MiB": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[192, 1536])
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk", type=int, default=8192)
    p.add_argument("--descriptors", nargs="+", default=["se_e2_a"], choices=list(MODEL_VARIANTS),
                   help="model variants (default settings otherwise)")
    p.add_argument("--tabulate", action="store_true", help="also time se_e2_a with tabulated embedding nets")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "eval.json"))
    args = p.parse_args()
    rows = []
    for descriptor in args.descriptors:
        base, model = water_model(descriptor=descriptor)
        tabulated = model.tabulated() if args.tabulate and descriptor == "se_e2_a" else None
        rows += measure_all(base, model, args, descriptor)
        if tabulated is not None:
            rows += measure_all(base, tabulated, args, "se_e2_a-tabulated")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                                           "rows": rows}, indent=2))


def measure_all(base, model, args, descriptor: str) -> list[dict]:
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        m = model.to(device=args.device, dtype=dtype).eval()
        for n in args.sizes:
            atoms = base.repeat(replicate_for(n))
            try:
                rows.append({"descriptor": descriptor, **measure(m, atoms, args, dtype)})
            except Exception as exc:  # out of memory is a result too
                rows.append({"atoms": len(atoms), "dtype": dtype_name, "device": args.device,
                             "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
                print(f"{len(atoms):>8} {dtype_name:>8} {args.device:>5}  {rows[-1]['error']}")
                continue
            r = rows[-1]
            print(f"{descriptor:>17} {r['atoms']:>8} {dtype_name:>8} {args.device:>5}  neighbors {r['neighbor_s'] * 1e3:9.1f} ms  "
                  f"energy+forces {r['eval_s'] * 1e3:10.1f} ms  {r['us_per_atom']:8.2f} us/atom  peak {r['peak_MiB']:9.0f} MiB",
                  flush=True)
    return rows


if __name__ == "__main__":
    main()
