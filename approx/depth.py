"""Depth: Yarotsky's ReLU construction of x^2, whose error falls exponentially with depth, and
a depth separation between one and two hidden layers at equal parameter count.

With the hat function ``g(x) = 2 relu(x) - 4 relu(x - 1/2) + 2 relu(x - 1)`` on [0, 1] and its
s-fold composition ``g_s``, ``f_m(x) = x - sum_{s=1}^m g_s(x) / 4^s`` is the piecewise-linear
interpolant of ``x^2`` on ``2^m`` equal pieces, so ``sup |f_m - x^2| = 2^(-2m-2)`` exactly
(Yarotsky, Neural Networks 94, 103 (2017)). The construction is a depth-m ReLU network of width
5; here its weights are set by hand in the core's :class:`~nnpot.nn.MLP`, which makes the study a
unit test of the core. Against the number of linear pieces ``N = 2^m`` the error is ``N^-2 / 4``:
a log-log slope of -2, reached with depth (a shallow network needs N neurons for N pieces).

Separation: ``|x|`` is a Barron function (one hidden layer approximates it at the Monte Carlo
rate or better), while the distance to the unit sphere ``| |x| - 1 |`` is not: its kink lies on
a curved (d-1)-dimensional surface, which one hidden layer of ReLUs can only approximate by
many flat pieces. Two hidden layers compute it as ``relu(r - 1) + relu(1 - r)`` of an
approximate ``r = |x|``, so their error is that of ``|x|``. Both targets are fitted by one and by
two hidden layers with the same number of parameters, inputs with uniform directions and
``|x|`` uniform in [0, 2] (the kink in the middle), trained by Adam on fresh samples.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from nnpot.approx.result import Series, StudyResult
from nnpot.approx.training import relative_rmse, train_online
from nnpot.nn import MLP

__all__ = ["yarotsky_square", "DepthConfig", "depth_study"]


@torch.no_grad()
def yarotsky_square(m: int, dtype: torch.dtype = torch.float64) -> MLP:
    """The depth-m ReLU network ``f_m`` approximating ``x^2`` on [0, 1] (input and output ``[..., 1]``).

    Hidden units per layer: ``[x, acc, relu(h), relu(h - 1/2), relu(h - 1)]`` where ``h`` is the
    previous hat composition ``g_{s-1}`` and ``acc = x - sum_{r<s} g_r / 4^r``; all are >= 0 on
    [0, 1], so ReLU passes ``x`` and ``acc`` through unchanged.
    """
    net = MLP([1] + [5] * m + [1], act="relu", final_linear=True, init="torch", dtype=dtype)
    hat = torch.tensor([2.0, -4.0, 2.0], dtype=dtype)  # g = hat . [relu(h), relu(h-1/2), relu(h-1)]
    first = net.layers[0]
    first.weight.copy_(torch.ones(5, 1, dtype=dtype))  # x, acc = x, and h = x (g_0 = identity)
    first.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -0.5, -1.0], dtype=dtype))
    for s in range(1, m):  # layer s maps hidden state s-1 to s, adding g_s / 4^s to the sum
        W = torch.zeros(5, 5, dtype=dtype)
        W[0, 0] = 1.0
        W[1, 1] = 1.0
        W[1, 2:] = -hat / 4 ** s
        W[2:, 2:] = hat.expand(3, 3)
        net.layers[s].weight.copy_(W)
        net.layers[s].bias.copy_(torch.tensor([0.0, 0.0, 0.0, -0.5, -1.0], dtype=dtype))
    last = net.layers[m]
    w = torch.zeros(1, 5, dtype=dtype)
    w[0, 1] = 1.0
    w[0, 2:] = -hat / 4 ** m
    last.weight.copy_(w)
    last.bias.zero_()
    return net


def yarotsky_error(m: int, n_points: int = 2 ** 16 + 1) -> float:
    """Sup error of :func:`yarotsky_square` on a dyadic grid of [0, 1] that contains the midpoints
    of all ``2^m`` pieces (where the maximum ``2^(-2m-2)`` is attained)."""
    x = torch.linspace(0, 1, n_points, dtype=torch.float64)[:, None]
    with torch.no_grad():
        return float((yarotsky_square(m)(x) - x ** 2).abs().max())


@dataclass
class DepthConfig:
    depths: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7])
    separation: bool = True  #: also fit |x| and ||x| - 1| by one and two hidden layers
    d: int = 20
    parameters: list[int] = field(default_factory=lambda: [500, 2000, 8000, 32000])
    steps: int = 3000
    batch: int = 512
    lr: float = 3e-3
    seeds: int = 2
    n_test: int = 8000

    @classmethod
    def quick(cls) -> "DepthConfig":
        return cls(parameters=[500, 2000, 8000], steps=800, batch=256, seeds=1, n_test=4000)


def hidden_widths(d: int, parameters: int, hidden_layers: int) -> list[int]:
    """Equal widths of ``hidden_layers`` hidden layers (1 or 2) whose network, with biases and one
    output, has about ``parameters`` parameters."""
    if hidden_layers == 1:  # m (d + 1) + m + 1
        return [max(1, round((parameters - 1) / (d + 2)))]
    b = d + 3  # k (d + 1) + k (k + 1) + k + 1 = P
    return [max(1, round((-b + math.sqrt(b * b + 4 * (parameters - 1))) / 2))] * 2


def _separation_series(c: DepthConfig) -> list[Series]:
    def sample(n: int, g: torch.Generator) -> torch.Tensor:
        u = torch.randn(n, c.d, dtype=torch.float64, generator=g)
        return u / u.norm(dim=-1, keepdim=True) * (2 * torch.rand(n, 1, dtype=torch.float64, generator=g))

    targets = {"|x|": lambda x: x.norm(dim=-1), "||x| - 1|": lambda x: (x.norm(dim=-1) - 1).abs()}
    x_test = sample(c.n_test, torch.Generator().manual_seed(1))
    series = []
    for name, target in targets.items():
        y_test = target(x_test)
        scale = float(y_test.std())
        for layers, theory in ((1, -0.5 if name == "|x|" else None), (2, None)):
            counts, errors = [], []
            for budget in c.parameters:
                row = []
                for s in range(c.seeds):
                    g = torch.Generator().manual_seed(1000 * s + budget)
                    net = MLP([c.d] + hidden_widths(c.d, budget, layers) + [1], act="relu", init="torch",
                              dtype=torch.float64, generator=g)
                    row.append(relative_rmse(train_online(net, sample, target, c.steps, c.lr, c.batch, g),
                                             x_test, y_test, scale))
                counts.append(float(sum(q.numel() for q in net.parameters())))
                errors.append(row)
            series.append(Series(f"{name}, {layers} hidden layer{'s' if layers > 1 else ''}", counts, errors, theory,
                                 metric="RMSE / std of target", xlabel=f"parameters (d = {c.d})"))
    return series


def depth_study(config: DepthConfig | None = None, quick: bool = True) -> StudyResult:
    c = config or (DepthConfig.quick() if quick else DepthConfig())
    t0 = time.perf_counter()
    pieces = [float(2 ** m) for m in c.depths]
    errors = [[yarotsky_error(m)] for m in c.depths]
    series = [Series("Yarotsky x^2, depth m", pieces, errors, -2.0, metric="sup error")]
    notes: dict = {"exact": {str(m): 2.0 ** (-2 * m - 2) for m in c.depths}}
    if c.separation:
        series += _separation_series(c)
        last = {s.label: float(np.mean(s.errors[-1])) for s in series[1:]}
        notes["shallow_over_deep_at_largest"] = {
            "|x|": last["|x|, 1 hidden layer"] / last["|x|, 2 hidden layers"],
            "||x| - 1|": last["||x| - 1|, 1 hidden layer"] / last["||x| - 1|, 2 hidden layers"]}
        notes["steps"] = c.steps
    for s in series:
        s.fit_rate()
    return StudyResult("depth", "linear pieces 2^m (depth m)", series, time.perf_counter() - t0, quick, notes=notes)
