"""The documentation runs: every code block of README.md and docs/*.md, and every docstring example.

A fenced block must say what it is. Each ```` ```python ```` block runs in a fresh interpreter of its
own, top to bottom, in a temporary working directory, as a reader would run it from a file: nothing
another block or this test process loaded (triton, TensorFlow, a registered cell type) is there.
Two visible first lines change that, and the reader sees them too:

* ``# continues the block above``: the block runs after the page's previous ``python`` block (and
  that one's own predecessors, where it continues too), in the same fresh interpreter;
* ``# illustrative: not run``: a deliberately partial block; it is not run, and only a few may say so
  (:data:`MAX_ILLUSTRATIVE`).

Blocks tagged with a language in :data:`NOT_RUN` (shell commands, program output, file contents) are
not run; a block with no tag or another tag fails the test, so nothing is skipped silently. A block
that needs a framework that is not installed is skipped, naming it.

Docstring examples (``>>>``) of every module of the package run through :mod:`doctest`.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import rnn_xframework as xf

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
RUN = frozenset({"python"})
NOT_RUN = frozenset({"bash", "console", "text", "toml", "yaml", "json"})
"""Tags of blocks that are shown, not run: shell commands (``bash``, ``console``), program output
and diagrams (``text``), file contents."""
OPTIONAL = frozenset({"torch", "tensorflow", "keras", "rich", "triton", "matplotlib"})
"""Packages whose absence skips a page or a module instead of failing it."""
CONTINUES = "# continues the block above"
ILLUSTRATIVE = "# illustrative: not run"
MAX_ILLUSTRATIVE = 3
"""At most this many python blocks of all the pages may be marked illustrative (not run)."""
PACKAGE_ROOT = Path(xf.__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page (indented fences, as in lists, included)."""
    found, lines, i = [], page.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        lang = m["info"].strip().split(" ", 1)[0].split("{", 1)[0]
        body, j = [], i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith(fence)
            and set(lines[j].strip()) <= {fence[0]}
            and len(lines[j].strip()) >= len(fence)
        ):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        found.append(Block(page, i + 1, lang, "\n".join(body) + "\n"))
        i = j + 1
    return found


def test_every_block_says_whether_it_runs():
    untagged = [
        f"{b.where()} ({b.lang or 'no tag'})" for page in PAGES for b in blocks(page) if b.lang not in RUN | NOT_RUN
    ]
    assert not untagged, (
        f"tag each code block with one of {sorted(RUN)} (run by this test) or {sorted(NOT_RUN)} (shown only): "
        + ", ".join(untagged)
    )


def missing_optional(error: BaseException) -> str | None:
    """The optional package whose absence caused ``error``, if that is what it is."""
    if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] in OPTIONAL:
        return (error.name or "").split(".")[0]
    if isinstance(error, xf.BackendUnavailableError) and "not installed" in str(error):
        return str(error)
    return None


PYTHON_BLOCKS = [b for page in PAGES for b in blocks(page) if b.lang in RUN]


def first_line(block: Block) -> str:
    return block.code.lstrip("\n").split("\n", 1)[0].strip()


def program(block: Block) -> str:
    """What a reader runs for ``block``: the block, after the blocks it continues."""
    page = [b for b in PYTHON_BLOCKS if b.page == block.page]
    chain = [block]
    i = page.index(block)
    while first_line(chain[0]) == CONTINUES:
        if i == 0:
            raise AssertionError(f"{block.where()} says it continues a block above, but none is")
        i -= 1
        chain.insert(0, page[i])
    return "".join(f"# --- {b.where()}\n{b.code}" for b in chain)


def test_few_blocks_are_illustrative():
    marked = [b.where() for b in PYTHON_BLOCKS if first_line(b).startswith(ILLUSTRATIVE)]
    assert len(marked) <= MAX_ILLUSTRATIVE, f"{len(marked)} blocks are not run: {marked}"
    assert len(PYTHON_BLOCKS) - len(marked) >= 30  # the rest run, each in its own interpreter


MISSING = re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'|BackendUnavailableError: (.*not installed.*)")


