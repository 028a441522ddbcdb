"""Labelling structures with a reference method through any ASE calculator.

Built in: ``emt`` (ASE's effective-medium theory: milliseconds, for workflows and tests, not for
chemistry), ``tblite`` (GFN2-xTB, ``pip install tblite``; molecules and periodic cells) and
``pyscf`` (DFT for molecules, ``pip install pyscf``). Any other ASE calculator is named by its
import path, ``"ase.calculators.vasp:Vasp"`` or ``"mypackage.calc:MyCalc"``, with keyword
arguments in ``settings``: VASP, CP2K or Quantum ESPRESSO through ASE on a cluster work the same.

A frame whose calculation fails (SCF not converged, a crash, non-finite results) is skipped and
its error recorded; the other frames are labelled.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import voigt_6_to_full_3x3_stress
from ase.units import Bohr, Hartree

from nnpot.data.frame import Frame
from nnpot.errors import ConfigError

__all__ = ["Labeller", "LabelResult", "BUILTIN", "register_labeller", "PySCFCalculator"]

#: labeller names -> the ASE calculator class, or its import path "module:Class" (imported on
#: first use). Adding a labeller is one calculator class and one :func:`register_labeller` line.
BUILTIN: dict[str, str | type] = {
    "emt": "ase.calculators.emt:EMT",
    "tblite": "tblite.ase:TBLite",
    "pyscf": "nnpot.explore.labelling:PySCFCalculator",
}


def register_labeller(name: str, calculator: str | type) -> None:
    """Make ``labeller: {name: ...}`` label with ``calculator`` (an ASE calculator class or its
    import path)."""
    BUILTIN[name] = calculator


@dataclass
class LabelResult:
    """A labelled frame, or why it could not be labelled."""

    frame: Frame | None
    error: str | None = None


@dataclass
class Labeller:
    """A reference method: ``name`` (built in, or ``module:Class``) and its keyword ``settings``."""

    name: str = "emt"
    settings: dict[str, Any] = field(default_factory=dict)

    def factory(self) -> Callable[[], Calculator]:
        target = BUILTIN.get(self.name, self.name)
        path = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
        calc_class = target if isinstance(target, type) else self._import(path)

        unknown = _unknown_settings(calc_class, self.settings) if self.name in BUILTIN else []
        if unknown:  # a third-party calculator's accepted keywords cannot be known from outside
            raise ConfigError(f"labeller {self.name!r}: unknown setting(s) {', '.join(unknown)} for {path}")

        def make() -> Calculator:
            try:
                return calc_class(**self.settings)
            except TypeError as exc:  # unknown or missing settings
                raise ConfigError(f"labeller {self.name!r}: bad settings {self.settings}: {exc}") from None
            except (Exception, SystemExit) as exc:  # noqa: BLE001  (a third-party constructor)
                raise ConfigError(f"labeller {self.name!r}: its calculator could not be made: "
                                  f"{type(exc).__name__}: {_first_line(exc)}") from None

        return make

    def _import(self, path: str) -> type:
        module, _, cls = path.partition(":")
        if not cls:
            raise ConfigError(f"labeller {self.name!r}: give a built-in name ({', '.join(BUILTIN)}) or an import "
                              "path module:Class of an ASE calculator")
        try:
            return getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as exc:
            hint = f" (pip install {module.split('.')[0]})" if self.name in BUILTIN else ""
            raise ConfigError(f"labeller {self.name!r}: cannot import {path}{hint}: {exc}") from None

    def describe(self) -> dict[str, Any]:
        """Provenance: the labeller and its settings."""
        target = BUILTIN.get(self.name, self.name)
        calculator = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
        return {"labeller": self.name, "calculator": calculator, "settings": self.settings}

    def label(self, atoms: Atoms, calc: Calculator | None = None) -> LabelResult:
        """Energy and forces (and the stress of periodic cells, when the calculator gives it)."""
        calc = calc or self.factory()()
        work = atoms.copy()
        work.calc = calc
        try:
            energy = float(work.get_potential_energy())
            forces = np.array(work.get_forces(), dtype=np.float64)
            virial = None
            if work.pbc.all() and "stress" in getattr(calc, "implemented_properties", ()):
                virial = -voigt_6_to_full_3x3_stress(work.get_stress()) * work.get_volume()
        except (Exception, SystemExit) as exc:  # noqa: BLE001  (any failure of the reference code, sys.exit too)
            return LabelResult(None, f"{type(exc).__name__}: {_first_line(exc)}"[:300])
        if forces.shape != (len(atoms), 3) or (virial is not None and np.shape(virial) != (3, 3)):
            return LabelResult(None, f"the calculator returned forces of shape {forces.shape} for {len(atoms)} atoms")
        if not (np.isfinite(energy) and np.isfinite(forces).all()):
            return LabelResult(None, "non-finite energy or forces")
        return LabelResult(Frame(numbers=atoms.numbers.copy(), positions=atoms.positions.copy(),
                                 cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy(), energy=energy, forces=forces,
                                 virial=virial))

    def label_all(self, images: Sequence[Atoms]) -> list[LabelResult]:
        """Every image labelled, or each recorded as failed when the calculator cannot be made."""
        try:
            calc = self.factory()()
        except ConfigError as exc:
            return [LabelResult(None, str(exc)[:300]) for _ in images]
        return [self.label(a, calc) for a in images]


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""


def _unknown_settings(calc_class: type, settings: dict[str, Any]) -> list[str]:
    """Settings a calculator class would not use: not a named argument of its constructor and,
    when it takes ``**kwargs`` as ASE's calculators do, not one of its ``default_parameters``
    (ASE stores unknown keywords silently)."""
    try:
        params = inspect.signature(calc_class.__init__).parameters
    except (TypeError, ValueError):
        return []
    named = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
    defaults = getattr(calc_class, "default_parameters", None)
    if takes_kwargs and not defaults:
        return []  # nothing to check against
    known = named | set(defaults or ()) | {"label", "directory", "atoms", "command", "restart", "ignore_bad_restart_file"}
    return sorted(k for k in settings if k not in known)


class PySCFCalculator(Calculator):
    """Kohn-Sham DFT for molecules with PySCF: energy and analytic forces (eV, eV/A).

    Args:
        xc: exchange-correlation functional (PySCF's names), default PBE.
        basis: basis set, default def2-SVP.
        charge, spin: total charge and 2S.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, xc: str = "PBE", basis: str = "def2-svp", charge: int = 0, spin: int = 0, **kwargs):
        if importlib.util.find_spec("pyscf") is None:
            raise ConfigError("the pyscf labeller needs PySCF: pip install pyscf (or nnpot[label])")
        super().__init__(**kwargs)
        self.xc, self.basis, self.charge, self.spin = xc, basis, charge, spin

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        from pyscf import dft, gto  # lazy: optional dependency (the label extra)

        super().calculate(atoms, properties, system_changes)
        if self.atoms.pbc.any():
            raise ConfigError("the pyscf labeller is for molecules (pbc False); use tblite or a periodic code")
        mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(self.atoms.get_chemical_symbols(), self.atoms.positions)],
                    unit="Angstrom", basis=self.basis, charge=self.charge, spin=self.spin, verbose=0)
        mf = (dft.RKS if self.spin == 0 else dft.UKS)(mol)
        mf.xc = self.xc
        energy = mf.kernel()
        if not mf.converged:
            raise RuntimeError("SCF did not converge")
        gradient = mf.nuc_grad_method().kernel()
        self.results = {"energy": energy * Hartree, "forces": -gradient * Hartree / Bohr}
