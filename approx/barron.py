"""Barron-space rates: Monte Carlo m^(-1/2) for any d, grid interpolation m^(-2/d), and
random features against trained networks.

Target of ``barron-mc``: ``f(x) = E_w[ReLU(w . x)]`` with ``w ~ N(0, I_d)``, which equals
``|x| / sqrt(2 pi)``: an infinite-width two-layer ReLU network. Drawing ``m`` neurons from the
same distribution gives the width-m network ``f_m(x) = (1/m) sum_k ReLU(w_k . x)`` (mean-field
scaling) whose error is a Monte Carlo error: ``RMSE = sqrt(Var_w ReLU(w.x) / m) ~ m^(-1/2)``
whatever the dimension (Barron, IEEE Trans. Inf. Theory 39, 930 (1993); E, Ma, Wu, Constr.
Approx. 55, 369 (2022)). Piecewise-(multi)linear interpolation on a grid of m nodes has error
``~ h^2 = m^(-2/d)``: the curse of dimensionality.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from nnpot.approx.result import Series, StudyResult
from nnpot.approx.training import refine_lbfgs, relative_rmse, train_online
from nnpot.nn import two_layer

__all__ = ["BarronConfig", "barron_mc", "RandomFeaturesConfig", "random_features"]


@dataclass
class BarronConfig:
    dims: list[int] = field(default_factory=lambda: [2, 10, 100])
    widths: list[int] = field(default_factory=lambda: [16, 64, 256, 1024, 4096])
    seeds: int = 8
    n_test: int = 4000
    trained_seeds: int = 2  #: trained networks per width (0: sampled networks only)
    train_steps: int = 2000  #: Adam steps on fresh samples, starting from the sampled network
    train_batch: int = 512
    lr: float = 3e-3
    grid_dims: list[int] = field(default_factory=lambda: [2, 3, 4])  # on [0.5, 1.5]^d; in 1-D |x| is linear there
    grid_points_per_dim: list[int] = field(default_factory=lambda: [3, 5, 9, 17, 33])

    @classmethod
    def quick(cls) -> "BarronConfig":
        return cls(widths=[16, 64, 256, 1024], seeds=6, n_test=2000, trained_seeds=1, train_steps=300,
                   train_batch=256, grid_points_per_dim=[3, 5, 9, 17, 33])


def _target(x: torch.Tensor) -> torch.Tensor:
    return x.norm(dim=-1) / math.sqrt(2 * math.pi)


def _shell(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    """Uniform directions, radii uniform in [0.5, 1.5]: the target varies in every dimension."""
    u = torch.randn(n, d, dtype=torch.float64, generator=g)
    return u / u.norm(dim=-1, keepdim=True) * (0.5 + torch.rand(n, 1, dtype=torch.float64, generator=g))


def _sampled_network(d: int, m: int, g: torch.Generator):
    """``(1/m) sum_k ReLU(w_k . x)`` with ``w_k ~ N(0, I_d)``: a Monte Carlo sample of the target."""
    net = two_layer(d, m, act="relu", init="mean_field", generator=g)
    with torch.no_grad():
        net.layers[0].weight.normal_(0.0, 1.0, generator=g)
        net.layers[1].weight.fill_(1.0)  # a_k = 1
    return net


def _grid_error(d: int, k: int, n_test: int, seed: int) -> float:
    from scipy.interpolate import RegularGridInterpolator  # lazy: scipy is needed by this study only

    # the cube [0.5, 1.5]^d keeps away from the kink of |x| at 0, so the target is smooth there
    axes = [np.linspace(0.5, 1.5, k)] * d
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    values = np.linalg.norm(mesh, axis=-1) / math.sqrt(2 * math.pi)
    interp = RegularGridInterpolator(axes, values, method="linear")
    x = np.random.default_rng(seed).uniform(0.5, 1.5, (n_test, d))
    return float(np.sqrt(np.mean((interp(x) - np.linalg.norm(x, axis=-1) / math.sqrt(2 * math.pi)) ** 2)))


def barron_mc(config: BarronConfig | None = None, quick: bool = True) -> StudyResult:
    """Relative RMSE of sampled and of trained width-m networks for each d, and the RMSE of grid
    interpolation with m nodes.

    Sampled: the Monte Carlo rate m^-1/2 exactly, the same in every dimension. Trained: Adam on
    fresh samples starting from the sampled network; the Barron theory bounds its error by the
    same C m^-1/2 (the theory slope drawn is that bound; a trained network may do better).
    """
    c = config or (BarronConfig.quick() if quick else BarronConfig())
    t0 = time.perf_counter()
    sampled, trained = [], []
    widths = [float(m) for m in c.widths]
    for d in c.dims:
        x = _shell(c.n_test, d, torch.Generator().manual_seed(12345))
        y = _target(x)
        scale = float(y.pow(2).mean().sqrt())
        errors = [[relative_rmse(_sampled_network(d, m, torch.Generator().manual_seed(1000 * s + m)), x, y, scale)
                   for s in range(c.seeds)] for m in c.widths]
        sampled.append(Series(f"sampled network, d={d}", widths, errors, -0.5, metric="relative RMSE"))
        if c.trained_seeds:
            errors = []
            for m in tqdm(c.widths, desc=f"trained networks, d={d}", leave=False, disable=None):
                row = []
                for s in range(c.trained_seeds):
                    g = torch.Generator().manual_seed(1000 * s + m)
                    net = train_online(_sampled_network(d, m, g), lambda n, g, d=d: _shell(n, d, g), _target,
                                       c.train_steps, c.lr, c.train_batch, g)
                    row.append(relative_rmse(net, x, y, scale))
                errors.append(row)
            trained.append(Series(f"trained network, d={d}", widths, errors, -0.5, metric="relative RMSE"))
    grids = []
    for d in c.grid_dims:
        nodes = [float(k ** d) for k in c.grid_points_per_dim]
        errors = [[_grid_error(d, k, c.n_test, 0)] for k in c.grid_points_per_dim]
        # the interpolation error reaches its h^2 regime only once h is well below the curvature scale
        grids.append(Series(f"grid interpolation, d={d}", nodes, errors, -2.0 / d, drop=2,
                            xlabel="grid nodes m", metric="RMSE"))
    series = sampled + trained + grids
    for s in series:
        s.fit_rate()
    return StudyResult("barron-mc", "width m", series, time.perf_counter() - t0, quick,
                       notes={"target": "E_w ReLU(w.x) = |x|/sqrt(2 pi), w ~ N(0, I_d)",
                              "inputs": "uniform directions, |x| uniform in [0.5, 1.5]",
                              "train_steps": c.train_steps if c.trained_seeds else 0,
                              # best width-m ReLU approximation over the variation-space unit ball
                              # (Siegel and Xu, Found. Comput. Math. 2022): what training could reach
                              "sharp_rate": {str(d): -(0.5 + 1.5 / d) for d in c.dims}})


@dataclass
class RandomFeaturesConfig:
    d: int = 20
    widths: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128, 256])
    n_train: int = 20000
    n_test: int = 4000
    train_steps: int = 3000
    seeds: int = 3
    lr: float = 1e-2
    lbfgs_iterations: int = 200  #: L-BFGS finish of the trained networks on the training sample

    @classmethod
    def quick(cls) -> "RandomFeaturesConfig":
        return cls(widths=[8, 16, 32, 64, 128], n_train=6000, n_test=2000, train_steps=600, seeds=2)


def random_features(config: RandomFeaturesConfig | None = None, quick: bool = True) -> StudyResult:
    """A single ReLU neuron in d dimensions, fitted by random features (inner weights frozen,
    outer weights by least squares) and by fully trained networks of the same width.

    The single neuron lies outside the random-feature RKHS in high dimension, so random features
    converge slowly (the rate of kernel methods degrades with d), while a trained network can
    place one neuron on the target (Ghorbani et al., Ann. Statist. 49, 1029 (2021); E, Ma, Wu):
    its error is set by the optimiser (Adam, then L-BFGS on the same samples), not by m.
    """
    c = config or (RandomFeaturesConfig.quick() if quick else RandomFeaturesConfig())
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(7)
    v = torch.randn(c.d, dtype=torch.float64, generator=g)
    v /= v.norm()

    def sample(n):
        x = torch.randn(n, c.d, dtype=torch.float64, generator=g)
        return x / x.norm(dim=-1, keepdim=True) * math.sqrt(c.d), None

    x_tr, _ = sample(c.n_train)
    x_te, _ = sample(c.n_test)
    f = lambda x: torch.relu(x @ v)  # noqa: E731
    y_tr, y_te = f(x_tr), f(x_te)
    scale = float(y_te.pow(2).mean().sqrt())
    rf_err, nn_err = [], []
    for m in c.widths:
        rf_row, nn_row = [], []
        for s in range(c.seeds):
            gs = torch.Generator().manual_seed(100 * m + s)
            net = two_layer(c.d, m, act="relu", init="mean_field", bias=False, generator=gs)
            with torch.no_grad():
                phi = torch.relu(x_tr @ net.layers[0].weight.T)  # frozen features [n, m]
                a = torch.linalg.lstsq(phi, y_tr[:, None]).solution
                pred = torch.relu(x_te @ net.layers[0].weight.T) @ a
                rf_row.append(float((pred.squeeze(-1) - y_te).pow(2).mean().sqrt()) / scale)
            # minibatches of the same n_train samples the random features were fitted on
            train_online(net, lambda n, g: x_tr[torch.randint(0, c.n_train, (n,), generator=g)], f,
                         c.train_steps, c.lr, 256, gs)
            refine_lbfgs(net, x_tr, y_tr, c.lbfgs_iterations)
            nn_row.append(relative_rmse(net, x_te, y_te, scale))
        rf_err.append(rf_row)
        nn_err.append(nn_row)
    widths = [float(m) for m in c.widths]
    series = [Series(f"random features, d={c.d}", widths, rf_err, None, metric="relative RMSE"),
              Series(f"trained network, d={c.d}", widths, nn_err, None, metric="relative RMSE")]
    for s in series:
        s.fit_rate()
    return StudyResult("random-features", "width m", series, time.perf_counter() - t0, quick,
                       notes={"target": "ReLU(v.x), |x| = sqrt(d)", "train_steps": c.train_steps})
