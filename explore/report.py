"""The summary plot of an exploration: trust-window fractions and validation error per iteration."""

from __future__ import annotations

from pathlib import Path

from nnpot.atomic import atomic_path

__all__ = ["plot_summary"]


def plot_summary(rows: list[dict], png: str | Path) -> Path:
    """Accurate / candidate / failed fractions (left) and the test-set force RMSE (right) against
    the iteration; written atomically."""
    import matplotlib  # lazy: matplotlib adds ~0.4 s of start-up; only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib adds ~0.4 s of start-up; only plots need it


    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for key, colour in (("accurate", "tab:green"), ("candidate", "tab:orange"), ("failed", "tab:red")):
        pts = [(r["iteration"], r[f"{key}_fraction"]) for r in rows if f"{key}_fraction" in r]
        if pts:
            left.plot(*zip(*pts), "o-", color=colour, label=key)
    left.set(xlabel="iteration", ylabel="fraction of explored frames", ylim=(-0.02, 1.02))
    if left.lines:
        left.legend(frameon=False)
    pts = [(r["iteration"], r["test_force_rmse"] * 1e3) for r in rows if "test_force_rmse" in r]
    if pts:
        right.plot(*zip(*pts), "o-", color="tab:blue")
    right.set(xlabel="iteration", ylabel="test force RMSE (meV/A)")
    fig.tight_layout()
    png = Path(png)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return png
