"""The function-approximation core shared by the potentials and the analysis module.

Fully connected networks (:class:`MLP`) with DeePMD-style residual connections, their
initialisation schemes, and norms of their parameters. Nothing here knows about atoms.

Layer ``k`` maps ``x -> y = act(W_k x + b_k)`` (the last layer is linear when ``final_linear``).
With ``resnet=True`` a layer whose width is kept adds ``x`` (``y = x + dt * act(...)``) and a
layer that doubles the width adds ``concat(x, x)``, as DeePMD-kit's embedding and fitting nets
do; ``dt`` is the learnable per-channel "timestep" of ``resnet_dt`` (Zhang et al., NeurIPS 2018).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "activation",
    "is_activation",
    "path_norm",
    "weight_norm",
    "two_layer",
]

#: activation names; ``silut`` also takes a threshold, ``silut:2.5`` (default 3.0)
ACTIVATIONS = ("tanh", "gelu", "silu", "relu", "relu6", "softplus", "sigmoid", "silut", "linear")
InitScheme = Literal["deepmd", "torch", "mean_field"]


class SiLUT(nn.Module):
    """SiLU up to ``threshold``, then ``tanh(slope (x - threshold)) + SiLU(threshold)`` with the
    slope of SiLU there: C1, bounded, as DeePMD-kit's ``silut`` (alias ``custom_silu``)."""

    def __init__(self, threshold: float = 3.0):
        super().__init__()
        self.threshold = float(threshold)
        sig = 1.0 / (1.0 + math.exp(-self.threshold))
        self.slope = sig + self.threshold * sig * (1.0 - sig)
        self.const = self.threshold * sig

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x < self.threshold, nn.functional.silu(x),
                           torch.tanh(self.slope * (x - self.threshold)) + self.const)


def is_activation(name: str) -> bool:
    """Whether ``name`` is an activation :func:`activation` knows (``silut:T`` included)."""
    try:
        activation(name)
    except ValueError:
        return False
    return True


def activation(name: str) -> nn.Module:
    """The activation module called ``name`` (one of :data:`ACTIVATIONS`; ``gelu`` is the tanh
    approximation, as in DeePMD-kit)."""
    table = {
        "tanh": nn.Tanh,
        "gelu": lambda: nn.GELU(approximate="tanh"),
        "silu": nn.SiLU,
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "softplus": nn.Softplus,
        "sigmoid": nn.Sigmoid,
        "linear": nn.Identity,
    }
    base, _, arg = str(name).partition(":")
    if base == "silut":
        try:
            return SiLUT(float(arg) if arg else 3.0)
        except ValueError:
            pass
    elif name in table:
        return table[name]()
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


