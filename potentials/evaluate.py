"""Accuracy of a model on a dataset: predictions, error metrics and parity plots (``nnpot test``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

import torch

from nnpot.potentials.evaluator import Evaluator

__all__ = ["predict", "error_metrics", "parity_plots"]


def predict(model: torch.nn.Module, frames: Sequence, batch_size: int = 4, progress: bool = False,
            chunk_size: int | None = 8192) -> dict[str, np.ndarray]:
    """Reference and predicted labels for ``frames`` (:class:`~nnpot.data.Frame` objects).

    Returns arrays ``energy``/``energy_ref`` ``[B]``, ``forces``/``forces_ref`` ``[N, 3]``,
    ``numbers`` ``[N]``, ``n_atoms`` ``[B]``, and ``virial``/``virial_ref`` ``[B', 3, 3]`` for
    the frames that carry a virial label.
    """
    from tqdm.auto import tqdm

    out = {k: [] for k in ("energy", "energy_ref", "forces", "forces_ref", "numbers", "n_atoms", "virial", "virial_ref", "virial_n_atoms")}
    frames = list(frames)
    for a in tqdm(range(0, len(frames), batch_size), desc="evaluating", disable=not progress, unit=" batches"):
        chunk = frames[a:a + batch_size]
        tensor = lambda x: torch.as_tensor(np.asarray(x), dtype=model.dtype, device=model.device)  # noqa: E731
        res = Evaluator(model, chunk, skin=0.0, chunk_size=chunk_size)(
            tensor(np.concatenate([f.positions for f in chunk])), tensor(np.stack([f.cell for f in chunk])))
        out["energy"].append(res["energy"].detach().double().cpu().numpy())
        out["forces"].append(res["forces"].detach().double().cpu().numpy())
        vir = res["virial"].detach().double().cpu().numpy()
        for b, f in enumerate(chunk):
            out["energy_ref"].append(np.array([f.energy]))
            out["forces_ref"].append(f.forces)
            out["numbers"].append(f.numbers)
            out["n_atoms"].append(np.array([f.n_atoms]))
            if f.virial is not None:
                out["virial"].append(vir[b][None])
                out["virial_ref"].append(np.asarray(f.virial)[None])
                out["virial_n_atoms"].append(np.array([f.n_atoms]))
    return {k: (np.concatenate(v) if v else np.zeros((0, 3, 3) if k.startswith("virial_r") or k == "virial" else 0))
            for k, v in out.items()}


def _rmse(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2))) if x.size else float("nan")


def _mae(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x))) if x.size else float("nan")


def error_metrics(pred: dict[str, np.ndarray]) -> dict:
    """RMSE and MAE of energy per atom (eV/atom), forces (eV/A, per component, and per
    element) and virial per atom (eV/atom) when labelled."""
    from ase.data import chemical_symbols

    de = (pred["energy"] - pred["energy_ref"]) / pred["n_atoms"]
    df = pred["forces"] - pred["forces_ref"]
    metrics = {
        "frames": int(len(de)),
        "atoms": int(len(df)),
        "energy_rmse_per_atom": _rmse(de),
        "energy_mae_per_atom": _mae(de),
        "force_rmse": _rmse(df),
        "force_mae": _mae(df),
        "force_rmse_per_element": {
            chemical_symbols[int(z)]: _rmse(df[pred["numbers"] == z]) for z in np.unique(pred["numbers"])
        },
    }
    if len(pred["virial"]):
        dv = (pred["virial"] - pred["virial_ref"]) / pred["virial_n_atoms"][:, None, None]
        metrics["virial_rmse_per_atom"] = _rmse(dv)
        metrics["virial_mae_per_atom"] = _mae(dv)
    return metrics


def parity_plots(pred: dict[str, np.ndarray], out_dir: str | Path, title: str = "") -> list[Path]:
    """Energy-per-atom and force parity plots as PNG files in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = error_metrics(pred)
    paths = []
    panels = [
        ("energy", pred["energy_ref"] / pred["n_atoms"], pred["energy"] / pred["n_atoms"], "energy per atom (eV)",
         f"RMSE {metrics['energy_rmse_per_atom'] * 1e3:.2f} meV/atom"),
        ("forces", pred["forces_ref"].ravel(), pred["forces"].ravel(), "force component (eV/Å)",
         f"RMSE {metrics['force_rmse'] * 1e3:.1f} meV/Å"),
    ]
    for name, ref, prd, label, note in panels:
        fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
        ax.scatter(ref, prd, s=3, alpha=0.4, rasterized=True)
        lo, hi = float(min(ref.min(), prd.min())), float(max(ref.max(), prd.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.set_title(f"{title} {name}: {note}".strip(), fontsize=9)
        fig.tight_layout()
        path = out_dir / f"parity_{name}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
