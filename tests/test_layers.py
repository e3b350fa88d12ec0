"""The house's layers, held over every import of the product's code (those inside functions too): a package imports
only the packages below it, packages side by side never import each other, and no two folders import each other,
directly or around a loop. The layers are written once, in pyproject.toml's [tool.fedge.layers], one list per level
(the product's packages, then the packages inside each package that has any); the packages are found on disk, so a
new folder that no list names fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())


def package_dirs() -> dict[str, Path]:
    """Every package of the product and the folder it is in (setuptools' package-dir mapping applied)."""
    mapping = CONFIG["tool"]["setuptools"]["package-dir"]
    out = {}
    for pkg in CONFIG["tool"]["setuptools"]["packages"]:
        base = max((p for p in mapping if pkg == p or pkg.startswith(p + ".")), key=len)
        out[pkg] = (
            ROOT / mapping[base] / Path(*pkg[len(base) :].strip(".").split("."))
            if pkg != base
            else ROOT / mapping[base]
        )
    return out


def packages_on_disk() -> dict[str, Path]:
    """Every folder of Python modules under the product's roots, named as it installs: what the layers must cover,
    whether or not pyproject.toml lists it yet."""
    mapping = CONFIG["tool"]["setuptools"]["package-dir"]
    roots = {ROOT / folder: pkg for pkg, folder in mapping.items()}
    out = {}
    for folder, pkg in roots.items():
        for sub in [folder, *sorted(d for d in folder.rglob("*") if d.is_dir())]:
            if "__pycache__" in sub.parts or not any(sub.glob("*.py")):
                continue
            rel = sub.relative_to(folder).parts
            if any(ROOT / Path(folder.relative_to(ROOT), *rel[: i + 1]) in roots for i in range(len(rel))):
                continue  # inside another root (none today; kept so that the roots may nest)
            out[".".join((pkg, *rel))] = sub
    return out


def levels() -> dict[str, list[str]]:
    """package -> the layers of the packages directly inside it ("fedge" -> the product's order)."""
    cfg = CONFIG["tool"]["fedge"]["layers"]
    return {("fedge" if key == "order" else key): layers for key, layers in cfg.items()}


def unlisted(packages: list[str], levels: dict[str, list[str]]) -> list[str]:
    """Packages missing from the layer list of the package they are in (every level is checked)."""
    problems = []
    for pkg in sorted(packages):
        if pkg == "fedge":
            continue
        parent = pkg.rsplit(".", 1)[0]
        if parent not in levels:
            problems.append(f'{pkg}: its package {parent} has no layer list ([tool.fedge.layers]."{parent}")')
        elif pkg not in rank_of(levels[parent]):
            problems.append(f'{pkg}: missing from [tool.fedge.layers]."{parent}"')
    return problems


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


MODULES = modules(packages_on_disk())


@pytest.mark.parametrize("level", sorted(levels()))
def test_layers_hold(level: str) -> None:
    assert layer_violations(MODULES, levels()[level]) == []


def test_no_two_folders_import_each_other() -> None:
    assert folder_cycles(MODULES) == []


def test_every_package_is_in_a_layer() -> None:
    assert unlisted(list(packages_on_disk()), levels()) == []


def test_every_package_installs() -> None:
    """A folder of modules that pyproject.toml does not list would be missing from the wheel."""
    assert sorted(set(packages_on_disk()) - set(package_dirs())) == []


def test_a_deliberate_violation_is_caught() -> None:
    """The checks fail on code that breaks the layers: the device runtime importing the coordinator, and two
    folders importing each other from inside functions."""
    mods = dict(MODULES)
    mods["fedge.edge_runtime.serving.bad"] = (
        "fedge.edge_runtime.serving",
        "def f():\n    from fedge.server import runs\n",
    )
    mods["fedge.client.bad"] = ("fedge.client", "import fedge.server.registry\n")
    problems = layer_violations(mods, CONFIG["tool"]["fedge"]["layers"]["order"])
    assert problems == [
        "fedge.edge_runtime.serving.bad:2 imports fedge.server.runs: fedge.server is above fedge.edge_runtime",
        "fedge.client.bad:1 imports fedge.server.registry: fedge.server stands beside fedge.client",
    ]
    mods["fedge.edge_runtime.common.bad"] = ("fedge.edge_runtime.common", "def g():\n    from ..tools import cli\n")
    assert any({"fedge.edge_runtime.common", "fedge.edge_runtime.tools"} <= set(c) for c in folder_cycles(mods))


def test_a_new_unlisted_package_is_caught() -> None:
    """A new inner package that no layer list names fails, at any level; once listed, its upward imports are
    reported like any other."""
    lv = levels()
    new = ["fedge.edge_runtime.canary", "fedge.core.tasks.vision", "fedge.cli.plugins.extra"]
    assert unlisted([*packages_on_disk(), *new], lv) == [
        'fedge.cli.plugins.extra: its package fedge.cli.plugins has no layer list ([tool.fedge.layers]."fedge.cli'
        '.plugins")',
        'fedge.core.tasks.vision: its package fedge.core.tasks has no layer list ([tool.fedge.layers]."fedge.core'
        '.tasks")',
        'fedge.edge_runtime.canary: missing from [tool.fedge.layers]."fedge.edge_runtime"',
    ]
    mods = dict(MODULES)
    mods["fedge.edge_runtime.canary.drift"] = (
        "fedge.edge_runtime.canary",
        "from fedge.edge_runtime.tools import cli\n",
    )
    listed = [*lv["fedge.edge_runtime"][:3], "fedge.edge_runtime.canary", *lv["fedge.edge_runtime"][3:]]
    assert layer_violations(mods, listed) == [
        "fedge.edge_runtime.canary.drift:1 imports fedge.edge_runtime.tools.cli: fedge.edge_runtime.tools is"
        " above fedge.edge_runtime.canary"
    ]
