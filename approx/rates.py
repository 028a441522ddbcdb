"""Fitting convergence rates: log-log slopes with bootstrap confidence intervals, and error floors.

A rate ``error ~ a * n^b`` is fitted as a straight line through ``(log n, log error)``. The
first ``drop`` points can be declared pre-asymptotic and left out. The confidence interval
resamples the (parameter, seed) measurements with replacement (a percentile bootstrap).
``fit_with_floor`` fits ``error = c + a * n^b`` by least squares over ``c`` on a grid and a
log-log line for the rest, for errors that level off (noise, finite data, float precision).
"""

from __future__ import annotations

from collections.abc import Sequence

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["RateFit", "fit_rate", "fit_with_floor"]


@dataclass
class RateFit:
    slope: float
    slope_ci: tuple[float, float]
    prefactor: float
    floor: float = 0.0
    metric: str = "RMSE"  #: which error the exponent describes ("RMSE", "MSE", "sup", ...)
    points_used: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["slope_ci"] = list(self.slope_ci)
        return d


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope), float(np.exp(intercept))


def fit_rate(params: Sequence[float], errors: Sequence[float], drop: int = 0, metric: str = "RMSE", n_boot: int = 2000, level: float = 0.95,
             seed: int = 0) -> RateFit:
    """Slope of ``log error`` against ``log param``.

    Args:
        params: ``[k]`` parameter values (width, samples, 1/dt, ...), or ``[k, s]`` repeated per seed.
        errors: same shape as ``params``: the errors measured (one per seed when 2-D).
        drop: number of smallest parameter values to leave out as pre-asymptotic.
    """
    x = np.asarray(params, dtype=float)
    y = np.asarray(errors, dtype=float)
    if x.shape != y.shape:
        x = np.broadcast_to(x.reshape(-1, *([1] * (y.ndim - 1))), y.shape)
    values = np.unique(x)
    keep = np.isin(x, values[drop:]) & (y > 0) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(np.unique(x)) < 2:
        raise ValueError("need errors at two or more parameter values to fit a rate")
    slope, pref = _line(x, y)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        if len(np.unique(x[idx])) >= 2:
            boots.append(_line(x[idx], y[idx])[0])
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return RateFit(slope, (float(lo), float(hi)), pref, 0.0, metric, int(len(x)))


def fit_with_floor(params: Sequence[float], errors: Sequence[float], metric: str = "RMSE", drop: int = 0, n_grid: int = 200) -> RateFit:
    """Fit ``error = c + a * n^b`` (``c >= 0``): the floor ``c`` by a grid search below the
    smallest error, then ``a, b`` by a log-log line through ``error - c``."""
    x = np.asarray(params, dtype=float).reshape(-1)
    y = np.asarray(errors, dtype=float).reshape(-1)
    order = np.argsort(x)
    x, y = x[order][drop:], y[order][drop:]
    best = None
    for c in np.concatenate([[0.0], np.linspace(0, 0.999 * y.min(), n_grid)[1:]]):
        slope, pref = _line(x, y - c)
        resid = np.sum((np.log(c + pref * x ** slope) - np.log(y)) ** 2)
        if best is None or resid < best[0]:
            best = (resid, c, slope, pref)
    _, c, slope, pref = best
    fit = fit_rate(x, y - c, metric=metric) if c > 0 else fit_rate(x, y, metric=metric)
    return RateFit(slope, fit.slope_ci, pref, float(c), metric, int(len(x)))