@pytest.mark.slow
@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.where() for b in PYTHON_BLOCKS])
def test_block_runs_in_a_fresh_interpreter(block, tmp_path):
    if first_line(block).startswith(ILLUSTRATIVE):
        pytest.skip(f"{block.where()} is marked illustrative (counted by test_few_blocks_are_illustrative)")
    env = {k: v for k, v in os.environ.items() if k not in (xf.config.ENV_VAR, "TRITON_INTERPRET")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-c", program(block)], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    if done.returncode != 0:
        missing = MISSING.search(done.stderr)
        if missing and (missing[1] is None or missing[1].split(".")[0] in OPTIONAL):
            pytest.skip(f"{block.where()} needs {missing[1] or missing[2]}")
    assert done.returncode == 0, f"the code block at {block.where()} failed:\n{done.stderr[-3000:]}"


def package_modules() -> list[str]:
    """Every module of the package except ``__main__`` (importing it runs the command line)."""
    names = ["rnn_xframework"]
    for info in pkgutil.walk_packages(xf.__path__, "rnn_xframework."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


def test_the_package_has_docstring_examples():
    examples = 0
    for name in package_modules():
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        examples += sum(len(t.examples) for t in doctest.DocTestFinder().find(module, name))
    assert examples >= 10, examples


@pytest.mark.parametrize("name", package_modules())
def test_docstring_examples_run(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        missing = missing_optional(error)
        if missing:
            pytest.skip(f"{name} needs {missing}")
        raise
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    if not tests:
        return
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    failed = runner.summarize(verbose=False).failed
    text = "".join(report)
    if failed and all(missing_optional_text(text)):
        pytest.skip(f"{name}: an example needs a framework that is not installed")
    assert failed == 0, text


def missing_optional_text(report: str) -> list[bool]:
    """For each failure in a doctest report: whether it is an optional package's absence."""
    errors = re.findall(r"(ModuleNotFoundError: No module named '([\w.]+)'|BackendUnavailableError: .*)", report)
    return [bool(e[1] and e[1].split(".")[0] in OPTIONAL) or "not installed" in e[0] for e in errors] or [False]


def test_runner_reads_fences_and_tags(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```python\nx = 1\n```\n\n1. item\n\n    ```bash\n    echo hi\n    ```\n```\nuntagged\n```\n")
    got = [(b.line, b.lang, b.code) for b in blocks(page)]
    assert got == [(2, "python", "x = 1\n"), (8, "bash", "echo hi\n"), (11, "", "untagged\n")]


def test_license_file_matches_the_declared_license():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "LICENSE").read_text()
    assert declared["license"] == "Apache-2.0" and declared["license-files"] == ["LICENSE"]
    assert " ".join(text.split()[:4]) == "Apache License Version 2.0," and "END OF TERMS AND CONDITIONS" in text


@pytest.mark.parametrize(
    "name, first",
    [
        ("SimpleRNNCell", ["units", "activation", "use_bias"]),
        ("LSTMCell", ["units", "activation", "recurrent_activation", "use_bias"]),
        ("GRUCell", ["units", "activation", "recurrent_activation", "use_bias"]),
        ("StackedRNNCells", ["cells"]),
        ("RNN", ["cell", "return_sequences", "return_state", "go_backwards", "order"]),
        ("SimpleRNN", ["units", "return_sequences", "return_state", "go_backwards"]),
        ("LSTM", ["units", "return_sequences", "return_state", "go_backwards"]),
        ("GRU", ["units", "return_sequences", "return_state", "go_backwards"]),
    ],
)
def test_public_constructors_have_real_signatures(name, first):
    """``help()``, editors and the API reference see the arguments, not ``(*args, **kwargs)``."""
    import inspect

    params = inspect.signature(getattr(xf.layers, name)).parameters
    assert list(params)[: len(first)] == first
    assert "backend" in params and params["backend"].kind is inspect.Parameter.KEYWORD_ONLY
    assert all(p.kind is not inspect.Parameter.VAR_POSITIONAL for p in params.values())
    named = [p for p in params.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    assert all(p.annotation is not inspect.Parameter.empty for p in named), params
    if name in ("SimpleRNN", "LSTM", "GRU"):  # the cell's arguments, shown on the layer
        assert {"activation", "use_bias", "dropout", "recurrent_dropout", "dtype", "device"} <= set(params)


def test_one_cell_layers_pass_the_cells_arguments_through():
    layer = xf.layers.GRU(3, True, activation="relu", reset_after=False, dropout=0.25, backend="numpy")
    cell = layer.cells[0]
    assert layer.return_sequences and cell.activation == "relu" and not cell.reset_after and cell.dropout == 0.25
    assert isinstance(layer, xf.layers.GRU) and isinstance(cell, xf.layers.GRUCell)
    assert not isinstance(layer, xf.layers.LSTM)
