"""Which torch device a user's ``device`` setting means."""

from __future__ import annotations

import torch

from nnpot.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` means CUDA when available, else CPU; a device that does not exist here is a
    :class:`~nnpot.errors.ConfigError` naming the ones that do."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device: {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index or 0) >= n:
            raise ConfigError(f"device: {device!r} is not available here ({n} CUDA device(s)); use auto or cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device: {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    return dev
