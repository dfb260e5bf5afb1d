"""The package's import graph: no circle, and no import from a lower layer to a higher one.

Every ``import`` in the package counts, at module level or inside a function. Layers, lowest
first: errors; the framework-free core (protocol, layouts, weightfile, weightload, dropout,
registry, config); the cell specs; the containers and the compiled base; the backends; the user API (layers, transfer,
compile, ports); the parity suite; whole-model ports and the package's front door; the tools."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rnn_xframework

ROOT = Path(rnn_xframework.__file__).parent
PACKAGE = "rnn_xframework"
LAYERS = [
    ["errors"],
    ["protocol", "layouts", "weightfile", "weightload", "dropout", "frameworks", "registry", "config"],
    ["cells"],
    ["compiled", "loops"],
    ["backends"],
    ["layers", "transfer", "compile", "ports"],
    ["parity"],
    ["models", ""],  # whole-model ports; "": the package's front door, rnn_xframework/__init__.py
    ["testing", "cli", "bench", "__main__"],
]


def module_names() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        out[".".join((PACKAGE, *parts))] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports (``from a import b`` counts ``a.b`` when it is a module)."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def layer_of(name: str) -> int:
    rest = name[len(PACKAGE) + 1 :] if name != PACKAGE else ""
    top = rest.split(".", 1)[0]
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


MODULES = module_names()
GRAPH = {name: imports_of(name, path, MODULES) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    for name in MODULES:
        layer_of(name)  # raises StopIteration for a module no layer names


def test_no_import_from_a_lower_layer_to_a_higher_one():
    upward = sorted(
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, targets in GRAPH.items()
        for b in targets
        if layer_of(b) > layer_of(a)
    )
    assert upward == []


def test_no_import_circle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert circles == []


@pytest.mark.parametrize("name", ["rnn_xframework.layouts", "rnn_xframework.loops"])
def test_the_checker_sees_function_level_imports(name):
    """The graph holds imports made inside functions too (the kind that hid the old circles)."""
    source = "def f():\n    from rnn_xframework import transfer\n"
    tree_imports = imports_of(name, _tmp(source), MODULES)
    assert tree_imports == {"rnn_xframework.transfer"}


def _tmp(source: str) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "m.py"
    path.write_text(source)
    return path
