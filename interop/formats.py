"""The model formats :mod:`nnpot.interop` provides, registered with
:func:`nnpot.potentials.modelfile.register_model_format` (through the ``nnpot.model_formats``
entry point in pyproject.toml, so :mod:`nnpot.potentials` never imports this package)."""

from __future__ import annotations

from nnpot.interop.deepmd_file import DEEPMD_SUFFIXES
from nnpot.interop.deepmd_model import load_deepmd_model, save_deepmd_model
from nnpot.potentials.modelfile import ModelFormat, register_model_format

__all__ = ["register"]


def register() -> None:
    """DeePMD-kit's backend-independent ``.dp`` (HDF5) and ``.yaml`` files."""
    register_model_format(DEEPMD_SUFFIXES, ModelFormat("deepmd-kit", load_deepmd_model, save_deepmd_model))
