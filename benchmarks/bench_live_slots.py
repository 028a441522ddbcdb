"""What ace gains on the CPU by working on its live neighbor slots only (``_live_slots``).

The padded neighbor layout gives each element a block of ``sel`` slots (training) or of its
largest count (MD), and the MD list also holds the skin. On the CPU ace drops the slots that
hold no neighbor inside ``rcut`` before it does any per-edge work; the energies are the same
(``tests/test_ace.py``). This benchmark times both ways, one after the other, in one run:

* a training step (batch 4, energy and force loss, backward), one thread, on the first 4 frames
  of the bundled water and molecule sets and of the 4-element EMT alloy of
  ``bench_accuracy.py``, with ``sel`` from (up to 200 of) the data's frames as ``nnpot train``
  sets it, and each element's block cut to the batch's largest count, as training batches;
* velocity-Verlet MD (nnpot's driver, 2 A skin) of a 1,536-atom water box, two threads.

Models: ace, 64 channels, l = 3, float32, rcut 5 A, strictly local and with one message layer
(the models of the accuracy tables), random weights.

    python benchmarks/bench_live_slots.py

Prints a table and writes ``benchmarks/results/live_slots_cpu.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from ase.data import chemical_symbols

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_eval import replicate_for, write_result  # noqa: E402
from bench_md_vs_mace import ace_model, nnpot_steps_per_s  # noqa: E402

from nnpot.bundled import bundled_dataset  # noqa: E402
from nnpot.data import H5Dataset  # noqa: E402
from nnpot.potentials import EnergyModel, ModelConfig, derivatives, make_batch  # noqa: E402
from nnpot.potentials.descriptors.ace import AceConfig, _live_slots  # noqa: E402
from nnpot.potentials.descriptors.base import slot_type_index  # noqa: E402
from nnpot.training.auto_config import neighbor_counts  # noqa: E402


def frames_of(name: str) -> list:
    if name == "alloy4":
        from bench_elements import SETS

        from nnpot.data.emt_alloys import emt_alloy_frames

        return emt_alloy_frames(SETS[4], 100, seed=4)
    ds = H5Dataset(bundled_dataset(name))
    return [ds[i] for i in range(min(len(ds), 200))]


def train_step_ms(model: EnergyModel, batch, repeats: int = 6) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = derivatives(model, batch, create_graph=True)
        (out["energy"].square().sum() + out["forces"].square().sum()).backward()
        times.append(time.perf_counter() - t)
    return 1000 * min(times[2:])


def slot_counts(model: EnergyModel, batch) -> tuple[int, int]:
    """Slots per atom in the padded layout, and those ``_live_slots`` keeps."""
    rij, mask = batch.edge_vectors(), batch.neighbors.mask
    _, live, _, _ = _live_slots(rij, mask, slot_type_index(batch.neighbors.capacity, mask), None, model.cutoff)
    return mask.shape[1], live.shape[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["water", "molecule_C3H3O4", "alloy4"])
    ap.add_argument("--md-atoms", type=int, default=1536)
    args = ap.parse_args()
    rows = []
    print(f"{'case':34s} {'slots':>11s} {'padded':>10s} {'live':>10s} {'speed-up':>8s}")
    torch.set_num_threads(1)
    for name in args.datasets:
        frames = frames_of(name)
        for layers in (0, 1):
            cfg = ModelConfig(dtype="float32")
            cfg.descriptor = AceConfig(rcut=5.0, channels=64, lmax=3, message_layers=layers)
            cfg.fitting.neuron = [64, 64]
            zs = sorted({int(z) for f in frames for z in f.numbers})
            cfg.type_map = [chemical_symbols[z] for z in zs]
            suggested = neighbor_counts(frames, 5.0, elements=zs)["suggested_sel"]  # nnpot train's sel: auto
            cfg.descriptor.sel = [suggested[e] for e in cfg.type_map]
            model = EnergyModel(cfg)
            batch = make_batch([f.to_atoms() for f in frames[:4]], model.type_map, model.cutoff, model.sel,
                               dtype=model.dtype, tight=True)  # as training batches them
            padded_slots, live_slots = slot_counts(model, batch)
            ms = {}
            for drop in (False, True):
                model.descriptor.drop_empty_slots = drop
                ms[drop] = train_step_ms(model, batch)
            case = f"train step, {name}, mp{layers}"
            rows.append({"case": case, "sel": model.sel, "slots": padded_slots, "live_slots": live_slots,
                         "padded_ms": ms[False], "live_ms": ms[True], "speedup": ms[False] / ms[True]})
            print(f"{case:34s} {padded_slots:5d}>{live_slots:<5d} {ms[False]:8.1f}ms {ms[True]:8.1f}ms "
                  f"{ms[False] / ms[True]:7.2f}x", flush=True)
    torch.set_num_threads(2)
    water = H5Dataset(bundled_dataset("water"))
    atoms = water[0].to_atoms().repeat(replicate_for(args.md_atoms))
    for label, kwargs in (("mp0", {}), ("mp1", {"message_layers": 1}), ("mp1, message_lmax 2", {"message_layers": 1,
                                                                                                 "message_lmax": 2})):
        model = ace_model(torch.float32, 64, lmax=3, **kwargs)
        rate = {}
        for drop in (False, True):
            model.descriptor.drop_empty_slots = drop
            rate[drop] = nnpot_steps_per_s(model, atoms, 3 if kwargs else 6)
        case = f"MD, {len(atoms)} water atoms, {label}"
        rows.append({"case": case, "padded_steps_per_s": rate[False], "live_steps_per_s": rate[True],
                     "speedup": rate[True] / rate[False]})
        print(f"{case:34s} {'':11s} {rate[False]:7.3f}/s {rate[True]:7.3f}/s {rate[True] / rate[False]:7.2f}x",
              flush=True)
    write_result("live_slots_cpu", rows, threads="1 (training), 2 (MD)")


if __name__ == "__main__":
    main()
