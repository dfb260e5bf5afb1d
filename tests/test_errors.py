"""Bad input: a typed error that names expected and given, and nothing changes."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from conftest import require
from helpers import make_rnn, native

import rnn_xframework as xf
from rnn_xframework import backends, layers, registry

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
    monkeypatch.delitem(registry._REGISTRY, "tensorflow", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None if n == "tensorflow" else real(n))
    with pytest.raises(xf.BackendUnavailableError, match=r"pip install .*rnn_xframework\[tensorflow\]"):
        layers.SimpleRNNCell(3, backend="tf")
    assert "tensorflow" not in registry._REGISTRY  # the failed call registered nothing
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


def test_integer_input_says_cast_not_a_dtype_the_library_refuses(cell, backend):
    with pytest.raises(xf.DTypeMismatchError) as e:
        cell(native(backend, np.ones((2, 3), "int64")), cell.get_initial_state(2))
    message = str(e.value)
    assert "got int64" in message and "cast the tensor to float32" in message, message
    assert "dtype='int64'" not in message, message


def test_stack_state_given_to_a_cell_says_so(cell, backend):
    x = native(backend, np.ones((2, 3), "float32"))
    with pytest.raises(xf.StateStructureError) as e:
        cell(x, [cell.get_initial_state(2)])  # [[h]]: a stack's state
    message = str(e.value)
    assert "builtins" not in message and "[[h0], [h1]]" in message and "[h]" in message, message


def test_flat_states_given_to_an_lstm_stack_say_one_list_per_layer(backend):
    stack = layers.StackedRNNCells([layers.LSTMCell(4, backend=backend), layers.LSTMCell(4, backend=backend)])
    x = native(backend, np.ones((2, 3), "float32"))
    stack.build((None, 3))
    h, c = stack.cells[0].get_initial_state(2)
    with pytest.raises(xf.StateStructureError) as e:
        stack(x, [h, c])
    message = str(e.value)
    assert "bare tensor" not in message and "flat list of 2" in message, message
    assert "[[h0, c0], [h1, c1]]" in message, message


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_one_cell_layers_take_kerass_initial_state_forms(backend, kind):
    rnn = getattr(layers, kind)(4, return_state=True, backend=backend)
    x = native(backend, np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32"))
    rnn.build((None, 5, 3))
    rng = np.random.default_rng(1)
    states = [native(backend, rng.normal(size=(2, 4)).astype("float32")) for _ in rnn.cells[0].state_sizes]
    want_y, want_states = rnn(x, initial_state=[states])  # the library's own form: one list per layer
    forms = [states] + ([states[0]] if len(states) == 1 else [])  # [h, c] / [h] / h, as Keras takes them
    for form in forms:
        y, got_states = rnn(x, initial_state=form)
        np.testing.assert_allclose(backends.get(backend).to_numpy(y), backends.get(backend).to_numpy(want_y), 0, 1e-6)
        for g, w in zip(got_states[0], want_states[0], strict=True):
            np.testing.assert_allclose(backends.get(backend).to_numpy(g), backends.get(backend).to_numpy(w), 0, 1e-6)
