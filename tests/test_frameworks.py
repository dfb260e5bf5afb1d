"""TensorFlow and PyTorch (with its triton) in one process: the library loads them in an order
that works, and says so with a typed error where the order is already wrong
(:mod:`rnn_xframework.frameworks`). The end-to-end cases run in fresh subprocesses: the bad
order aborts a process, and each case needs a process whose imports it controls."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import types

import pytest

from rnn_xframework import frameworks
from rnn_xframework.errors import BackendUnavailableError, FrameworkOrderError

ALL_THREE = all(importlib.util.find_spec(m) is not None for m in ("torch", "tensorflow", "triton"))
needs_all_three = pytest.mark.skipif(not ALL_THREE, reason="needs torch, tensorflow and triton installed")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, env=env
    )


@needs_all_three
def test_issue_port_runs_with_triton_installed() -> None:
    """The three-line port of issue 9: TF cell, torch cell, torch optimizer. It aborted
    ('LLVM ERROR: inconsistency in registered CommandLine options', exit -6) before the
    library imported triton ahead of TensorFlow."""
    done = _run(
        """
        import torch
        from rnn_xframework import layers
        tf_cell = layers.SimpleRNNCell(8, backend="tensorflow")
        torch_cell = layers.SimpleRNNCell(8, backend="torch")
        torch_cell.build((None, 4))
        torch.optim.SGD(torch_cell.parameters(), lr=0.5)
        import sys
        print("ok", "triton" in sys.modules)
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ok", "True"]


@needs_all_three
def test_tensorflow_loaded_first_gives_typed_error_not_abort() -> None:
    done = _run(
        """
        import tensorflow
        from rnn_xframework import layers
        from rnn_xframework.errors import FrameworkOrderError
        try:
            layers.SimpleRNNCell(8, backend="torch")
        except FrameworkOrderError as e:
            print("typed", "import triton before TensorFlow" in str(e))
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["typed", "True"]


@needs_all_three
def test_blocking_triton_is_the_documented_way_out() -> None:
    """The error's last fix: a process that never needs triton blocks it; torch runs without it."""
    done = _run(
        """
        import sys
        import tensorflow
        sys.modules["triton"] = None
        import torch
        from rnn_xframework import layers
        cell = layers.SimpleRNNCell(8, backend="torch")
        cell.build((None, 4))
        torch.optim.SGD(cell.parameters(), lr=0.5)
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ok"]


def test_order_rules_without_frameworks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision itself, on a faked ``sys.modules``: no framework is loaded or unloaded."""
    fake = types.ModuleType("tensorflow")
    monkeypatch.setattr(frameworks, "triton_installed", lambda: True)
    monkeypatch.delitem(sys.modules, "triton", raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert not frameworks.bad_order()
    frameworks.check_torch_order()  # no TensorFlow: fine
    monkeypatch.setitem(sys.modules, "tensorflow", fake)
    assert frameworks.bad_order()
    with pytest.raises(FrameworkOrderError, match="import triton before TensorFlow") as info:
        frameworks.check_torch_order()
    assert isinstance(info.value, BackendUnavailableError)
    assert frameworks.import_triton_first() is False  # never imports triton after TensorFlow
    assert "triton" not in sys.modules
    monkeypatch.setitem(sys.modules, "triton", None)  # blocked on purpose: a decided order
    assert not frameworks.bad_order()
    monkeypatch.setattr(frameworks, "triton_installed", lambda: False)
    monkeypatch.delitem(sys.modules, "triton")
    assert not frameworks.bad_order()  # no triton: any order works
