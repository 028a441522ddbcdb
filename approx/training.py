"""Training loops shared by the approximation studies.

Two regimes separate the error sources:

* ``train_online``: every step draws a fresh batch from the input distribution, so the loss is
  an unbiased estimate of the population risk and no estimation error builds up. What is left
  after training is approximation plus optimisation error; with a long enough schedule, the
  approximation error of the architecture.
* ``train_on_samples``: full-batch training on a fixed sample, the setting in which a
  generalisation gap appears.

Both use Adam with a cosine learning-rate decay to zero, which lets the final iterates settle
instead of oscillating at the initial step size. ``refine_lbfgs`` then polishes a network on a
fixed large sample with L-BFGS: first-order methods stall far above the approximation error of
wide networks within any CPU budget, and a quasi-Newton finish removes most of that
optimisation error, so the measured error is the architecture's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["Sampler", "Target", "train_online", "train_on_samples", "refine_lbfgs", "relative_rmse"]

Sampler = Callable[[int, torch.Generator], torch.Tensor]  #: (n, generator) -> inputs [n, d]
Target = Callable[[torch.Tensor], torch.Tensor]  #: inputs [n, d] -> values [n]


def _adam_cosine(net: nn.Module, lr: float, steps: int):
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))


def _step(net: nn.Module, opt, schedule, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = (net(x).squeeze(-1) - y).pow(2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    schedule.step()


def train_online(net: nn.Module, sample: Sampler, target: Target, steps: int, lr: float, batch: int,
                 generator: torch.Generator) -> nn.Module:
    """Minimise the population squared error by Adam on a fresh batch every step."""
    opt, schedule = _adam_cosine(net, lr, steps)
    for _ in range(steps):
        x = sample(batch, generator)
        _step(net, opt, schedule, x, target(x))
    return net


def train_on_samples(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> nn.Module:
    """Minimise the empirical squared error on ``(x, y)`` by full-batch Adam."""
    opt, schedule = _adam_cosine(net, lr, steps)
    for _ in range(steps):
        _step(net, opt, schedule, x, y)
    return net


def refine_lbfgs(net: nn.Module, x: torch.Tensor, y: torch.Tensor, iterations: int) -> nn.Module:
    """Minimise the empirical squared error on ``(x, y)`` by full-batch L-BFGS (strong Wolfe)."""
    opt = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=iterations, history_size=50,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = (net(x).squeeze(-1) - y).pow(2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return net


@torch.no_grad()
def relative_rmse(net: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: float) -> float:
    """RMSE of ``net`` on ``(x, y)`` divided by ``scale``."""
    return float((net(x).squeeze(-1) - y).pow(2).mean().sqrt()) / scale
