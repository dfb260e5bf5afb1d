"""The package's import graph: no circle, and no import from a lower layer to a higher one.

Every ``import`` in the package counts, at module level or inside a function. Layers, lowest
first: errors; the framework-free core (protocol, layouts, weightfile, weightload, dropout,
registry, config); the cell specs; the device code (kernels); the containers and the compiled base; the backends
(one package per framework); the user API (layers, transfer, compile, ports); the parity suite; whole-model ports
(models) and the package's front door; the tools.

Below the parity suite, a framework is imported only by its own backend package (:data:`FRAMEWORK_HOMES`), and the
Triton device code only by the torch backend's compile package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rnn_xframework

ROOT = Path(rnn_xframework.__file__).parent
PACKAGE = "rnn_xframework"
LAYERS = [
    ["errors"],
    [
        *("protocol", "layouts", "weightfile", "archives", "weightload", "dropout", "frameworks", "registry"),
        *("config", "constructors"),
    ],
    ["cells"],
    ["kernels"],
    ["compiled", "orderings", "bidirectional"],
    ["backends"],
    ["layers", "transfer", "compile", "ports"],
    ["parity"],
    ["models", ""],  # whole-model ports; "": the package's front door, rnn_xframework/__init__.py
    ["testing", "cli", "bench", "__main__"],
]


FRAMEWORK_HOMES = {
    "torch": ("backends.torch",),
    "tensorflow": ("backends.tensorflow",),
    # Keras 3 runs on several frameworks; the Keras port reads Keras objects whichever one runs it
    "keras": ("backends.tensorflow", "backends.keras_port"),
    "triton": ("kernels.triton", "backends.torch.compile.triton"),
}
"""Where each framework may be imported, below the parity suite (whose trainers and the tools above it
measure the frameworks themselves)."""
TRITON_KERNELS = "kernels.triton"
TRITON_KERNEL_USERS = ("kernels.triton", "backends.torch.compile")


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


def frameworks_of(path: Path) -> set[str]:
    """The frameworks (:data:`FRAMEWORK_HOMES`' keys) a module imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found & set(FRAMEWORK_HOMES)


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether module ``name`` is one of ``prefixes`` (paths below the package) or inside one of them."""
    return any(name == f"{PACKAGE}.{p}" or name.startswith(f"{PACKAGE}.{p}.") for p in prefixes)


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


def test_only_a_frameworks_backend_package_imports_it():
    parity = next(i for i, layer in enumerate(LAYERS) if "parity" in layer)
    stray = sorted(
        f"{name} imports {framework}"
        for name, path in MODULES.items()
        if layer_of(name) < parity
        for framework in frameworks_of(path)
        if not within(name, FRAMEWORK_HOMES[framework])
    )
    assert stray == []
    assert frameworks_of(MODULES[f"{PACKAGE}.backends.torch"]) == {"torch"}  # the checker sees imports
    assert "triton" in frameworks_of(MODULES[f"{PACKAGE}.kernels.triton.common"])


def test_triton_kernels_are_imported_only_by_the_torch_compile_package():
    users = sorted(
        f"{a} imports {b}"
        for a, targets in GRAPH.items()
        for b in targets
        if within(b, (TRITON_KERNELS,)) and not within(a, TRITON_KERNEL_USERS)
    )
    assert users == []
    assert f"{PACKAGE}.kernels.triton.persistent" in GRAPH[f"{PACKAGE}.backends.torch.compile.triton"]


def test_one_package_per_framework_the_same_shape_in_each():
    """``backends/`` holds the NumPy reference, one package per framework, each with ``__init__`` (the backend class)
    and a ``compile`` subpackage, and the Keras port (Keras-level: it runs on whichever framework Keras runs on)."""
    flat = sorted(n for n in MODULES if n.count(".") == 2 and n.startswith(f"{PACKAGE}.backends."))
    assert flat == [f"{PACKAGE}.backends.{n}" for n in ("keras_port", "numpy", "tensorflow", "torch")]
    for framework in ("torch", "tensorflow"):
        package = f"{PACKAGE}.backends.{framework}"
        assert MODULES[package].name == "__init__.py" and MODULES[f"{package}.compile"].name == "__init__.py"


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


@pytest.mark.parametrize("name", ["rnn_xframework.layouts", "rnn_xframework.orderings"])
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


def test_no_module_name_is_used_twice():
    """A module's file name says what it is, once in the package (``loops.py`` three times and
    ``compiled.py`` twice made a reader guess which one a traceback meant)."""
    stems: dict[str, list[str]] = {}
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            stems.setdefault(path.stem, []).append(name)
    assert {s: names for s, names in stems.items() if len(names) > 1} == {}


TORCH_PER_TYPE = frozenset(
    {"RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell"}
)
"""PyTorch's per-cell-type classes and ATen kernels: named in code only by the torch backend's table."""
KINDS_TABLE = f"{PACKAGE}.backends.torch.kinds"


def torch_per_type_names(path: Path) -> set[str]:
    """The ``nn.LSTM`` / ``torch.lstm_cell`` / ``torch.nn.GRUCell`` references in a module's code
    (docstrings and messages are text, not code, and do not count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in TORCH_PER_TYPE:
            base = node.value
            owner = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
            if owner in ("nn", "torch"):
                found.add(f"{owner}.{node.attr}")
    return found


def test_per_type_torch_facts_live_only_in_the_kinds_table():
    """Which ``torch.nn`` cell, multi-layer module, ATen step, scripted layer and Triton code
    serve a cell type is one row of ``backends/torch/kinds.py``; every library path (eager cell,
    ports, compiled loops, kernels' host code, whole-model emitter) reads it. The benchmark and
    the parity trainers, which measure PyTorch itself, may name its classes."""
    parity = next(i for i, layer in enumerate(LAYERS) if "parity" in layer)
    stray = sorted(
        f"{name}: {ref}"
        for name, path in MODULES.items()
        if name != KINDS_TABLE and (layer_of(name) < parity or within(name, ("models",)))
        for ref in torch_per_type_names(path)
    )
    assert stray == []
    assert torch_per_type_names(MODULES[KINDS_TABLE]) >= {"nn.LSTMCell", "nn.GRU", "torch.lstm_cell"}
    assert torch_per_type_names(_tmp("import torch\nc = torch.nn.GRUCell(1, 2)\n")) == {"nn.GRUCell"}


def test_the_slow_lists_name_files_and_tests_that_exist():
    """Every entry of tests/conftest.py's SLOW_FILES and SLOW_TESTS (what ``pytest -m "not slow"``
    leaves out) names a test file, or a test function in one: a rename cannot leave a stale entry
    and silently put a slow test back into the quick subset."""
    from conftest import SLOW_FILES, SLOW_TESTS

    repo = ROOT.parent
    missing = [f for f in SLOW_FILES if not (repo / f).is_file()]
    for entry in SLOW_TESTS:
        path, name = entry.split("::")
        if not (repo / path).is_file() or f"def {name}(" not in (repo / path).read_text():
            missing.append(entry)
    assert missing == []


MAX_LINES = 400


def test_no_module_is_over_400_lines():
    """A module is one idea a reader can hold: past 400 lines it is split along a real seam
    (``archives`` out of ``weightload``, ``keras_cells`` out of the TensorFlow backend, ...)."""
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
