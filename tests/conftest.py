"""Shared fixtures: a ``backend`` fixture over every backend (clean skips when a framework is
missing), the CUDA marker, and framework set-up for two frameworks in one process."""

from __future__ import annotations

import importlib.util
import os
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


_HYPOTHESIS_CASES = [0]


def count_case() -> None:
    """Called once per generated example by the property tests (tests/test_properties.py)."""
    _HYPOTHESIS_CASES[0] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _HYPOTHESIS_CASES[0]:
        terminalreporter.write_line(f"hypothesis cases: {_HYPOTHESIS_CASES[0]}")


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
