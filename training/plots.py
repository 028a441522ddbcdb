"""The plots people look at after training: parity of predictions against labels (``nnpot
test``) and the learning curve of a run (``valid.jsonl``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from nnpot.atomic import atomic_path
from nnpot.training.metrics import error_metrics

__all__ = ["parity_plots", "plot_learning_curve"]


def parity_plots(pred: dict[str, np.ndarray], out_dir: str | Path, title: str = "") -> list[Path]:
    """Energy-per-atom and force parity plots as PNG files in ``out_dir``."""
    import matplotlib  # lazy: matplotlib adds ~0.4 s of start-up; only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib adds ~0.4 s of start-up; only plots need it

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = error_metrics(pred)
    paths = []
    e_ref, e_pred = pred["energy_ref"] / pred["n_atoms"], pred["energy"] / pred["n_atoms"]
    mean = float(e_ref.mean()) if e_ref.size else 0.0  # shown apart, so no axis offset text covers a label
    panels = [
        ("energy", (e_ref - mean) * 1e3, (e_pred - mean) * 1e3, f"energy per atom - ({mean:.4f} eV) (meV)",
         f"RMSE {metrics['energy_rmse_per_atom'] * 1e3:.2f} meV/atom"),
        ("forces", pred["forces_ref"].ravel(), pred["forces"].ravel(), "force component (eV/Å)",
         f"RMSE {metrics['force_rmse'] * 1e3:.1f} meV/Å"),
    ]
    for name, ref, prd, label, note in panels:
        fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
        ax.scatter(ref, prd, s=3, alpha=0.4, rasterized=True)
        lo, hi = float(min(ref.min(), prd.min())), float(max(ref.max(), prd.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.ticklabel_format(useOffset=False)
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.set_title(f"{title} {name}: {note}".strip(), fontsize=9)
        fig.tight_layout()
        path = out_dir / f"parity_{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def plot_learning_curve(log_path: Path, png: Path) -> Path | None:
    """Validation energy and force RMSE against step, from ``valid.jsonl``, with the learning
    rate on a second axis and a dotted line where it crossed each power of ten."""
    import matplotlib  # lazy: matplotlib adds ~0.4 s of start-up; only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib adds ~0.4 s of start-up; only plots need it

    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    lrs = [r.get("lr") for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    axes[0].semilogy(steps, [r["energy_rmse_per_atom"] * 1e3 for r in rows], "o-", ms=3)
    axes[0].set_ylabel("validation energy RMSE (meV/atom)")
    axes[1].semilogy(steps, [r["force_rmse"] * 1e3 for r in rows], "o-", ms=3, color="C1")
    axes[1].set_ylabel("validation force RMSE (meV/Å)")
    decades = [(s, lr) for s, lr, prev in zip(steps[1:], lrs[1:], lrs[:-1])
               if lr and prev and math.floor(math.log10(lr)) < math.floor(math.log10(prev))]
    for ax in axes:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3, which="both")
        for s, lr in decades:
            ax.axvline(s, color="0.5", ls=":", lw=0.8)
        if any(lrs):
            twin = ax.twinx()
            twin.semilogy(steps, [lr or math.nan for lr in lrs], color="0.6", lw=0.8, ls="--")
            twin.set_ylabel("learning rate (dashed)", color="0.4", fontsize=8)
            twin.tick_params(labelsize=7, colors="0.4")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return png

