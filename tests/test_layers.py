"""The house's layers, held over every import of the product's code (those inside functions too): a package imports
only the packages below it, packages side by side never import each other, and no two folders import each other,
directly or around a loop. The layers are written once, in pyproject.toml's [tool.fedge.layers]."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())


def package_dirs() -> dict[str, Path]:
    """Every package of the product and the folder it is in (setuptools' package-dir mapping applied)."""
    mapping = CONFIG["tool"]["setuptools"]["package-dir"]
    out = {}
    for pkg in CONFIG["tool"]["setuptools"]["packages"]:
        base = max((p for p in mapping if pkg == p or pkg.startswith(p + ".")), key=len)
        out[pkg] = ROOT / mapping[base] / Path(*pkg[len(base):].strip(".").split(".")) if pkg != base \
            else ROOT / mapping[base]
    return out


def modules(dirs: dict[str, Path]) -> dict[str, tuple[str, str]]:
    """module name -> (its package, its source)."""
    out = {}
    for pkg, folder in dirs.items():
        for f in sorted(folder.glob("*.py")):
            name = pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"
            out[name] = (pkg, f.read_text())
    return out


def imports(module: str, package: str, source: str) -> list[tuple[int, str]]:
    """(line, absolute module or name imported) for every import statement of a module, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return found


def owner(name: str, packages: list[str]) -> str | None:
    """The innermost package that ``name`` (a module, or a name inside one) belongs to."""
    hits = [p for p in packages if name == p or name.startswith(p + ".")]
    return max(hits, key=len) if hits else None


def rank_of(layers: list[str]) -> dict[str, tuple[int, str]]:
    """package -> (layer index, the package as written in its layer)."""
    return {p.strip(): (i, p.strip()) for i, layer in enumerate(layers) for p in layer.split("|")}


def layer_violations(mods: dict[str, tuple[str, str]], layers: list[str]) -> list[str]:
    ranks = rank_of(layers)
    problems = []
    for module, (package, source) in mods.items():
        mine = owner(package, list(ranks))
        if mine is None:
            continue
        for line, target in imports(module, package, source):
            theirs = owner(target, list(ranks))
            if theirs is None or theirs == mine:
                continue
            (i, _), (j, _) = ranks[mine], ranks[theirs]
            if j > i:
                problems.append(f"{module}:{line} imports {target}: {theirs} is above {mine}")
            elif j == i:
                problems.append(f"{module}:{line} imports {target}: {theirs} stands beside {mine}")
    return problems


def folder_cycles(mods: dict[str, tuple[str, str]]) -> list[list[str]]:
    """The strongly connected sets of more than one folder in the graph of folder -> folders it imports."""
    packages = sorted({p for p, _ in mods.values()})
    edges: dict[str, set[str]] = {p: set() for p in packages}
    for module, (package, source) in mods.items():
        for _, target in imports(module, package, source):
            theirs = owner(target, packages)
            if theirs is not None and theirs != package:
                edges[package].add(theirs)
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for p in packages:
        if p not in index:
            visit(p)
    return out


MODULES = modules(package_dirs())


@pytest.mark.parametrize("which", ["order", "edge_runtime"])
def test_layers_hold(which: str) -> None:
    assert layer_violations(MODULES, CONFIG["tool"]["fedge"]["layers"][which]) == []


def test_no_two_folders_import_each_other() -> None:
    assert folder_cycles(MODULES) == []


def test_every_package_is_in_a_layer() -> None:
    ranks = rank_of(CONFIG["tool"]["fedge"]["layers"]["order"])
    assert [p for p in package_dirs() if p != "fedge" and owner(p, list(ranks)) is None] == []


def test_a_deliberate_violation_is_caught() -> None:
    """The checks fail on code that breaks the layers: the device runtime importing the coordinator, and two
    folders importing each other from inside functions."""
    mods = dict(MODULES)
    mods["fedge.edge_runtime.serving.bad"] = ("fedge.edge_runtime.serving",
                                              "def f():\n    from fedge.server import runs\n")
    mods["fedge.client.bad"] = ("fedge.client", "import fedge.server.registry\n")
    problems = layer_violations(mods, CONFIG["tool"]["fedge"]["layers"]["order"])
    assert problems == ["fedge.edge_runtime.serving.bad:2 imports fedge.server.runs: fedge.server is above"
                        " fedge.edge_runtime",
                        "fedge.client.bad:1 imports fedge.server.registry: fedge.server stands beside fedge.client"]
    mods["fedge.edge_runtime.common.bad"] = ("fedge.edge_runtime.common",
                                             "def g():\n    from ..tools import cli\n")
    assert any({"fedge.edge_runtime.common", "fedge.edge_runtime.tools"} <= set(c) for c in folder_cycles(mods))
