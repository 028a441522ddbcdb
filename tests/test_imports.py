"""The import graph of the library: no cycle (function-level imports counted too), layers that
only import downwards, and function-level imports only where a comment says why."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what each layer must never import (CONTRIBUTING.md, "Layout")
FORBIDDEN = {
    "nnpot.data": ("nnpot.potentials", "nnpot.training", "nnpot.md", "nnpot.interop", "nnpot.explore",
                   "nnpot.approx", "nnpot.lammps", "nnpot.cli"),
    "nnpot.potentials": ("nnpot.training", "nnpot.md", "nnpot.interop", "nnpot.explore", "nnpot.approx",
                         "nnpot.lammps", "nnpot.cli"),
    "nnpot.training": ("nnpot.md", "nnpot.interop", "nnpot.explore", "nnpot.approx", "nnpot.lammps", "nnpot.cli"),
    "nnpot.md": ("nnpot.training", "nnpot.interop", "nnpot.explore", "nnpot.approx", "nnpot.lammps", "nnpot.cli"),
    "nnpot.interop": ("nnpot.training", "nnpot.md", "nnpot.explore", "nnpot.approx", "nnpot.lammps", "nnpot.cli"),
}
LAZY_ALLOWED = {"nnpot.cli"}  # its docstring says why: `nnpot --help` without torch


def _modules() -> dict[str, Path]:
    dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    out = {}
    for pkg, folder in dirs.items():
        for path in (ROOT / folder).rglob("*.py"):
            rest = path.relative_to(ROOT / folder).with_suffix("").as_posix().replace("/", ".")
            name = pkg if rest == "__init__" else f"{pkg}.{rest.removesuffix('.__init__')}"
            out[name] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> list[tuple[str, ast.stmt, bool]]:
    """``(imported module, statement, inside a function)`` for every import outside
    ``if TYPE_CHECKING`` blocks."""
    tree = ast.parse(MODULES[module].read_text())
    skip, in_function = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            names = [a.name for a in node.names]
        for target in {_resolve(n) for n in names if n and n.startswith("nnpot")} - {None, module}:
            if not (module.startswith(target + ".") and target in names):  # a parent package's own name
                found.append((target, node, id(node) in in_function))
        if not any(n.startswith("nnpot") for n in names if n):
            found.append((names[0], node, id(node) in in_function))
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_mapping_finds_the_library():
    assert {"nnpot.cli", "nnpot.potentials.evaluator", "nnpot.training.trainer", "nnpot.md.driver"} <= set(MODULES)


def test_no_import_cycle_counting_function_level_imports():
    graph = {m: {t for t, _, _ in _imports(m) if t in MODULES} for m in MODULES}
    assert _cycles(graph) == []


def test_the_cycle_check_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downwards(layer):
    bad = [(m, t) for m in MODULES if m == layer or m.startswith(layer + ".")
           for t, _, _ in _imports(m) if t.startswith(FORBIDDEN[layer]) or t == "nnpot"]
    assert bad == []


def test_function_level_imports_say_why():
    """Outside the CLI, an import inside a function carries a ``lazy:`` comment (an optional
    dependency or start-up time); everything else is imported at the top of its module."""
    unexplained = []
    for m in sorted(set(MODULES) - LAZY_ALLOWED):
        lines = MODULES[m].read_text().splitlines()
        for _, node, in_function in _imports(m):
            if in_function and "lazy:" not in lines[node.end_lineno - 1]:
                unexplained.append(f"{MODULES[m].relative_to(ROOT)}:{node.lineno}")
    assert sorted(set(unexplained)) == []
