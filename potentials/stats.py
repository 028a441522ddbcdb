"""Statistics a model takes from its training data (environment-matrix normalisation and the
per-element energy bias, both as DeePMD-kit computes them) and the error metrics of its
predictions (:func:`error_metrics`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from nnpot.potentials.batch import make_batch, types_from_numbers
from nnpot.potentials.descriptor import environment

__all__ = ["compute_env_stats", "fit_energy_bias", "bias_is_determined", "energy_bias_shift", "apply_stats", "error_metrics"]

_PROTECTION = 1e-2  # smallest std accepted (DeePMD-kit's protection)


@torch.no_grad()
def compute_env_stats(d: torch.nn.Module, structures: Sequence, type_map: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``davg, dstd`` ``[n_types, n_types, 4]`` of se_e2_a descriptor ``d`` over all ``sel`` slots (empty ones count as zero rows).

    The radial component gets its mean and standard deviation; the three angular components
    get mean 0 and the root mean square of all three, as in DeePMD-kit.
    """
    n_types = d.n_types
    sums = torch.zeros(n_types, n_types, 5, dtype=torch.float64)  # n, sum r, sum r^2, sum a, sum a^2
    from tqdm.auto import tqdm

    for s in tqdm(structures, desc="statistics", unit=" frames", leave=False, disable=None):
        batch = make_batch([s], type_map, d.rcut, d.sel, dtype=torch.float64)
        env = environment(batch.edge_vectors(), batch.neighbors.mask, d.rcut_smth, d.rcut)  # [N, K, 4]
        start = 0
        for tj, cap in enumerate(d.sel):
            block = env[:, start:start + cap]
            start += cap
            for ti in range(n_types):
                b = block[batch.types == ti]
                if b.numel() == 0:
                    continue
                sums[ti, tj] += torch.stack([
                    torch.tensor(float(b.shape[0] * b.shape[1]), dtype=torch.float64),
                    b[..., 0].sum(), (b[..., 0] ** 2).sum(), b[..., 1:].sum(), (b[..., 1:] ** 2).sum(),
                ])
    count = sums[..., 0].clamp(min=1)
    avg_r = sums[..., 1] / count
    std_r = (sums[..., 2] / count - avg_r ** 2).clamp(min=0).sqrt()
    std_a = (sums[..., 4] / (3 * count)).sqrt()
    std_r = torch.where(std_r < _PROTECTION, torch.full_like(std_r, _PROTECTION), std_r)
    std_a = torch.where(std_a < _PROTECTION, torch.full_like(std_a, _PROTECTION), std_a)
    davg = torch.zeros(n_types, n_types, 4, dtype=torch.float64)
    davg[..., 0] = avg_r
    dstd = torch.stack([std_r, std_a, std_a, std_a], dim=-1)
    return davg, dstd


def fit_energy_bias(energies: np.ndarray, numbers: Sequence[np.ndarray], type_map: Sequence[str]) -> np.ndarray:
    """Per-element energies ``b`` minimising ``sum_f (E_f - sum_t n_ft b_t)^2`` (least squares).

    When all frames share one composition the system is rank-deficient and the minimum-norm
    solution is taken, as DeePMD-kit does.
    """
    counts = np.stack([np.bincount(types_from_numbers(z, type_map), minlength=len(type_map)) for z in numbers])
    bias, *_ = np.linalg.lstsq(counts.astype(np.float64), np.asarray(energies, np.float64), rcond=None)
    return bias


def bias_is_determined(numbers: Sequence[np.ndarray], type_map: Sequence[str]) -> bool:
    """Whether the frames' element counts tell the per-element energies apart: False when the
    counts are proportional in every frame (water is always 2 H : 1 O), so only one combination
    of the offsets is fitted and :func:`fit_energy_bias` takes the minimum-norm split."""
    counts = np.stack([np.bincount(types_from_numbers(z, type_map), minlength=len(type_map)) for z in numbers])
    present = counts.any(axis=0)
    return np.linalg.matrix_rank(counts[:, present].astype(np.float64)) == int(present.sum())


def energy_bias_shift(model: torch.nn.Module, frames: Sequence, batch_size: int = 4, progress: bool = False) -> np.ndarray:
    """The per-element shift (eV) of ``model.energy_bias`` that fits the energy residuals of
    labelled ``frames`` in the least-squares sense (DeePMD-kit's ``dp change-bias``, in closed
    form). Adding it changes no force, so only energies are evaluated."""
    from nnpot.potentials.evaluator import predict_energies

    frames = list(frames)
    pred = predict_energies(model, frames, batch_size=batch_size, progress=progress, desc="energy re-fit")
    return fit_energy_bias(pred["energy_ref"] - pred["energy"], [f.numbers for f in frames], model.type_map)


def apply_stats(model: torch.nn.Module, structures: Sequence, energies: np.ndarray | None = None) -> None:
    """Fit the descriptor's input statistics (se_e2_a: davg/dstd) and, when ``energies`` are
    given, the per-element energy bias of ``model``."""
    structures = list(structures)
    model.descriptor.fit_statistics(structures, model.type_map)
    if energies is not None:
        bias = fit_energy_bias(energies, [s.numbers for s in structures], model.type_map)
        model.energy_bias.copy_(torch.as_tensor(bias).to(model.energy_bias))


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
