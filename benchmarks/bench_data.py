"""Convert and stream a synthetic dataset: frames/s for conversion, sequential and random-access
reading, file size and peak memory. Prints a table and writes JSON.

    python benchmarks/bench_data.py --frames 50000 --atoms 192
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from nnpot.data import H5Dataset, convert

ROOT = Path(__file__).resolve().parents[1]


def make_deepmd_source(folder: Path, frames: int, atoms: int, set_size: int = 10000, seed: int = 0) -> None:
    """A DeePMD-kit npy system of random water-like frames (float32, as DeePMD-kit data usually is)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    n_o = atoms // 3
    (folder / "type.raw").write_text("\n".join(["0"] * n_o + ["1"] * (atoms - n_o)) + "\n")
    (folder / "type_map.raw").write_text("O\nH\n")
    for k, start in enumerate(range(0, frames, set_size)):
        n = min(set_size, frames - start)
        s = folder / f"set.{k:03d}"
        s.mkdir()
        np.save(s / "coord.npy", rng.uniform(0, 12.4, (n, atoms * 3)).astype(np.float32))
        np.save(s / "force.npy", rng.normal(0, 0.8, (n, atoms * 3)).astype(np.float32))
        np.save(s / "energy.npy", rng.normal(-29944, 0.6, n).astype(np.float32))
        np.save(s / "box.npy", np.tile(np.eye(3).reshape(-1) * 12.445, (n, 1)).astype(np.float32))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=50000)
    p.add_argument("--atoms", type=int, default=192)
    p.add_argument("--random-reads", type=int, default=5000)
    p.add_argument("--workdir", default=str(ROOT / "runs" / "bench_data"))
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "data.json"))
    args = p.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    make_deepmd_source(work / "src", args.frames, args.atoms)
    t_make = time.perf_counter() - t0
    mem0 = peak_mib()
    t0 = time.perf_counter()
    convert([work / "src"], work / "big.h5")
    t_convert = time.perf_counter() - t0
    mem_convert = peak_mib()
    ds = H5Dataset(work / "big.h5")
    t0 = time.perf_counter()
    n_seq = min(len(ds), 20000)
    for i in range(n_seq):
        ds[i]
    t_seq = time.perf_counter() - t0
    idx = np.random.default_rng(1).integers(0, len(ds), args.random_reads)
    t0 = time.perf_counter()
    for i in idx:
        ds[int(i)]
    t_rand = time.perf_counter() - t0
    src_mb = sum(f.stat().st_size for f in (work / "src").rglob("*.npy")) / 2**20
    h5_mb = (work / "big.h5").stat().st_size / 2**20
    result = {
        "frames": args.frames, "atoms_per_frame": args.atoms,
        "convert_frames_per_s": args.frames / t_convert, "convert_s": t_convert,
        "sequential_read_frames_per_s": n_seq / t_seq, "random_read_frames_per_s": args.random_reads / t_rand,
        "source_MiB": src_mb, "h5_MiB": h5_mb, "peak_rss_MiB_before_convert": mem0,
        "peak_rss_MiB_after_reads": peak_mib(), "peak_rss_MiB_after_convert": mem_convert, "make_source_s": t_make,
    }
    print(f"{args.frames} frames x {args.atoms} atoms (source {src_mb:.0f} MiB float32 npy, HDF5 {h5_mb:.0f} MiB float64 gzip)")
    print(f"  convert            {result['convert_frames_per_s']:10.0f} frames/s   ({t_convert:.1f} s)")
    print(f"  sequential read    {result['sequential_read_frames_per_s']:10.0f} frames/s")
    print(f"  random-access read {result['random_read_frames_per_s']:10.0f} frames/s")
    print(f"  peak RSS           {mem0:.0f} MiB before convert (source generation), {mem_convert:.0f} MiB after convert, "
          f"{result['peak_rss_MiB_after_reads']:.0f} MiB after reads")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
