"""Entry points that make nnpot visible to ASE.

* ``ase.plugins`` (ASE >= 3.29, ``ase._4.plugins``): the calculator ``nnpot``.
* ``ase.ioformats``: ``ase.io.read("data.h5", index=":", format="nnpot-h5")`` reads an nnpot
  dataset as Atoms with a SinglePointCalculator holding the labels.
"""

from __future__ import annotations

from ase.utils.plugins import ExternalIOFormat

nnpot_h5_format = ExternalIOFormat(
    desc="nnpot HDF5 dataset (labelled structures)",
    code="+S",
    module="nnpot.data.aseio",
    ext="h5",
)


_PLUGINS: set | None = None


def _plugins() -> set:
    try:
        from ase._4.plugins.plugin import CalculatorPlugin  # lazy: ASE >= 3.29 only (plug-in API)
    except ImportError:  # older ASE without the plug-in registry
        return set()
    return {
        CalculatorPlugin(
            "nnpot",
            citation="nnpot: DeePMD-style potentials (se_e2_a: Zhang et al., NeurIPS 2018)",
            implementation="nnpot.potentials.calculator.NNPotCalculator",
        )
    }


def __getattr__(name: str):
    # Built on first access, not at import: ASE imports this module while its own plug-in
    # registry is still being initialised, and an eager import of that registry from here
    # would re-enter it and register nothing.
    global _PLUGINS
    if name == "__ase_plugins__":
        if _PLUGINS is None:
            _PLUGINS = _plugins()
        return _PLUGINS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
