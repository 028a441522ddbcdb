"""nnpot: DeePMD-style machine-learned interatomic potentials.

Subpackages: :mod:`nnpot.data` (datasets), :mod:`nnpot.potentials` (models, neighbor lists,
training, the ASE calculator), :mod:`nnpot.md` (GPU-resident molecular dynamics) and
:mod:`nnpot.approx` (approximation-error studies). :mod:`nnpot.nn` is the network core they
share.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "NNPotCalculator", "EnsembleCalculator", "load_model", "save_model", "EnergyModel"]


def __getattr__(name: str):
    # Lazy, so that `import nnpot` (and the CLI's --help) does not import torch.
    if name in ("NNPotCalculator", "EnsembleCalculator"):
        from nnpot.potentials import calculator

        return getattr(calculator, name)
    if name in ("load_model", "save_model"):
        from nnpot.potentials import modelfile

        return getattr(modelfile, name)
    if name == "EnergyModel":
        from nnpot.potentials.model import EnergyModel

        return EnergyModel
    raise AttributeError(f"module 'nnpot' has no attribute {name!r}")
