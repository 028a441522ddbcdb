"""Error metrics of a model's predictions against their labels (validation, ``nnpot test``)."""

from __future__ import annotations

import numpy as np
from ase.data import chemical_symbols

__all__ = ["error_metrics"]


def _rmse(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2))) if x.size else float("nan")


def _mae(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x))) if x.size else float("nan")


def error_metrics(pred: dict[str, np.ndarray]) -> dict:
    """RMSE and MAE of energy per atom (eV/atom), forces (eV/A, per component, and per
    element) and virial per atom (eV/atom) when labelled."""
    de = (pred["energy"] - pred["energy_ref"]) / pred["n_atoms"]
    df = pred["forces"] - pred["forces_ref"]
    metrics = {
        "frames": int(len(de)),
        "atoms": int(len(df)),
        "energy_rmse_per_atom": _rmse(de),
        "energy_mae_per_atom": _mae(de),
        "force_rmse": _rmse(df),
        "force_label_std": float(np.std(pred["forces_ref"])) if df.size else float("nan"),  # the spread to beat
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

