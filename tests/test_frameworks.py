"""TensorFlow and PyTorch (with its triton) in one process, in any import order: the library
loads triton first where it can and with RTLD_DEEPBIND after TensorFlow, and says so with a typed
error where neither works (:mod:`rnn_xframework.frameworks`). The end-to-end cases run in fresh
subprocesses: a wrong load aborts a process, and each case needs a process whose imports it
controls. The failures that need another platform or a broken triton are simulated."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import textwrap
import types
from pathlib import Path

import pytest

import rnn_xframework
from rnn_xframework import frameworks
from rnn_xframework.errors import BackendUnavailableError, FrameworkOrderError

ALL_THREE = all(importlib.util.find_spec(m) is not None for m in ("torch", "tensorflow", "triton"))
needs_all_three = pytest.mark.skipif(not ALL_THREE, reason="needs torch, tensorflow and triton installed")


PACKAGE_ROOT = str(Path(rnn_xframework.__file__).resolve().parents[1])


def _run(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter that imports the package under test (PYTHONPATH passed
    through, the package's tree first), from a neutral working directory."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tempfile.gettempdir(),
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


CELL_AND_OPTIMIZER = """
from rnn_xframework import layers
cell = layers.LSTMCell(4, backend="torch", input_shape=(None, 3))
torch.optim.SGD(cell.parameters(), lr=0.1).step()
y, _ = cell(torch.ones(2, 3), [torch.zeros(2, 4), torch.zeros(2, 4)])
print("ok", tuple(y.shape))
"""


@needs_all_three
@pytest.mark.parametrize(
    "first",
    [
        "import tensorflow\nimport torch",  # TF -> torch -> library
        "import tensorflow, torch",  # the lead's stop hook, word for word
        "import torch\nimport tensorflow",  # torch -> TF -> library -> user optimizer
        "import keras\nimport torch",  # Keras (on TensorFlow) -> library
    ],
    ids=["tf-torch-lib", "tf,torch-lib", "torch-tf-lib", "keras-torch-lib"],
)
def test_any_import_order_works(first: str) -> None:
    """TensorFlow loaded before triton: the library loads triton with RTLD_DEEPBIND at import, so
    its torch cells and the user's own torch.optim run. On the old code each case raised
    FrameworkOrderError (or, for the user's optimizer, aborted the process)."""
    done = _run(first + "\n" + CELL_AND_OPTIMIZER)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ok", "(2,", "4)"]


@needs_all_three
def test_keras_layers_then_library_torch_cells() -> None:
    """Keras first, then the library's TensorFlow and torch cells side by side, and a weight
    transfer between them (no torch import of the user's own)."""
    done = _run(
        """
        import keras
        import numpy as np
        import rnn_xframework as xf
        from rnn_xframework import layers
        k = layers.GRUCell(3, backend="tensorflow")
        k.build((None, 2))
        t = layers.GRUCell(3, backend="torch")
        t.build((None, 2))
        xf.transfer_weights(k, t)
        x = np.ones((1, 2), "float32")
        yk = keras.ops.convert_to_numpy(k(x, [np.zeros((1, 3), "float32")])[0])
        import torch
        yt = t(torch.from_numpy(x), [torch.zeros(1, 3)])[0].detach().numpy()
        print("same", float(np.abs(yk - yt).max()) < 1e-5)
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["same", "True"]


@needs_all_three
def test_library_first_then_tensorflow_then_torch_cells() -> None:
    """rnn_xframework imported before TensorFlow (its import guard had nothing to do): the
    torch backend loads triton with RTLD_DEEPBIND when it is first asked for."""
    first = """
        import rnn_xframework
        import tensorflow
        import sys
        print("before", "triton" in sys.modules)
        import torch
        """
    done = _run(textwrap.dedent(first) + CELL_AND_OPTIMIZER)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["before", "False", "ok", "(2,", "4)"]


@needs_all_three
def test_tensorflow_first_xla_and_torchscript_in_one_process() -> None:
    done = _run(
        """
        import numpy as np
        import tensorflow as tf
        import rnn_xframework as xf
        from rnn_xframework import layers
        x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype("float32")
        k = layers.LSTM(4, backend="tensorflow")
        k(x)
        t = xf.convert(k, backend="torch")
        import torch
        yk = np.asarray(xf.compile(k, "xla")(tf.constant(x)))
        yt = xf.compile(t, "torchscript")(torch.from_numpy(x)).detach().numpy()
        print("same", float(np.abs(yk - yt).max()) < 1e-5)
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["same", "True"]


@needs_all_three
@pytest.mark.slow
def test_tensorflow_first_then_torch_compile_triton_kernels_and_xla() -> None:
    """After TensorFlow and `import rnn_xframework` (which loads triton, and nothing else):
    the user's own torch.compile (inductor on the CPU), the library's inductor and Triton
    kernels (interpreted) and an XLA tf.function, in one process."""
    done = _run(
        """
        import os, sys
        os.environ["TRITON_INTERPRET"] = "1"
        import tensorflow as tf
        import rnn_xframework as xf
        print("loaded", "triton" in sys.modules, "torch" in sys.modules)
        import torch
        from rnn_xframework import layers
        f = torch.compile(lambda a: torch.sin(a) * 2)
        print("compile", abs(float(f(torch.ones(3)).sum()) - 6 * float(torch.sin(torch.ones(1)))) < 1e-5)
        rnn = layers.RNN([layers.GRUCell(4, backend="torch")])
        x = torch.randn(2, 5, 3)
        want = rnn(x)
        for method in ("triton", "inductor"):
            print(method, float((xf.compile(rnn, method)(x) - want).abs().max()) < 1e-5)
        g = tf.function(lambda a: tf.sin(a) * 2, jit_compile=True)
        print("xla", float(tf.reduce_sum(g(tf.ones(3)))) > 5)
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = done.stdout.split()
    assert got == ["loaded", "True", "False", "compile", "True", "triton", "True", "inductor", "True", "xla", "True"]


@needs_all_three
def test_parity_cli_after_tensorflow() -> None:
    """The parity suite (both frameworks, torch training with torch.optim) started in a process
    that imported TensorFlow first."""
    done = _run(
        """
        import tensorflow
        import sys
        from rnn_xframework.cli import main
        sys.exit(main(["parity", "--backends", "torch", "tensorflow", "--cells", "GRUCell", "--dtypes",
                       "float32", "--orderings", "timestep", "--batch", "2", "--steps", "3", "--features",
                       "3", "--units", "4", "--layers", "1", "--plain"]))
        """
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "training" in done.stdout


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


@pytest.fixture
def fake_process(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """This process as one where triton is installed and not loaded and TensorFlow is not
    loaded; "importing" triton records the dlopen flags it ran under and loads a stand-in.
    Every real module is put back afterwards: nothing is loaded or unloaded for real."""
    for name in [m for m in sys.modules if m.split(".")[0] in ("triton", "tensorflow")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(frameworks, "triton_installed", lambda: sys.modules.get("triton", True) is not None)
    monkeypatch.setattr(frameworks, "_FAILED", [])
    flags: list[int] = []

    def fake_import() -> None:
        flags.append(sys.getdlopenflags())
        sys.modules["triton"] = types.ModuleType("triton")

    monkeypatch.setattr(frameworks, "_import_triton", fake_import)
    return flags


def _tensorflow_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))


def test_triton_first_without_tensorflow(fake_process: list[int]) -> None:
    assert not frameworks.bad_order()
    frameworks.guard()  # nothing to do, nothing imported
    assert fake_process == [] and "triton" not in sys.modules
    frameworks.load("torch")
    assert len(fake_process) == 1 and not fake_process[0] & os.RTLD_DEEPBIND
    assert "triton" in sys.modules


@pytest.mark.parametrize("entry", ["guard", "torch", "tensorflow"])
def test_after_tensorflow_triton_loads_with_deepbind(
    fake_process: list[int], monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    _tensorflow_loaded(monkeypatch)
    before = sys.getdlopenflags()
    assert frameworks.bad_order()
    frameworks.guard() if entry == "guard" else frameworks.load(entry)
    assert len(fake_process) == 1 and fake_process[0] == before | os.RTLD_DEEPBIND
    assert sys.getdlopenflags() == before  # restored
    assert not frameworks.bad_order()


def test_platform_without_deepbind_gives_typed_error(fake_process: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    _tensorflow_loaded(monkeypatch)
    monkeypatch.delattr(os, "RTLD_DEEPBIND")
    frameworks.guard()  # importing the package still works; the error waits for torch
    with pytest.raises(FrameworkOrderError, match=r"no RTLD_DEEPBIND.*import triton before TensorFlow") as info:
        frameworks.load("torch")
    assert isinstance(info.value, BackendUnavailableError)
    with pytest.raises(FrameworkOrderError, match=r"xf\.compile"):
        frameworks.check_torch_order("xf.compile(rnn, 'triton')")
    assert fake_process == [] and "triton" not in sys.modules


def test_triton_failing_to_load_with_deepbind_gives_typed_error(
    fake_process: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _tensorflow_loaded(monkeypatch)
    tries: list[int] = []

    def broken() -> None:
        tries.append(sys.getdlopenflags())
        sys.modules["triton"] = types.ModuleType("triton")  # half imported when it fails
        sys.modules["triton.language"] = types.ModuleType("triton.language")
        raise ImportError("libtriton.so: undefined symbol: llvm_thing")

    monkeypatch.setattr(frameworks, "_import_triton", broken)
    before = sys.getdlopenflags()
    frameworks.guard()
    assert sys.getdlopenflags() == before
    assert not [m for m in sys.modules if m.split(".")[0] == "triton"]  # nothing half imported left
    with pytest.raises(FrameworkOrderError, match=r"RTLD_DEEPBIND.*failed: ImportError: libtriton\.so: undefined"):
        frameworks.load("torch")
    assert len(tries) == 1  # the failure is kept, not retried


def test_blocked_or_missing_triton_is_a_decided_order(fake_process: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    _tensorflow_loaded(monkeypatch)
    monkeypatch.setitem(sys.modules, "triton", None)  # blocked on purpose (the documented way out)
    assert not frameworks.bad_order()
    frameworks.load("torch")
    monkeypatch.delitem(sys.modules, "triton")
    monkeypatch.setattr(frameworks, "triton_installed", lambda: False)
    assert not frameworks.bad_order()  # no triton: any order works
    frameworks.load("torch")
    assert fake_process == []
