"""Exception types. Every error a user can cause derives from :class:`NNPotError`,
so the CLI can print it as one line instead of a traceback."""

from __future__ import annotations

__all__ = [
    "NNPotError",
    "FrameIndexError",
    "DatasetError",
    "ModelFileError",
    "NeighborOverflowError",
    "AtomsTooCloseError",
    "InvalidStructureError",
    "ConfigError",
    "UnknownElementError",
]


class NNPotError(Exception):
    """Base class of every error caused by user input."""


class DatasetError(NNPotError, ValueError):
    """A dataset source or file is malformed, inconsistent or non-finite."""


class ModelFileError(NNPotError, ValueError):
    """A model file is unreadable, of an unknown version, or not a model file."""


class NeighborOverflowError(NNPotError, RuntimeError):
    """More neighbors of one type were found than the layout has room for."""


class AtomsTooCloseError(NNPotError, RuntimeError):
    """Two atoms came closer than the allowed minimum distance (a collapsing simulation)."""


class InvalidStructureError(NNPotError, ValueError):
    """A structure has non-finite positions or cell, or a singular periodic cell."""


class ConfigError(NNPotError, ValueError):
    """A configuration key is unknown or its value has the wrong type."""


class UnknownElementError(NNPotError, KeyError):
    """An element appears that the model or dataset does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FrameIndexError(NNPotError, IndexError):
    """A frame index beyond a dataset's frames (an ``IndexError`` too, so iteration works)."""
