"""Shared fixtures: a ``backend`` fixture over every backend (clean skips when a framework is
missing), the CUDA marker, and framework set-up for two frameworks in one process."""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator

import numpy as np
import pytest

from rnn_xframework import cells, registry
from rnn_xframework.frameworks import load_triton

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# torch set up for correctness tests (any import order of the frameworks works).
if importlib.util.find_spec("torch") is not None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # correctness tests compare in true fp32
    torch.backends.cudnn.allow_tf32 = False
# Triton (installed with the kernel extra) loaded once, before any TensorFlow, the way every
# test process has run; the other orders run in fresh interpreters (test_frameworks.py).
load_triton()

BACKENDS = registry.names()
FRAMEWORK = {name: registry.framework(name) for name in BACKENDS}
# Stated tolerances (max abs difference), per dtype; never tuned per test.
TOL = {"float32": 1e-5, "float64": 1e-12}


def require(name: str) -> None:
    framework = FRAMEWORK[name]
    if framework is not None:
        pytest.importorskip(framework, reason=f"backend {name!r} needs {framework}")


# --- the generated-input campaign (issue 18) ---------------------------------------------------
# Every generated case (a Hypothesis example, or one variant of a generated file) calls
# count_case(category). A failing test adds one to its category's "silent wrong" (an
# AssertionError: a wrong answer, a changed object, an unexpected success) or "raw error" (any
# other exception escaping: not a typed rnn_xframework error where one was expected); a case
# that takes longer than HANG_SECONDS counts as a hang (one that never returns is stopped by CI's
# job timeout). pytest_terminal_summary prints the table.
HANG_SECONDS = 60.0
_CAMPAIGN: dict[str, dict[str, int]] = {}
_CURRENT: dict[str, object] = {"category": None, "started": None}


def _row(category: str) -> dict[str, int]:
    return _CAMPAIGN.setdefault(category, {"cases": 0, "silent wrong": 0, "raw error": 0, "hang": 0})


def _close_case() -> None:
    started, category = _CURRENT["started"], _CURRENT["category"]
    if started is not None and time.monotonic() - started > HANG_SECONDS:  # type: ignore[operator]
        _row(category)["hang"] += 1  # type: ignore[arg-type]
    _CURRENT["started"] = None


def count_case(category: str = "other") -> None:
    """Called once per generated case by the campaign's tests, at the start of the case."""
    _close_case()
    _row(category)["cases"] += 1
    _CURRENT["category"], _CURRENT["started"] = category, time.monotonic()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    yield
    if call.when != "call":
        return
    category = _CURRENT["category"]
    _close_case()
    _CURRENT["category"] = None
    if category is None or call.excinfo is None or call.excinfo.errisinstance(pytest.skip.Exception):
        return
    kind = "silent wrong" if call.excinfo.errisinstance(AssertionError) else "raw error"
    _row(category)[kind] += 1  # type: ignore[arg-type]


def campaign_table() -> list[str]:
    """The campaign's table as Markdown lines (empty when no generated case ran)."""
    if not _CAMPAIGN:
        return []
    cols = ["cases", "silent wrong", "raw error", "hang"]
    lines = ["| category | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    total = dict.fromkeys(cols, 0)
    for category in sorted(_CAMPAIGN):
        row = _CAMPAIGN[category]
        lines.append(f"| {category} | " + " | ".join(f"{row[c]:,}" for c in cols) + " |")
        for c in cols:
            total[c] += row[c]
    lines.append("| **total** | " + " | ".join(f"**{total[c]:,}**" for c in cols) + " |")
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = campaign_table()
    if lines:
        cases = sum(row["cases"] for row in _CAMPAIGN.values())
        terminalreporter.write_sep("=", "generated-input campaign (issue 18)")
        terminalreporter.write_line(f"generated cases: {cases}")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    require(request.param)
    return request.param


@pytest.fixture(params=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def mgu() -> Iterator[cells.CellSpec]:
    """The ``MGUCell`` of tests/plugins/xf_mgu.py, registered through the public
    ``cells.register()`` for one test and unregistered after (other tests see the built-ins only)."""
    from plugins.xf_mgu import MGU

    cells.register(MGU)
    yield MGU
    cells.unregister(MGU.name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda") is not None and not has_cuda:  # a marker, not a path part
            item.add_marker(skip)
