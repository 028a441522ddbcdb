"""A layer-wise extended Kalman filter optimiser (``optimizer: lkf``), after Hu et al., "Training
one DeePMD model in minutes: a step towards online learning" (PPoPP 2024), the ``LKF`` of
DeePMD-kit's PyTorch backend.

The weights ``w`` are the state of a Kalman filter whose measurements are scalar summaries
``y(w)`` of a model's predictions (a frame's energy per atom, or a group of force components,
each sign-flipped so that its error is positive). With ``H = dy/dw`` and the error ``e`` of ``y``,
one update is::

    s = lambda + sum_b H_b^T P_b H_b
    w_b += (e / s) P_b H_b
    P_b = (P_b - P_b H_b H_b^T P_b / s) / lambda
    lambda = nue lambda + 1 - nue

``P`` is kept block-diagonal: the parameters, in order, are cut into blocks of at most ``block``
numbers (a large layer into several, small layers merged), so memory is ``sum_b n_b^2`` numbers,
at most ``n_params * block``. The forgetting factor ``lambda`` starts at ``lam`` and rises
towards 1, so early measurements are forgotten and later ones averaged.

On a linear model ``y = H w`` with ``lambda = 1`` each update is one step of recursive least
squares, and after all the measurements ``w`` is their least-squares fit (regularised by the
initial ``P = I``); ``tests/test_kalman.py`` checks exactly that.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["LayerwiseKalman", "covariance_bytes"]


def covariance_bytes(blocks: list[list[tuple[int, int, int]]], element_size: int) -> int:
    """Memory of the block-diagonal covariance: the square of each block's size."""
    return sum(sum(b - a for _, a, b in blk) ** 2 for blk in blocks) * element_size


class LayerwiseKalman:
    """The filter over ``params`` (their ``.grad`` is ``H`` at each :meth:`step`)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], block: int = 1024, lam: float = 0.98,
                 nue: float = 0.9987, max_bytes: int | None = None) -> None:
        if block < 1 or not 0 < lam <= 1 or not 0 < nue <= 1:
            raise ValueError("kalman: block >= 1, 0 < lambda <= 1 and 0 < nue <= 1")
        self.params = [p for p in params if p.requires_grad and p.numel()]
        self.lam, self.nue = float(lam), float(nue)
        # each block: [(param index, start, stop)] slices of flattened parameters
        self.blocks: list[list[tuple[int, int, int]]] = []
        current: list[tuple[int, int, int]] = []
        size = 0
        for k, p in enumerate(self.params):
            n = p.numel()
            if n > block:  # a large layer: blocks of its own
                if current:
                    self.blocks.append(current)
                    current, size = [], 0
                self.blocks += [[(k, a, min(a + block, n))] for a in range(0, n, block)]
                continue
            if size + n > block:
                self.blocks.append(current)
                current, size = [], 0
            current.append((k, 0, n))
            size += n
        if current:
            self.blocks.append(current)
        ref = self.params[0]
        need = covariance_bytes(self.blocks, ref.element_size())
        if max_bytes is not None and need > max_bytes:
            raise MemoryError(f"the Kalman filter's covariance needs {need / 2**30:.1f} GiB for "
                              f"{sum(p.numel() for p in self.params):,} weights in blocks of {block}, more than the "
                              f"{max_bytes / 2**30:.1f} GiB allowed; lower kalman_block or train a smaller model")
        self.P = [torch.eye(sum(b - a for _, a, b in blk), dtype=ref.dtype, device=ref.device) for blk in self.blocks]

    def _flat(self, blk: list[tuple[int, int, int]], grads: bool) -> torch.Tensor:
        parts = []
        for k, a, b in blk:
            p = self.params[k]
            t = p.grad if grads else p.detach()
            parts.append(torch.zeros(b - a, dtype=p.dtype, device=p.device) if t is None else t.reshape(-1)[a:b])
        return torch.cat(parts)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, error: float | torch.Tensor) -> None:
        """One measurement update with the gradients now in ``.grad`` as ``H`` and ``error``,
        the measured minus the predicted ``y``."""
        H = [self._flat(blk, grads=True) for blk in self.blocks]
        PH = [P @ h for P, h in zip(self.P, H)]
        s = float(self.lam + sum(torch.dot(h, ph) for h, ph in zip(H, PH)))
        gain = float(error) / s
        for blk, P, ph in zip(self.blocks, self.P, PH):
            offset = 0
            for k, a, b in blk:
                self.params[k].data.view(-1)[a:b].add_(ph[offset:offset + b - a] * gain)
                offset += b - a
            P.addr_(ph, ph, alpha=-1.0 / s).div_(self.lam)
        self.lam = self.nue * self.lam + 1.0 - self.nue

    def state_dict(self) -> dict:
        return {"lam": self.lam, "nue": self.nue, "P": list(self.P)}  # saved at once: no copy

    def load_state_dict(self, state: dict) -> None:
        shapes = [tuple(P.shape) for P in self.P]
        if [tuple(P.shape) for P in state["P"]] != shapes:
            raise ValueError("the Kalman filter's blocks do not match the model's parameters")
        self.lam, self.nue = float(state["lam"]), float(state["nue"])
        self.P = [P.to(Q) for P, Q in zip(state["P"], self.P)]
