"""Learning curves of se_e2_a and e3nn side by side: validation force and energy RMSE against
the number of training frames, each point a model trained for the same number of steps on the
first N frames of one seeded order, scored on the same held-out frames (``nnpot.approx``'s
learning-curve study, run for both descriptors in one process). Prints both tables, writes
JSON and one PNG.

    python benchmarks/bench_learning_descriptors.py                  # the study's full setting, both descriptors
    python benchmarks/bench_learning_descriptors.py --frames 16 64 256 --steps 1000 --widths
    python benchmarks/bench_learning_descriptors.py --frames 1 2 4 8 --steps 300 --widths --full-batch
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from nnpot.atomic import atomic_path

ROOT = Path(__file__).resolve().parents[1]


def plot_curves(summary: dict, path: Path, title: str) -> None:
    """Force and energy RMSE against frames, one line per descriptor, from the JSON summary
    (``python -c "...plot_curves(json.load(open(F)), ...)"`` redraws a finished run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=120)
    runs = {k: v for k, v in summary.items() if k != "settings"}
    for ax, k, unit in ((axes[0], 0, "force RMSE (eV/A)"), (axes[1], 1, "energy RMSE (eV/atom)")):
        for c, (name, r) in enumerate(runs.items()):
            s = r["series"][k]
            ax.plot(s["params"], s["error_mean"], "o-", color=f"C{c}", label=f"{name}: slope {s['fit']['slope']:+.2f}")
        frames = next(iter(runs.values()))["series"][k]["params"]
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(frames, [f"{f:g}" for f in frames])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training frames (192 atoms each)")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", help="training-set sizes (default: the study's full setting)")
    p.add_argument("--steps", type=int, help="training steps per point (batch 1)")
    p.add_argument("--descriptors", nargs="+", default=["se_e2_a", "e3nn"])
    p.add_argument("--widths", type=int, nargs="*",
                   help="also fitting-net widths at the largest frame count (the study's width series)")
    p.add_argument("--width-descriptors", nargs="*", help="descriptors that get the width series (default: all)")
    p.add_argument("--embedding", type=int, nargs="+", help="se_e2_a embedding widths")
    p.add_argument("--axis-neuron", type=int)
    p.add_argument("--fitting", type=int, nargs="+", help="fitting-net widths")
    p.add_argument("--valid-frames", type=int)
    p.add_argument("--full-batch", action="store_true", help="every step on all of a point's frames")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "learning_curve_descriptors"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from nnpot.approx.learning import LearningCurveConfig, learning_curve

    results = {}
    for name in args.descriptors:
        config = LearningCurveConfig(descriptor=name)  # the full setting, then the options given
        config.full_batch = args.full_batch
        for key in ("frames", "widths", "steps", "embedding", "axis_neuron", "fitting", "valid_frames"):
            if getattr(args, key) is not None:
                setattr(config, key, getattr(args, key))
        if args.width_descriptors is not None and name not in args.width_descriptors:
            config.widths = []
        t0 = time.perf_counter()
        result = learning_curve(config, quick=False)
        print(f"[{name}] {time.perf_counter() - t0:.0f} s\n{result.table()}", flush=True)
        results[name] = result
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {k: r.to_dict() for k, r in results.items()}
    summary["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    batches = "all frames per step" if args.full_batch else "one frame per step"
    plot_curves(summary, out.with_suffix(".png"),
                f"water, {config.steps} steps per model ({batches}), fitting {config.fitting}, same validation frames")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
