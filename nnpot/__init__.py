"""nnpot: DeePMD-style machine-learned interatomic potentials.

Subpackages: :mod:`nnpot.data` (datasets), :mod:`nnpot.potentials` (models, neighbor lists,
descriptors, the ASE calculator), :mod:`nnpot.training`, :mod:`nnpot.md` (GPU-resident molecular
dynamics), :mod:`nnpot.interop` (other codes' model files), :mod:`nnpot.explore` (active
learning) and :mod:`nnpot.approx` (approximation-error studies). :mod:`nnpot.nn` is the network core they
share.
"""

from __future__ import annotations

from nnpot._version import __version__

__all__ = ["__version__", "NNPotCalculator", "EnsembleCalculator", "load_model", "save_model", "EnergyModel"]


def __getattr__(name: str):
    # Lazy, so that `import nnpot` (and the CLI's --help) does not import torch.
    if name in ("NNPotCalculator", "EnsembleCalculator"):
        from nnpot.potentials import calculator  # lazy: PEP 562 attribute; `import nnpot` stays light until used

        return getattr(calculator, name)
    if name in ("load_model", "save_model"):
        from nnpot.potentials import modelfile  # lazy: PEP 562 attribute; `import nnpot` stays light until used

        return getattr(modelfile, name)
    if name == "EnergyModel":
        from nnpot.potentials.model import EnergyModel  # lazy: PEP 562 attribute; `import nnpot` stays light until used

        return EnergyModel
    raise AttributeError(f"module 'nnpot' has no attribute {name!r}")