class MLP(nn.Module):
    """A fully connected network ``widths[0] -> widths[1] -> ... -> widths[-1]``.

    Args:
        widths: layer widths, input first.
        act: activation name for the hidden layers.
        resnet: residual connections where the width is kept or doubled (DeePMD style).
        resnet_dt: a learnable per-channel step ``dt`` scaling each residual update.
        final_linear: no activation (and no residual) on the last layer.
        bias: whether layers have biases.
        init: ``"deepmd"`` (weights ~ N(0, 1/(fan_in + fan_out)), biases ~ N(0, 1),
            dt ~ N(0.1, 0.001)), ``"torch"`` (PyTorch's default) or ``"mean_field"``
            (inner weights ~ N(0, 1/fan_in), output weights ~ N(0, 1) and the output
            multiplied by 1/m, the mean-field scaling of two-layer networks of width m).
        dtype: parameter dtype.

    Input ``[..., widths[0]]``, output ``[..., widths[-1]]``.
    """

    def __init__(
        self,
        widths: Sequence[int],
        act: str = "tanh",
        resnet: bool = False,
        resnet_dt: bool = False,
        final_linear: bool = True,
        bias: bool = True,
        init: InitScheme = "torch",
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"an MLP needs at least two widths, got {list(widths)}")
        self.widths = [int(w) for w in widths]
        self.act = activation(act)
        self.act_name = act
        self.final_linear = final_linear
        self.init_scheme = init
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias, dtype=dtype) for a, b in zip(self.widths[:-1], self.widths[1:])
        )
        n = len(self.layers)
        # residual kind per layer: 0 none, 1 identity, 2 doubled
        self.residual = []
        for k, (a, b) in enumerate(zip(self.widths[:-1], self.widths[1:])):
            last = k == n - 1
            kind = 0
            if resnet and not (last and final_linear):
                kind = 1 if b == a else 2 if b == 2 * a else 0
            self.residual.append(kind)
        self.dts = nn.ParameterList(
            nn.Parameter(torch.ones(b, dtype=dtype)) if (resnet_dt and kind) else nn.Parameter(torch.empty(0, dtype=dtype), requires_grad=False)
            for kind, b in zip(self.residual, self.widths[1:])
        )
        self.output_scale = 1.0 / self.widths[-2] if init == "mean_field" else 1.0
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-draw all parameters by the scheme given at construction."""
        g = generator
        for k, layer in enumerate(self.layers):
            fan_in, fan_out = layer.in_features, layer.out_features
            last = k == len(self.layers) - 1
            if self.init_scheme == "deepmd":
                layer.weight.normal_(0.0, 1.0 / math.sqrt(fan_in + fan_out), generator=g)
                if layer.bias is not None:
                    layer.bias.normal_(0.0, 1.0, generator=g)
            elif self.init_scheme == "mean_field":
                layer.weight.normal_(0.0, 1.0 if last else 1.0 / math.sqrt(fan_in), generator=g)
                if layer.bias is not None:
                    layer.bias.zero_() if last else layer.bias.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=g)
            elif self.init_scheme == "torch":
                bound = 1.0 / math.sqrt(fan_in)
                layer.weight.uniform_(-bound, bound, generator=g)
                if layer.bias is not None:
                    layer.bias.uniform_(-bound, bound, generator=g)
            else:
                raise ValueError(f"unknown init scheme {self.init_scheme!r}; use deepmd, torch or mean_field")
        for dt in self.dts:
            if dt.numel():
                dt.normal_(0.1, 0.001, generator=g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.layers)
        for k, layer in enumerate(self.layers):
            y = layer(x)
            if not (k == n - 1 and self.final_linear):
                y = self.act(y)
            kind = self.residual[k]
            if kind:
                dt = self.dts[k]
                if dt.numel():
                    y = y * dt
                y = y + (x if kind == 1 else torch.cat([x, x], dim=-1))
            x = y
        return x * self.output_scale if self.output_scale != 1.0 else x


def two_layer(d: int, m: int, act: str = "relu", init: InitScheme = "mean_field", bias: bool = False,
              dtype: torch.dtype = torch.float64, generator: torch.Generator | None = None) -> MLP:
    """A two-layer network ``x -> (1/m) sum_k a_k act(w_k . x)`` of width ``m`` (mean-field scaling)."""
    return MLP([d, m, 1], act=act, init=init, bias=bias, dtype=dtype, generator=generator)


def path_norm(net: MLP) -> torch.Tensor:
    """The path norm ``sum over input-output paths of prod |weights|`` (biases as extra inputs).

    For a two-layer network ``(1/m) sum_k a_k relu(w_k . x + b_k)`` this is
    ``(1/m) sum_k |a_k| (||w_k||_1 + |b_k|)``, the quantity that bounds its Rademacher
    complexity (E, Ma, Wu: "A priori estimates of the population risk for two-layer neural
    networks", Commun. Math. Sci. 17, 2019). Computed for any depth by propagating a vector of
    ones through the absolute weights.
    """
    v = None
    for layer in net.layers:
        w = layer.weight.abs()  # [out, in]
        v = w.sum(dim=1) if v is None else w @ v
        if layer.bias is not None:
            v = v + layer.bias.abs()
    return v.sum() * net.output_scale


def weight_norm(net: nn.Module, p: float = 2.0) -> torch.Tensor:
    """The ``p``-norm of all trainable parameters taken together."""
    params = [q.reshape(-1) for q in net.parameters() if q.requires_grad]
    return torch.linalg.vector_norm(torch.cat(params), ord=p)
