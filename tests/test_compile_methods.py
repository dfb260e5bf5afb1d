"""Every compile method against the uncompiled RNN: SimpleRNN, LSTM and GRU stacks, both
orderings, both dtypes (stated tolerances), flags, autograd, and the typed errors.

``inductor`` compiles for seconds per shape; it has its own few tests in
tests/test_compile_inductor.py.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from conftest import TOL, require
from helpers import KINDS, inference_mode, make_cells, max_err, native, numpy, random_cell_states, random_cell_weights

import rnn_xframework as xf
from rnn_xframework import layers, registry
from rnn_xframework.compile import auto_method
from rnn_xframework.parity import training

FEATURES, UNITS, BATCH, STEPS = 4, 6, 3, 5
# (backend, method); "auto" resolves to a registered method of the backend
METHODS = [
    ("torch", "torchscript"),
    ("torch", "cpu"),
    ("torch", "auto"),
    ("tensorflow", "tf.function"),
    ("tensorflow", "xla"),
]


def built(backend, kind, dtype, rng, *, layers_n=2, **kw):
    require(backend)
    rnn = layers.RNN(make_cells(backend, kind, layers_n, UNITS, dtype), **kw)
    rnn.build((None, None, FEATURES))
    rnn.set_weights(random_cell_weights(rng, kind, [FEATURES] + [UNITS] * (layers_n - 1), UNITS, dtype))
    return rnn


def inputs(backend, kind, dtype, rng, layers_n=2):
    x = native(backend, rng.normal(size=(BATCH, STEPS, FEATURES)).astype(dtype))
    states = random_cell_states(rng, kind, layers_n, BATCH, UNITS, dtype)
    return x, [[native(backend, s) for s in layer] for layer in states]


def assert_same(backend, got, want, dtype):
    y, states = got
    y_want, states_want = want
    assert max_err(numpy(backend, y), numpy(backend, y_want)) <= TOL[dtype]
    assert [len(s) for s in states] == [len(s) for s in states_want]
    for layer, layer_want in zip(states, states_want, strict=True):
        for s, w in zip(layer, layer_want, strict=True):
            assert max_err(numpy(backend, s), numpy(backend, w)) <= TOL[dtype]


@pytest.mark.parametrize(("backend", "method"), METHODS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("order", ["timestep", "layer"])
def test_method_matches_uncompiled(rng, dtype, backend, method, kind, order):
    rnn = built(backend, kind, dtype, rng, return_sequences=True, return_state=True, order=order)
    fast = xf.compile(rnn, method)
    x, states = inputs(backend, kind, dtype, rng)
    assert_same(backend, fast(x, states), rnn(x, states), dtype)


@pytest.mark.parametrize(("backend", "method"), METHODS)
@pytest.mark.parametrize("flags", [(False, False, False), (True, False, True), (False, True, True)])
def test_method_flags(rng, backend, method, flags):
    seq, state, back = flags
    rnn = built(backend, "SimpleRNNCell", "float64", rng, return_sequences=seq, return_state=state, go_backwards=back)
    fast = xf.compile(rnn, method)
    x, _ = inputs(backend, "SimpleRNNCell", "float64", rng)
    got, want = fast(x), rnn(x)  # default (zero) initial state
    if state:
        assert_same(backend, got, want, "float64")
    else:
        assert max_err(numpy(backend, got), numpy(backend, want)) <= TOL["float64"]
        assert tuple(got.shape) == tuple(want.shape)


def assert_same_gradients(got, want):
    """Inputs, every initial state of every layer, and every canonical weight."""
    got_states = [s for layer in got.states for s in layer]
    want_states = [s for layer in want.states for s in layer]
    assert len(got_states) == len(want_states) > 0 and len(got.weights) == len(want.weights) > 0
    for g, w in zip([got.inputs, *got_states, *got.weights], [want.inputs, *want_states, *want.weights], strict=True):
        assert max_err(g, w) <= TOL["float64"]


@pytest.mark.parametrize(("backend", "method"), METHODS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps", [STEPS, 1])  # one step: XLA's while-loop gradient failed there
def test_method_gradients_match(rng, backend, method, kind, steps):
    """Autograd through the compiled object: the canonical gradients of the parity loss."""
    rnn = built(backend, kind, "float64", rng, return_sequences=True, return_state=True)
    fast = xf.compile(rnn, method)
    x = rng.normal(size=(BATCH, steps, FEATURES))
    states = random_cell_states(rng, kind, 2, BATCH, UNITS, "float64")
    w_states = random_cell_states(rng, kind, 2, BATCH, UNITS, "float64")
    loss_weights = (rng.uniform(-1, 1, (BATCH, steps, UNITS)), w_states)
    got = training.loss_and_grads(backend, fast, x, states, loss_weights)
    want = training.loss_and_grads(backend, rnn, x, states, loss_weights)
    assert abs(got.loss - want.loss) <= TOL["float64"] * max(1.0, abs(want.loss))
    assert_same_gradients(got, want)


@pytest.mark.parametrize(("backend", "method"), METHODS)
def test_method_shares_weights(rng, backend, method):
    rnn = built(backend, "GRUCell", "float32", rng, return_sequences=True)
    fast = xf.compile(rnn, method)
    x, _ = inputs(backend, "GRUCell", "float32", rng)
    fast(x)
    rnn.set_weights([np.zeros_like(w) for w in rnn.get_weights()])
    assert not numpy(backend, fast(x)).any()


@pytest.mark.parametrize(("backend", "method"), METHODS)
def test_method_refuses_what_it_cannot_run(rng, backend, method):
    require(backend)
    cells = make_cells(backend, "LSTMCell", 1, UNITS, "float32", dropout=0.5)
    rnn = layers.RNN(cells, return_sequences=True)
    rnn.build((None, None, FEATURES))
    fast = xf.compile(rnn, method)
    x, _ = inputs(backend, "LSTMCell", "float32", rng, layers_n=1)
    trained = numpy(backend, fast(x, training=True))  # every method here runs dropout (test_compile_dropout.py)
    inferred = numpy(backend, inference_mode(fast)(x))  # inference (torch: in eval mode, PyTorch's rule)
    assert max_err(trained, inferred) > 0  # the dropout masks applied in training only
    with pytest.raises(xf.InputShapeError):
        fast(native(backend, np.ones((BATCH, STEPS, FEATURES + 1), "float32")))
    with pytest.raises(xf.DTypeMismatchError):
        fast(native(backend, np.ones((BATCH, STEPS, FEATURES), "float64")))


def test_methods_for_the_wrong_backend_raise(rng):
    with pytest.raises(xf.FrameworkMismatchError, match="takes a tensorflow RNN"):
        xf.compile(built("torch", "SimpleRNNCell", "float32", rng), "xla")
    with pytest.raises(xf.FrameworkMismatchError, match="takes a torch RNN"):
        xf.compile(built("tensorflow", "SimpleRNNCell", "float32", rng), "inductor")
    with pytest.raises(xf.FrameworkMismatchError, match="'auto'"):
        xf.compile(built("numpy", "SimpleRNNCell", "float32", rng), "auto")
    with pytest.raises(xf.UnsupportedConfigError, match="unknown compile method 'jax'"):
        xf.compile(built("torch", "SimpleRNNCell", "float32", rng), "jax")


@pytest.mark.parametrize(
    ("backend", "units", "expected"),
    [
        ("torch", UNITS, "cpu"),  # the C kernel (CI has a C compiler)
        ("torch", 256, "cpu"),
        ("tensorflow", UNITS, "xla"),
        ("tensorflow", 256, "tf.function"),
    ],
)
def test_auto_picks_the_measured_method(backend, units, expected):
    require(backend)
    rnn = layers.RNN(make_cells(backend, "SimpleRNNCell", 2, units, "float32"))
    rnn.build((None, None, FEATURES))
    assert auto_method(rnn) == expected
    assert xf.compile(rnn, "auto").method == expected


@pytest.mark.parametrize("kind", KINDS)
def test_auto_on_cuda_picks_only_the_proven_path(kind, monkeypatch):
    """On CUDA ``auto`` picks TorchScript: the Triton kernels and graph replay have no GPU results
    under benchmarks/results/ (they never ran on one); they stay reachable by name. The CUDA
    parameters are faked (the device check reads them), so this runs without a GPU; it picked
    ``"triton"`` here before."""
    require("torch")
    import torch

    rnn = layers.RNN(make_cells("torch", kind, 2, UNITS, "float32"))
    rnn.build((None, None, FEATURES))
    on_cuda = [types.SimpleNamespace(device=torch.device("cuda"), dtype=p.dtype) for p in rnn.parameters()]
    monkeypatch.setattr(rnn, "parameters", lambda *a, **k: iter(on_cuda))
    assert next(iter(rnn.parameters())).device.type == "cuda"
    assert auto_method(rnn) == "torchscript"
    assert "triton" in registry.get("torch").compile_methods and "cudagraph" in registry.get("torch").compile_methods


@pytest.mark.parametrize("method", ["tf.function", "xla"])
def test_tf_gru_reset_before(rng, method):
    """Keras's ``reset_after=False`` GRU (no torch form) compiles too."""
    require("tensorflow")
    cells = make_cells("tensorflow", "GRUCell", 2, UNITS, "float64", reset_after=False)
    rnn = layers.RNN(cells, return_sequences=True, return_state=True)
    rnn.build((None, None, FEATURES))
    rnn.set_weights(random_cell_weights(rng, "GRUCell", [FEATURES, UNITS], UNITS, "float64", reset_after=False))
    x, states = inputs("tensorflow", "GRUCell", "float64", rng)
    assert_same("tensorflow", xf.compile(rnn, method)(x, states), rnn(x, states), "float64")


