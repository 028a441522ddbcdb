"""Parity plots of a model's predictions against their labels (``nnpot test``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnpot.atomic import atomic_path
from nnpot.potentials.stats import error_metrics

__all__ = ["parity_plots"]


def parity_plots(pred: dict[str, np.ndarray], out_dir: str | Path, title: str = "") -> list[Path]:
    """Energy-per-atom and force parity plots as PNG files in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
