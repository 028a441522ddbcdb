"""Error decomposition of a two-layer network on a Barron target.

The target is ``f*(x) = E_w[relu(w . x)] = sqrt(x^T S x / (2 pi))`` with ``w ~ N(0, S)`` and an
anisotropic diagonal ``S``, on the unit ball in d dimensions: an infinite-width two-layer
network whose path norm is ``E ||w||_1 = sum_i sqrt(2 S_ii / pi)``. Students are two-layer
ReLU networks of width m with mean-field scaling. Three series separate the error sources:

* approximation: test RMSE against m, trained by Adam on fresh samples and then L-BFGS on
  ``n_large`` samples (many more than parameters, so the estimation error is negligible). The
  Barron bound is ``RMSE <= ||f*||_B / sqrt(m)`` (slope -1/2); the sharp rate of the best
  width-m ReLU network over the unit ball of the variation space is ``m^-(1/2 + 3/(2d))``
  (Siegel and Xu, Found. Comput. Math. (2022)), -0.8 at d = 5, the theory slope drawn;
* estimation: the generalisation gap ``test MSE - train MSE`` against n at fixed m, trained
  full-batch on n samples, next to the Rademacher bound ``2 Q sqrt(2 ln(2d) / n)`` with Q the
  trained student's path norm (E, Ma, Wu, Commun. Math. Sci. 17, 1407 (2019)), whose rate is
  n^-1/2; the gap itself usually falls faster (a bound, not an estimate);
* optimisation: test RMSE against training steps T at fixed m, fresh samples.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from nnpot.approx.result import Series, StudyResult
from nnpot.approx.training import refine_lbfgs, relative_rmse, train_on_samples, train_online
from nnpot.nn import path_norm, two_layer

__all__ = ["DecompositionConfig", "decomposition"]


@dataclass
class DecompositionConfig:
    d: int = 5
    widths: list[int] = field(default_factory=lambda: [4, 8, 16, 32, 64, 128, 256])
    samples: list[int] = field(default_factory=lambda: [64, 256, 1024, 4096])
    steps_list: list[int] = field(default_factory=lambda: [30, 100, 300, 1000, 3000])
    n_large: int = 20000  #: samples of the L-BFGS finish in the approximation series
    lbfgs_iterations: int = 500
    warmup_steps: int = 300  #: Adam steps (fresh samples) before the L-BFGS finish
    m_fixed: int = 128
    steps: int = 3000  #: training steps of the approximation and estimation series
    batch: int = 512
    n_test: int = 10000
    seeds: int = 2
    lr: float = 1e-2

    @classmethod
    def quick(cls) -> "DecompositionConfig":
        return cls(widths=[4, 8, 16, 32, 64], samples=[64, 256, 1024], steps_list=[30, 100, 300, 1000], m_fixed=64,
                   steps=1000, batch=256, n_test=4000, seeds=1, n_large=8000, lbfgs_iterations=250)


def _ball(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, d, dtype=torch.float64, generator=g)
    r = torch.rand(n, 1, dtype=torch.float64, generator=g) ** (1.0 / d)
    return x / x.norm(dim=-1, keepdim=True) * r


def _estimation(c: DecompositionConfig, sample, target, student, x_test: torch.Tensor, y_test: torch.Tensor,
                scale: float) -> tuple[list[list[float]], list[list[float]]]:
    """Per sample size n and seed: the generalisation gap (test minus train MSE, relative) of a
    width-``m_fixed`` net trained on n samples, and the path-norm Rademacher bound
    ``2 Q sqrt(2 ln(2d) / n)`` of the same net."""
    gaps, bounds = [], []
    for n in c.samples:
        row, brow = [], []
        for s in range(c.seeds):
            x = sample(n, torch.Generator().manual_seed(100 + s))
            y = target(x)
            net = train_on_samples(student(c.m_fixed, s), x, y, c.steps, c.lr)
            train_mse = relative_rmse(net, x, y, scale) ** 2
            test_mse = relative_rmse(net, x_test, y_test, scale) ** 2
            row.append(max(test_mse - train_mse, 1e-12))
            brow.append(2 * float(path_norm(net).detach()) * math.sqrt(2 * math.log(2 * c.d) / n) / scale)
        gaps.append(row)
        bounds.append(brow)
    return gaps, bounds


def decomposition(config: DecompositionConfig | None = None, quick: bool = True) -> StudyResult:
    c = config or (DecompositionConfig.quick() if quick else DecompositionConfig())
    t0 = time.perf_counter()
    S = torch.linspace(0.2, 2.0, c.d, dtype=torch.float64)

    def target(x: torch.Tensor) -> torch.Tensor:
        return ((x * x * S).sum(-1) / (2 * math.pi)).sqrt()

    def sample(n: int, g: torch.Generator) -> torch.Tensor:
        return _ball(n, c.d, g)

    def student(m: int, seed: int):
        return two_layer(c.d, m, act="relu", init="mean_field", bias=True, generator=torch.Generator().manual_seed(seed))

    x_test = sample(c.n_test, torch.Generator().manual_seed(0))
    y_test = target(x_test)
    scale = float(y_test.pow(2).mean().sqrt())

    def online(m: int, steps: int, seed: int) -> float:
        net = train_online(student(m, seed), sample, target, steps, c.lr, c.batch, torch.Generator().manual_seed(10 + seed))
        return relative_rmse(net, x_test, y_test, scale)

    x_large = sample(c.n_large, torch.Generator().manual_seed(1))
    y_large = target(x_large)

    def best_fit(m: int, seed: int) -> float:
        net = train_online(student(m, seed), sample, target, min(c.steps, c.warmup_steps), c.lr, c.batch,
                           torch.Generator().manual_seed(10 + seed))
        return relative_rmse(refine_lbfgs(net, x_large, y_large, c.lbfgs_iterations), x_test, y_test, scale)

    approx = [[best_fit(m, s) for s in range(c.seeds)] for m in tqdm(c.widths, desc="widths", leave=False, disable=None)]
    gaps, bounds = _estimation(c, sample, target, student, x_test, y_test, scale)
    optim = [[online(c.m_fixed, t, s) for s in range(c.seeds)] for t in c.steps_list]
    samples = [float(n) for n in c.samples]
    series = [
        Series("approximation: test RMSE vs width m (Adam, then L-BFGS)", [float(m) for m in c.widths], approx,
               -(0.5 + 1.5 / c.d), drop=1, metric="relative error"),
        Series(f"estimation: generalisation gap (MSE) vs samples n, m={c.m_fixed}", samples, gaps, None,
               metric="relative error", xlabel="samples n"),
        Series("Rademacher bound 2Q sqrt(2 ln(2d)/n)", samples, bounds, -0.5, metric="relative error",
               xlabel="samples n"),
        Series(f"optimisation: test RMSE vs Adam steps, m={c.m_fixed}", [float(t) for t in c.steps_list], optim, None,
               metric="relative error", xlabel="training steps"),
    ]
    for s in series:
        s.fit_rate()
    barron_norm = float(torch.sqrt(2 * S / math.pi).sum())
    return StudyResult("decomposition", "width m", series, time.perf_counter() - t0, quick,
                       notes={"d": c.d, "barron_bound_slope": -0.5, "target": "sqrt(x^T S x / (2 pi)), S = diag(linspace(0.2, 2, d))",
                              "target_path_norm": barron_norm, "target_rms": scale,
                              "gap_below_bound": all(gap < b for gr, br in zip(gaps, bounds) for gap, b in zip(gr, br))})
