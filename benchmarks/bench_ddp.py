"""Data-parallel training step with 2 gloo ranks on CPU: bucketed all-reduce overlapped with the
backward pass (the default, ``grad_sync=bucketed``) against one all-reduce per parameter after
it (``grad_sync=per-parameter``), same run, same frames.

    python benchmarks/bench_ddp.py [--steps 40] [--ranks 2] [--fitting 240 240 240]

Prints a table and writes benchmarks/results/ddp_cpu.json. Each rank uses one thread.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]


def _worker(rank: int, world: int, port: int, grad_sync: str, steps: int, fitting: list[int], out: str) -> None:
    import os

    from nnpot.bundled import bundled_dataset
    from nnpot.training.trainer import Trainer
    from nnpot.training.config import load_train_config

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    config = load_train_config(None, ["threads=1", f"grad_sync={grad_sync}", "model.type_map=[O,H]",
                                      "model.descriptor.sel=[46,92]", f"model.fitting.neuron={fitting}",
                                      "valid_freq=100000", "save_freq=100000", "stat_frames=8"],
                               {"data": [str(bundled_dataset("water"))]})
    trainer = Trainer(config, Path(tempfile.mkdtemp(prefix=f"ddp{rank}_")), progress=False)
    for _ in range(5):  # warm-up: neighbor lists and plans of the first frames
        trainer.step()
    torch.distributed.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    torch.distributed.barrier()
    if rank == 0:
        n_params = sum(p.numel() for p in trainer.model.parameters())
        tensors = len(list(trainer.model.parameters()))
        buckets = len(trainer.bucketed.buckets) if trainer.bucketed is not None else tensors
        Path(out).write_text(json.dumps({"step_s": (time.perf_counter() - t0) / steps, "parameters": n_params,
                                         "tensors": tensors, "buckets": buckets}))
    torch.distributed.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--fitting", type=int, nargs="+", default=[240, 240, 240])
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "ddp_cpu.json"))
    args = p.parse_args()
    rows = {}
    for grad_sync in ("per-parameter", "bucketed", "per-parameter", "bucketed"):  # twice each, interleaved
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        out = tempfile.mktemp(suffix=".json")
        mp.spawn(_worker, args=(args.ranks, port, grad_sync, args.steps, args.fitting, out), nprocs=args.ranks)
        r = json.loads(Path(out).read_text())
        rows.setdefault(grad_sync, []).append(r["step_s"])
        rows[f"{grad_sync}_info"] = r
    best = {k: min(v) for k, v in rows.items() if not k.endswith("_info")}
    print(f"training step, water, {args.ranks} gloo ranks x 1 thread, fitting {args.fitting}, best of 2 runs:")
    print(f"{'gradient averaging':<22} {'s/step':>8} {'all-reduces':>12}")
    for k in ("per-parameter", "bucketed"):
        print(f"{k:<22} {best[k]:8.4f} {rows[k + '_info']['buckets']:>12}")
    print(f"bucketed / per-parameter: {best['bucketed'] / best['per-parameter']:.3f}")
    Path(args.json).write_text(json.dumps({"ranks": args.ranks, "steps": args.steps, "fitting": args.fitting,
                                           "runs": rows, "best": best, "date": time.strftime("%Y-%m-%d")}, indent=2))


if __name__ == "__main__":
    main()