@pytest.mark.parametrize("method", ["tf.function", "xla"])
@pytest.mark.parametrize("kind", KINDS)
def test_tf_layer_major_graph(rng, monkeypatch, method, kind):
    """Large batches run the TF graph layer by layer (small ones time step by time step): the
    same outputs and gradients."""
    require("tensorflow")
    from rnn_xframework.backends.tensorflow.compile import graphs as tf_graphs

    monkeypatch.setattr(tf_graphs, "TIMESTEP_MAJOR_MAX", 0)
    rnn = built("tensorflow", kind, "float64", rng, return_sequences=True, return_state=True)
    fast = xf.compile(rnn, method)
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    states = random_cell_states(rng, kind, 2, BATCH, UNITS, "float64")
    loss_weights = (
        rng.uniform(-1, 1, (BATCH, STEPS, UNITS)),
        random_cell_states(rng, kind, 2, BATCH, UNITS, "float64"),
    )
    got, want = (
        training.loss_and_grads("tensorflow", fast, x, states, loss_weights),
        training.loss_and_grads("tensorflow", rnn, x, states, loss_weights),
    )
    assert_same_gradients(got, want)


@pytest.mark.parametrize("kind", KINDS)
def test_torch_no_grad_path_matches(rng, dtype, kind):
    """Without autograd the torch loop writes each step in place (SimpleRNN): same outputs."""
    torch = pytest.importorskip("torch")
    rnn = built("torch", kind, dtype, rng, return_sequences=True, return_state=True)
    fast = xf.compile(rnn, "torchscript")
    x, states = inputs("torch", kind, dtype, rng)
    with torch.no_grad():
        got, want = fast(x, states), rnn(x, states)
    assert_same("torch", got, want, dtype)
    assert_same("torch", fast(x, states), want, dtype)  # and the autograd path after it
