"""Error decomposition of a two-layer network on a Barron target.

The target is a wide teacher ``f*(x) = (1/M) sum_k a_k relu(w_k . x)`` (M = 2000) on the unit
ball in d dimensions; students are two-layer ReLU networks of width m with mean-field scaling,
trained by Adam on n samples for T steps. Three series separate the error sources:

* approximation: test RMSE against m, with n large and training long (theory: RMSE ~ m^-1/2);
* estimation: the generalisation gap ``test MSE - train MSE`` against n at fixed m, next to the
  path-norm bound ``2 Q sqrt(2 ln(2d) / n)`` with Q the trained student's path norm (E, Ma,
  Wu, Commun. Math. Sci. 17, 1407 (2019)), whose rate is n^-1/2;
* optimisation: test RMSE against training steps T at fixed m and n.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from nnpot.approx.result import Series, StudyResult
from nnpot.nn import path_norm, two_layer

__all__ = ["DecompositionConfig", "decomposition"]


@dataclass
class DecompositionConfig:
    d: int = 5
    widths: list[int] = field(default_factory=lambda: [4, 16, 64, 256])
    samples: list[int] = field(default_factory=lambda: [64, 256, 1024, 4096])
    steps_list: list[int] = field(default_factory=lambda: [50, 200, 800, 3200])
    n_large: int = 20000
    m_fixed: int = 128
    steps: int = 3000
    n_test: int = 10000
    seeds: int = 2
    lr: float = 1e-2

    @classmethod
    def quick(cls) -> "DecompositionConfig":
        return cls(widths=[4, 16, 64], samples=[64, 256, 1024], steps_list=[25, 100, 400], n_large=4000,
                   m_fixed=64, steps=400, n_test=4000, seeds=1)


def _ball(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, d, dtype=torch.float64, generator=g)
    r = torch.rand(n, 1, dtype=torch.float64, generator=g) ** (1.0 / d)
    return x / x.norm(dim=-1, keepdim=True) * r


def _train(x, y, m: int, steps: int, lr: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    net = two_layer(x.shape[1], m, act="relu", init="mean_field", bias=True, generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        loss = (net(x).squeeze(-1) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def decomposition(config: DecompositionConfig | None = None, quick: bool = True) -> StudyResult:
    c = config or (DecompositionConfig.quick() if quick else DecompositionConfig())
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    teacher = two_layer(c.d, 2000, act="relu", init="mean_field", bias=False, generator=g)
    with torch.no_grad():
        teacher.layers[1].weight.copy_(torch.sign(torch.randn(1, 2000, dtype=torch.float64, generator=g)))
    x_test = _ball(c.n_test, c.d, g)
    with torch.no_grad():
        y_test = teacher(x_test).squeeze(-1)
    scale = float(y_test.std())

    def data(n, seed):
        gs = torch.Generator().manual_seed(seed)
        x = _ball(n, c.d, gs)
        with torch.no_grad():
            return x, teacher(x).squeeze(-1)

    def test_rmse(net):
        with torch.no_grad():
            return float((net(x_test).squeeze(-1) - y_test).pow(2).mean().sqrt()) / scale

    approx = [[test_rmse(_train(*data(c.n_large, 10 + s), m, c.steps, c.lr, s)) for s in range(c.seeds)] for m in c.widths]
    gaps, bounds = [], []
    for n in c.samples:
        row, brow = [], []
        for s in range(c.seeds):
            x, y = data(n, 100 + s)
            net = _train(x, y, c.m_fixed, c.steps, c.lr, s)
            with torch.no_grad():
                train_mse = float((net(x).squeeze(-1) - y).pow(2).mean())
                test_mse = float((net(x_test).squeeze(-1) - y_test).pow(2).mean())
            row.append(max(test_mse - train_mse, 1e-12) / scale ** 2)
            brow.append(2 * float(path_norm(net).detach()) * math.sqrt(2 * math.log(2 * c.d) / n) / scale)
        gaps.append(row)
        bounds.append(brow)
    x, y = data(c.n_large, 7)
    optim = [[test_rmse(_train(x, y, c.m_fixed, t, c.lr, s)) for s in range(c.seeds)] for t in c.steps_list]
    series = [
        Series("approximation: test RMSE vs width m", [float(m) for m in c.widths], approx, -0.5, metric="relative error"),
        Series("estimation: generalisation gap (MSE) vs samples n", [float(n) for n in c.samples], gaps, None,
               metric="relative error"),
        Series("path-norm bound 2Q sqrt(2 ln(2d)/n) vs samples n", [float(n) for n in c.samples], bounds, -0.5,
               metric="relative error"),
        Series("optimisation: test RMSE vs training steps", [float(t) for t in c.steps_list], optim, None,
               metric="relative error"),
    ]
    for s in series:
        s.fit_rate()
    return StudyResult("decomposition", "width m / samples n / steps", series, time.perf_counter() - t0, quick,
                       notes={"d": c.d, "teacher_width": 2000, "gap_below_bound": all(
                           gap < b for gr, br in zip(gaps, bounds) for gap, b in zip(gr, br))})
