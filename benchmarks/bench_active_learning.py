"""Active learning against random sampling at equal numbers of labels, and the ensemble's
deviation against its true error.

System: EMT copper, a slab with a (111) surface and a vacancy (35 atoms), explored at 300, 900
and 1500 K (data the project did not pick by hand; EMT labels cost milliseconds, so the run
measures the selection, not the labeller).

* Reference MD with the labeller itself (ASE Langevin, EMT): at 1500 K, the highest explored
  temperature, for the test set; at each explored temperature for the random baseline's pool.
* Both strategies start from the same 20 rattled frames, train the same ensemble with the same
  time budgets, fine-tune it after each iteration and add ``max_select`` labels per iteration
  (``nnpot explore`` with ``selection: deviation`` and ``selection: random``).
* Reported: test force and energy RMSE of the ensemble mean against the number of labels, the
  labels active learning needs to reach random's final force error, and the Spearman rank
  correlation of the final ensemble's ``max_devi_f`` with the true largest force error per test
  frame (with a scatter plot).

    python benchmarks/bench_active_learning.py --iterations 5 --ensemble 3 --train-steps 1500 --finetune-steps 600
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def reference_md(seed_atoms, temperature: float, steps: int, every: int, rng_seed: int) -> list:
    """Frames of Langevin MD with EMT (the labeller itself), every ``every`` steps after 200 steps."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin

    from nnpot.md.state import thermalize

    atoms = seed_atoms.copy()
    atoms.calc = EMT()
    thermalize(atoms, temperature, rng_seed)
    dyn = Langevin(atoms, 2.0 * units.fs, temperature_K=temperature, friction=0.01 / units.fs, rng=np.random.default_rng(rng_seed))
    dyn.run(200)
    frames = []
    for _ in range(steps // every):
        dyn.run(every)
        frames.append(atoms.copy())
    return frames


def run_strategy(name: str, args, work: Path, start: Path, seed_file: Path, test: Path, pool: Path) -> list[dict]:
    from nnpot.explore import ExploreConfig, Explorer, Labeller

    config = ExploreConfig(
        data=str(start), structures=[str(seed_file)], labeller=Labeller("emt"), out=str(work / name),
        test_data=str(test), ensemble=args.ensemble, train_steps=args.train_steps, finetune_steps=args.finetune_steps,
        train={"model.descriptor.rcut": 5.0, "model.descriptor.neuron": [16, 32], "model.descriptor.axis_neuron": 8,
               "model.fitting.neuron": [64, 64], "valid_freq": 200, "valid_frames": 8, "threads": args.threads},
        temperatures_K=[300.0, 900.0, 1500.0], replicas=2, steps=args.md_steps, timestep_fs=2.0,
        sample_every=args.sample_every, trust_lo=args.trust_lo, trust_hi=args.trust_hi, max_select=args.per_iteration,
        accurate_threshold=1.0, max_iterations=args.iterations, device="cpu", seed=1,
        select_pool=args.select_pool, fail_rest_of_run=not args.keep_failed_runs,
        selection="random" if name == "random" else "deviation", random_pool=str(pool))
    state = Explorer(config, progress=True, force=True).run()
    return state["summary"]


def spearman_of_final(work: Path, frames: list) -> dict:
    """max_devi_f of the final AL ensemble against the true largest per-atom force error on
    labelled ``frames`` (nnpot ``Frame`` objects the ensemble never trained on)."""
    from scipy.stats import spearmanr

    from nnpot import NNPotCalculator

    folders = sorted((work / "active").glob("iter_*/ensemble"))
    calc = NNPotCalculator(str(folders[-1]), device="cpu")
    devi, err = [], []
    for frame in frames:
        atoms = frame.to_atoms()
        atoms.calc = calc
        forces = atoms.get_forces()
        devi.append(calc.results["max_devi_f"])
        err.append(float(np.linalg.norm(forces - frame.forces, axis=1).max()))
    rho = float(spearmanr(devi, err).statistic)
    return {"spearman": rho, "max_devi_f": devi, "max_force_error": err, "ensemble": str(folders[-1])}


def plot(rows: dict, corr: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, colour in (("active", "tab:blue"), ("random", "tab:orange")):
        pts = [(r["train_frames"], r["test_force_rmse"] * 1e3) for r in rows[name] if "test_force_rmse" in r]
        a.plot(*zip(*pts), "o-", color=colour, label=name)
    a.set(xlabel="labelled frames", ylabel="test force RMSE (meV/A)", title="EMT Cu slab + vacancy, 1500 K test")
    a.legend(frameon=False)
    b.scatter(corr["max_devi_f"], corr["max_force_error"], s=10)
    b.set(xlabel="ensemble max_devi_f (eV/A)", ylabel="true largest force error (eV/A)",
          title=f"Spearman {corr['spearman']:.2f}")
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_al"))
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--ensemble", type=int, default=3)
    p.add_argument("--per-iteration", type=int, default=20, help="labels added per iteration")
    p.add_argument("--train-steps", type=int, default=1500, help="first ensemble: steps per member")
    p.add_argument("--finetune-steps", type=int, default=600, help="later iterations: steps per member")
    p.add_argument("--md-steps", type=int, default=600)
    p.add_argument("--sample-every", type=int, default=20)
    p.add_argument("--trust-lo", type=float, default=0.05)
    p.add_argument("--trust-hi", type=float, default=0.5)
    p.add_argument("--select-pool", type=float, default=3.0, help="labels spread over this many x per-iteration most uncertain")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reference-steps", type=int, default=3000,
                   help="EMT reference MD at 1500 K for the 100 test frames (half as long per temperature for the pool)")
    p.add_argument("--keep-failed-runs", action="store_true",
                   help="keep sampling a replica's frames after its first failed one (fail_rest_of_run off)")
    p.add_argument("--random-from", default="", help="take the random baseline's rows from this earlier result JSON "
                   "(same arguments) instead of rerunning it: for trying active-learning settings")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "active_learning.json"))
    args = p.parse_args()
    from make_copper_seed import main as make_seed
    from make_copper_seed import slab_with_vacancy

    from nnpot.data import write_h5
    from nnpot.explore import Labeller

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    make_seed(str(work / "seed"))
    seed = slab_with_vacancy()
    label = Labeller("emt")
    test = reference_md(seed, 1500.0, args.reference_steps, args.reference_steps // 100, 11)
    write_h5([label.label(a).frame for a in test], work / "test_1500K.h5")
    pool = [a for k, t in enumerate((300.0, 900.0, 1500.0))
            for a in reference_md(seed, t, args.reference_steps // 2, args.reference_steps // 200, 20 + k)]
    from ase.io import write

    write(work / "pool.extxyz", pool, format="extxyz")
    rows = {}
    if args.random_from:
        rows["random"] = json.loads(Path(args.random_from).read_text())["rows"]["random"]
    for name in ("active",) if args.random_from else ("active", "random"):
        rows[name] = run_strategy(name, args, work, work / "seed" / "cu_start.h5",
                                  work / "seed" / "cu_slab_vacancy.xyz", work / "test_1500K.h5", work / "pool.extxyz")
    from nnpot.data import H5Dataset

    corr = spearman_of_final(work, list(H5Dataset(work / "test_1500K.h5")))
    # the same across 300-1500 K: the random pool, which active learning never labels
    corr_pool = spearman_of_final(work, [label.label(a).frame for a in pool])
    final_random = rows["random"][-1]["test_force_rmse"]
    reach = next((r["train_frames"] for r in rows["active"] if r.get("test_force_rmse", 1e9) <= final_random), None)
    summary = {"machine": "CPU, 2 cores", "wall_s": time.time() - t0, "args": vars(args), "rows": rows,
               "random_final_force_rmse": final_random, "random_final_labels": rows["random"][-1]["train_frames"],
               "active_labels_to_reach_it": reach, "spearman_max_devi_f_vs_max_force_error": corr["spearman"],
               "spearman_on_pool_300_1500K": corr_pool["spearman"],
               "test_frames": len(test), "pool_frames": len(pool)}
    print(f"\n{'labels':>7} {'active F RMSE':>14} {'random F RMSE':>14} {'active E RMSE':>14} {'random E RMSE':>14}"
          "  (meV/A, meV/atom)")
    for a, r in zip(rows["active"], rows["random"]):
        print(f"{a['train_frames']:>7} {a['test_force_rmse'] * 1e3:>14.1f} {r['test_force_rmse'] * 1e3:>14.1f} "
              f"{a['test_energy_rmse_per_atom'] * 1e3:>14.2f} {r['test_energy_rmse_per_atom'] * 1e3:>14.2f}")
    print(f"active learning reaches random's final {final_random * 1e3:.1f} meV/A at {reach} labels "
          f"(random: {summary['random_final_labels']}); Spearman(max_devi_f, max force error) = {corr['spearman']:.2f} "
          f"on the 1500 K test set, {corr_pool['spearman']:.2f} on the 300-1500 K pool")
    Path(args.json).write_text(json.dumps({**summary, "correlation": corr, "correlation_pool": corr_pool}, indent=1))
    plot(rows, corr, Path(args.json).with_suffix(".png"))
    print(f"wrote {args.json} and its .png")


if __name__ == "__main__":
    main()
