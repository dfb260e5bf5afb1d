"""Bad input: a typed error that names expected and given, and nothing changes."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import require
from helpers import make_rnn, native

import rnn_xframework as xf
from rnn_xframework import backends, layers

FOREIGN = {"numpy": "torch", "torch": "numpy", "tensorflow": "torch"}


@pytest.fixture
def cell(backend):
    c = layers.SimpleRNNCell(4, backend=backend)
    c.build((None, 3))
    return c


def test_wrong_feature_size_after_build(cell, backend):
    with pytest.raises(xf.InputShapeError, match=r"expected shape \(\?, 3\), got \(2, 5\)"):
        cell(native(backend, np.ones((2, 5), "float32")), cell.get_initial_state(2))


def test_wrong_batch_size_in_state(cell, backend):
    with pytest.raises(xf.InputShapeError, match=r"states\[0\].*expected shape \(2, 4\), got \(3, 4\)"):
        cell(native(backend, np.ones((2, 3), "float32")), cell.get_initial_state(3))


def test_wrong_state_structure(cell, backend):
    x = native(backend, np.ones((2, 3), "float32"))
    h = cell.get_initial_state(2)
    with pytest.raises(xf.StateStructureError, match="expected a list of 1 tensor"):
        cell(x, h + h)
    with pytest.raises(xf.StateStructureError):
        cell(x, {"h": h[0]})
    stack = layers.StackedRNNCells([cell])
    with pytest.raises(xf.StateStructureError, match="per-layer lists"):
        stack(x, h[0])
    rnn = layers.RNN([cell])
    with pytest.raises(xf.StateStructureError):
        rnn(native(backend, np.ones((2, 5, 3), "float32")), initial_state=[h, h])


def test_tensor_of_another_framework(cell, backend):
    other = FOREIGN[backend]
    require(other)
    with pytest.raises(xf.FrameworkMismatchError, match=f"expected a {backend} tensor"):
        cell(native(other, np.ones((2, 3), "float32")), cell.get_initial_state(2))
    with pytest.raises(xf.FrameworkMismatchError, match="convert it first"):
        cell(native(backend, np.ones((2, 3), "float32")), [native(other, np.zeros((2, 4), "float32"))])


def test_wrong_dtype(cell, backend):
    with pytest.raises(xf.DTypeMismatchError, match=r"expected dtype float32.*got float64"):
        cell(native(backend, np.ones((2, 3))), cell.get_initial_state(2))
    rnn = make_rnn(backend, 1, 4, "float32")
    with pytest.raises(TypeError, match="float64"):
        rnn(native(backend, np.ones((2, 5, 3))))
    with pytest.raises(xf.DTypeMismatchError, match="float16"):
        layers.SimpleRNNCell(4, backend=backend, dtype="float16")


def test_mixed_backends_in_one_stack():
    require("torch")
    with pytest.raises(xf.FrameworkMismatchError, match="cells\\[1\\]"):
        layers.StackedRNNCells([layers.SimpleRNNCell(3, backend="torch"), layers.SimpleRNNCell(3, backend="numpy")])
    with pytest.raises(xf.FrameworkMismatchError):
        layers.RNN([layers.SimpleRNNCell(3, backend="numpy")], backend="torch")


def test_unknown_backend_name():
    with pytest.raises(xf.UnknownBackendError, match=r"'mxnet'.*expected one of"):
        layers.SimpleRNNCell(3, backend="mxnet")


def test_backend_not_installed_says_how_to_install(monkeypatch):
    monkeypatch.delitem(backends._REGISTRY, "tensorflow", raising=False)
    real = backends.importlib.util.find_spec
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda n: None if n == "tensorflow" else real(n))
    with pytest.raises(xf.BackendUnavailableError, match=r"pip install .*rnn_xframework\[tensorflow\]"):
        layers.SimpleRNNCell(3, backend="tf")
    assert "tensorflow" not in backends._REGISTRY  # the failed call registered nothing
    assert "tensorflow" in backends.names()  # and the backend stays known, for when it is installed


def test_keras_on_another_backend_is_refused():
    require("tensorflow")
    require("torch")
    code = (
        "import os; os.environ['KERAS_BACKEND'] = 'torch'\n"
        "import keras\n"
        "import rnn_xframework as xf\n"
        "try:\n"
        "    xf.layers.SimpleRNNCell(3, backend='tensorflow')\n"
        "except xf.BackendUnavailableError as e:\n"
        "    print('REFUSED', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "REFUSED" in out.stdout and "KERAS_BACKEND='torch'" in out.stdout, out.stderr[-2000:]


def test_torch_cannot_express_other_activations():
    require("torch")
    with pytest.raises(xf.UnsupportedConfigError, match="'tanh' or 'relu'"):
        layers.SimpleRNNCell(3, activation="sigmoid", backend="torch")


def test_errors_are_builtin_subclasses():
    assert issubclass(xf.InputShapeError, ValueError)
    assert issubclass(xf.WeightsError, ValueError)
    assert issubclass(xf.DTypeMismatchError, TypeError)
    assert issubclass(xf.BackendUnavailableError, ImportError)
    assert issubclass(xf.UnknownBackendError, ValueError)
