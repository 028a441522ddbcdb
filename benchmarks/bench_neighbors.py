"""Neighbor search on water boxes: nnpot's cell list against vesin and ASE, in the same run.

The issue asks to measure a field library (vesin) before choosing nnpot's own search. Every
code finds the same full list (a pair and its reverse) of the bundled 192-atom water frame
replicated to each size, rcut 6 Angstrom; the pair counts are checked to agree. "nnpot cells"
is nnpot's own torch cell list (``method="cells"``, what runs on a GPU); "nnpot padded" is the
whole ``build_neighbors`` as models use it: the default search (vesin on CPU where installed)
and the padded per-type layout that se_e2_a consumes, which the other codes do not make.

    python benchmarks/bench_neighbors.py                      # CPU, 192 ... 98,304 atoms
    python benchmarks/bench_neighbors.py --device cuda        # nnpot on the GPU (vesin.torch if installed)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_eval import replicate_for, water_model  # noqa: E402

from nnpot.potentials.neighbors import build_neighbors, neighbor_pairs  # noqa: E402


def best_time(fn: Callable[[], int], repeats: int, sync: Callable[[], None]) -> tuple[float, int]:
    """Best wall time of ``repeats`` calls of ``fn`` (after one warm-up) and the pair count it returned."""
    pairs = fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times), pairs


def searches(atoms, cutoff: float, device: str, dtype: torch.dtype, ase_max: int) -> dict[str, Callable[[], int]]:
    """The searches to time on ``atoms``: name -> a call returning its number of pairs."""
    pos = torch.tensor(atoms.positions, dtype=dtype, device=device)
    cell = torch.tensor(np.asarray(atoms.cell), dtype=dtype, device=device)
    pbc = torch.tensor(atoms.pbc)
    types = torch.tensor((atoms.numbers == 1).astype(np.int64), device=device)  # O 0, H 1
    out: dict[str, Callable[[], int]] = {
        "nnpot cells": lambda: len(neighbor_pairs(pos, cell, pbc, cutoff, method="cells")[0]),
        "nnpot padded": lambda: int(build_neighbors(pos, cell, pbc, types, cutoff, (46, 92)).mask.sum()),
    }
    try:
        if device.startswith("cuda"):
            from vesin.torch import NeighborList as TorchNeighborList

            nl = TorchNeighborList(cutoff=cutoff, full_list=True)
            out["vesin"] = lambda: len(nl.compute(pos, cell, True, quantities="ij")[0])
        else:
            from vesin import NeighborList

            nl_np = NeighborList(cutoff=cutoff, full_list=True)
            p_np, c_np = atoms.positions.astype(np.float64), np.asarray(atoms.cell, dtype=np.float64)
            out["vesin"] = lambda: len(nl_np.compute(p_np, c_np, True, quantities="ijS")[0])
    except ImportError:
        print("vesin not installed: pip install vesin (and vesin-torch for CUDA); skipped")
    if device == "cpu" and len(atoms) <= ase_max:
        from ase.neighborlist import neighbor_list

        out["ASE neighbor_list"] = lambda: len(neighbor_list("ijS", atoms, cutoff)[0])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[192, 1536, 12288, 98304])
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--cutoff", type=float, default=6.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ase-max", type=int, default=98304, help="largest box given to ASE's neighbor_list")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "neighbors_cpu.json"))
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    base, _ = water_model()
    rows = []
    print(f"{'atoms':>8} {'search':>18} {'ms':>10} {'pairs':>11} {'x cells':>8}   ({args.device}, {args.dtype}, "
          f"{torch.get_num_threads()} threads)")
    for n in args.sizes:
        atoms = base.repeat(replicate_for(n))
        timed = {name: best_time(fn, args.repeats, sync) for name, fn in searches(atoms, args.cutoff, args.device, dtype,
                                                                                  args.ase_max).items()}
        ref_s, ref_pairs = timed["nnpot cells"]
        for name, (s, pairs) in timed.items():
            if name != "nnpot padded" and pairs != ref_pairs:
                raise SystemExit(f"{name} found {pairs} pairs at {n} atoms, nnpot {ref_pairs}")
            rows.append({"atoms": n, "search": name, "s": s, "pairs": pairs, "ratio_to_nnpot_cells": s / ref_s})
            print(f"{n:>8} {name:>18} {s * 1e3:10.2f} {pairs:>11} {s / ref_s:8.2f}")
    Path(args.json).write_text(json.dumps({"device": args.device, "dtype": args.dtype, "cutoff": args.cutoff,
                                           "threads": torch.get_num_threads(), "torch": torch.__version__,
                                           "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
