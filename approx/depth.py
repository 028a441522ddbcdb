"""Depth: Yarotsky's ReLU construction of x^2, whose error falls exponentially with depth.

With the hat function ``g(x) = 2 relu(x) - 4 relu(x - 1/2) + 2 relu(x - 1)`` on [0, 1] and its
s-fold composition ``g_s``, ``f_m(x) = x - sum_{s=1}^m g_s(x) / 4^s`` is the piecewise-linear
interpolant of ``x^2`` on ``2^m`` equal pieces, so ``sup |f_m - x^2| = 2^(-2m-2)`` exactly
(Yarotsky, Neural Networks 94, 103 (2017)). The construction is a depth-m ReLU network of width
5; here its weights are set by hand in the core's :class:`~nnpot.nn.MLP`, which makes the study a
unit test of the core. Against the number of linear pieces ``N = 2^m`` the error is ``N^-2 / 4``:
a log-log slope of -2, reached with depth (a shallow network needs N neurons for N pieces).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from nnpot.approx.result import Series, StudyResult
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

    @classmethod
    def quick(cls) -> "DepthConfig":
        return cls()


def depth_study(config: DepthConfig | None = None, quick: bool = True) -> StudyResult:
    c = config or DepthConfig()
    t0 = time.perf_counter()
    pieces = [float(2 ** m) for m in c.depths]
    errors = [[yarotsky_error(m)] for m in c.depths]
    series = Series("Yarotsky x^2, depth m", pieces, errors, -2.0, metric="sup error")
    series.fit_rate()
    return StudyResult("depth", "linear pieces 2^m (depth m)", [series], time.perf_counter() - t0, quick,
                       notes={"exact": {str(m): 2.0 ** (-2 * m - 2) for m in c.depths}})
