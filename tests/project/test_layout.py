"""The layering of the code base: imports point one way, pruning <- core <- zoo <- eval <- command line.

Modules are named as installed: the folders pruning/ and eval/ are the packages ``specvlm_pruning`` and
``specvlm_eval`` (pyproject.toml's package-dir), so ``eval/bench/pair.py`` is ``specvlm_eval.bench.pair``.
Read from the source (every ``import`` statement, those inside functions included; ``if TYPE_CHECKING:``
blocks are annotations only and are skipped), so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: folder -> installed package name (pyproject.toml's package-dir; a folder not there installs under its own name)
INSTALLED = {folder: name for name, folder in
             tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].items()}
PACKAGES = ("pruning", "specvlm", "eval")  # the folders


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = INSTALLED.get(parts[0], parts[0])
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to (a module, else its nearest package), or None if external."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()

    def visit(node):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                # `from pkg import sub` imports the submodule pkg.sub when there is one
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {r for r in (_resolve(name) for name in out) if r is not None and r != module}


GRAPH = {module: _imports(module) for module in MODULES}


def _layer(module: str) -> str:
    top = module.split(".")[0]
    if top == "specvlm_pruning":
        return "pruning"
    if module in ("specvlm.cli", "specvlm_eval.cli", "specvlm_eval.__main__"):  # the command lines (they share their error handling)
        return "cli"
    if top == "specvlm_eval":
        return "eval"
    if module == "specvlm.zoo" or module.startswith("specvlm.zoo."):
        return "zoo"
    assert top == "specvlm", module
    return "core"


# which layers each layer may import (its own included)
ALLOWED = {
    "pruning": {"pruning"},
    "core": {"pruning", "core"},
    "zoo": {"pruning", "core", "zoo"},
    "eval": {"pruning", "core", "zoo", "eval"},
    "cli": {"pruning", "core", "zoo", "eval", "cli"},
}


def test_the_graph_sees_every_package():
    assert {"specvlm_pruning", "specvlm", "specvlm.cli", "specvlm.zoo", "specvlm_eval", "specvlm_eval.bench"} <= set(MODULES)
    assert MODULES["specvlm_eval.bench.pair"] == ROOT / "eval" / "bench" / "pair.py"  # files named as installed
    assert not {m for m in MODULES if m.split(".")[0] in ("eval", "pruning")}
    assert "specvlm_pruning.budget" in GRAPH["specvlm.config"]  # imports of the installed names resolve
    assert "specvlm.decoding.loop" in GRAPH["specvlm.engine"]  # the resolver follows absolute imports


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_one_way(module):
    layer = _layer(module)
    bad = sorted(dep for dep in GRAPH[module] if _layer(dep) not in ALLOWED[layer])
    assert not bad, f"{module} ({layer}) imports {bad}; {layer} may import only {sorted(ALLOWED[layer])}"


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []
    cycles = []

    def visit(module):
        state[module] = 1
        stack.append(module)
        for dep in sorted(GRAPH[module]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    # every cycle counts, those through a package's own __init__ too: a submodule importing its package while
    # the package's __init__ imports the submodule runs against a half-initialised package
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_can_fail():
    """The checker finds a cycle when there is one (guards against a check that cannot fail)."""
    saved = {m: set(d) for m, d in GRAPH.items()}
    try:
        GRAPH["specvlm.decoding.verify"].add("specvlm.decoding.loop")  # loop -> verify -> loop
        with pytest.raises(AssertionError, match="import cycles"):
            test_no_import_cycles()
        GRAPH.clear()
        GRAPH.update({m: set(d) for m, d in saved.items()})
        # a module importing its own package (specvlm.attention's __init__ imports kernels)
        assert "specvlm.attention.kernels" in GRAPH["specvlm.attention"]
        GRAPH["specvlm.attention.kernels"].add("specvlm.attention")
        with pytest.raises(AssertionError, match=r"specvlm\.attention -> .*specvlm\.attention\.kernels -> specvlm\.attention"):
            test_no_import_cycles()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
