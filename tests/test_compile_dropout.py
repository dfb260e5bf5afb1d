"""Dropout (``training=True``) on the compiled methods (issue 20): the same masks as the
uncompiled RNN's cells (drawn from the same generators, or set with ``set_dropout_masks``), the
same outputs, states and gradients, with and without ``mask=``, both orderings: the torch methods
and TensorFlow's ``"tf.function"`` and ``"xla"`` graphs (the masks enter the graph as inputs: one
trace per shape); ``triton`` runs it in the scripted masked loop."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from conftest import TOL, require
from helpers import KINDS, make_cells, max_err, native, numpy, random_cell_weights
from test_compile_masks import GENERAL
from test_compile_methods import BATCH, FEATURES, STEPS, UNITS

import rnn_xframework as xf
from rnn_xframework import layers

RATES = [(0.3, 0.0), (0.0, 0.4), (0.3, 0.4)]  # dropout, recurrent_dropout: one mask, one per gate
METHODS = ["torchscript", "cudagraph-stand-in", "tf.function", "xla"]
TF_METHODS = ("tf.function", "xla")


def backend_of(method):
    return "tensorflow" if method in TF_METHODS else "torch"


def seeded_pair(kind, rates, backend="torch", dtype="float64", reset_after=True, **kw):
    """Two RNNs of ``backend`` with the same weights and the same dropout seeds per cell."""
    require(backend)
    rng = np.random.default_rng(2)
    weights = random_cell_weights(rng, kind, [FEATURES, UNITS], UNITS, dtype, reset_after=reset_after)
    cell_kw = {} if reset_after else {"reset_after": False}
    pair = []
    for _ in range(2):
        cells = [  # seed=: the cells' own generators
            getattr(layers, kind)(
                UNITS,
                backend=backend,
                dtype=dtype,
                dropout=rates[0],
                recurrent_dropout=rates[1],
                seed=10 + i,
                **cell_kw,
            )
            for i in range(2)
        ]
        rnn = layers.RNN(cells, return_sequences=True, return_state=True, **kw)
        rnn.build((None, None, FEATURES))
        rnn.set_weights(weights)
        pair.append(rnn)
    return pair


def run_and_grads(model, x, mask):
    """A training call and the gradients of a loss on its outputs and final states w.r.t. ``x``
    and every trainable weight: ``(y, flat states, gradients)`` as NumPy arrays."""
    if model.backend == "tensorflow":
        return _tf_run_and_grads(model, x, mask)
    import torch

    y, states = model(x, mask=mask, training=True)
    loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum() + sum(
        (s * 0.5).sum() for layer in states for s in layer
    )
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [x, *params])
    return numpy("torch", y), [numpy("torch", s) for layer in states for s in layer], [numpy("torch", g) for g in grads]


def _tf_run_and_grads(model, x, mask):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        y, states = model(x, mask=mask, training=True)
        ramp = tf.reshape(tf.linspace(tf.constant(-1.0, y.dtype), 1.0, tf.size(y)), tf.shape(y))
        loss = tf.reduce_sum(y * ramp) + sum(tf.reduce_sum(s * 0.5) for layer in states for s in layer)
    variables = list(model.trainable_variables)
    assert variables  # the weights' gradients are compared, not only the input's
    grads = tape.gradient(loss, [x, *variables])
    return y.numpy(), [s.numpy() for layer in states for s in layer], [g.numpy() for g in grads]


def compiled_with(method, source):
    if method == "cudagraph-stand-in":  # cudagraph's masked / training calls, on the CPU stand-in capture
        from rnn_xframework.backends.torch.compile import cudagraph

        return cudagraph.compile_rnn(source, capture_class=cudagraph.EagerCapture)
    return xf.compile(source, method)


def sequence(backend, dtype, seed):
    x = np.random.default_rng(seed).normal(size=(BATCH, STEPS, FEATURES)).astype(dtype)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.constant(x)
    import torch

    return torch.tensor(x, requires_grad=True)


def assert_same_training(fast, eager, x, mask, dtype):
    """Two training calls of each: the same outputs, states and gradients each time (each call
    draws new masks, the compiled RNN's as the uncompiled RNN's)."""
    for _ in range(2):
        y, states, grads = run_and_grads(fast, x, mask)
        y_want, states_want, grads_want = run_and_grads(eager, x, mask)
        assert max_err(y, y_want) <= TOL[dtype]
        assert all(max_err(s, w) <= TOL[dtype] for s, w in zip(states, states_want, strict=True))
        assert len(grads) == len(grads_want)
        assert all(max_err(g, w) <= TOL[dtype] for g, w in zip(grads, grads_want, strict=True))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rates", RATES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("order", ["timestep", "layer"])
def test_compiled_dropout_matches_uncompiled(method, kind, rates, masked, order):
    """Before issue 20 this raised "the torchscript loop has no dropout" (TensorFlow's graphs:
    "the tf.function loop has no dropout")."""
    backend = backend_of(method)
    eager, source = seeded_pair(kind, rates, backend, order=order)
    fast = compiled_with(method, source)
    x = sequence(backend, "float64", 4)
    assert_same_training(fast, eager, x, GENERAL if masked else None, "float64")
    # new masks per call
    assert max_err(numpy(backend, fast(x, training=True)[0]), numpy(backend, fast(x, training=True)[0])) > 0


@pytest.mark.parametrize("method", TF_METHODS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("masked", [False, True])
def test_tensorflow_dropout_float32(method, kind, masked):
    """The float32 tolerance, per-gate masks (both rates) and the default ordering."""
    eager, source = seeded_pair(kind, (0.3, 0.4), "tensorflow", "float32")
    assert_same_training(
        xf.compile(source, method), eager, sequence("tensorflow", "float32", 5), GENERAL if masked else None, "float32"
    )


@pytest.mark.parametrize("method", TF_METHODS)
@pytest.mark.parametrize("rates", RATES)
def test_tensorflow_dropout_gru_reset_before(method, rates):
    """``GRU(reset_after=False)``: the recurrent mask of the candidate multiplies ``h`` under the reset gate."""
    eager, source = seeded_pair("GRUCell", rates, "tensorflow", reset_after=False)
    assert_same_training(xf.compile(source, method), eager, sequence("tensorflow", "float64", 6), GENERAL, "float64")


@pytest.mark.parametrize("method", TF_METHODS)
def test_tensorflow_dropout_traces_once_per_shape(method):
    """The masks are inputs of the graph: new draws run the same trace (one per shape and mask
    given), and an inference call after them applies none. With ``go_backwards`` and
    ``time_major`` (the mask stays ``[batch, time]``)."""
    import tensorflow as tf

    gc.collect()  # other tests' compiled RNNs release their shared graphs
    eager, source = seeded_pair("LSTMCell", (0.3, 0.4), "tensorflow", go_backwards=True, time_major=True)
    fast = xf.compile(source, method)
    assert len(fast._graphs.cache) == 0  # this structure is this test's own
    x = tf.transpose(sequence("tensorflow", "float64", 7), [1, 0, 2])
    for mask in (None, GENERAL):
        assert_same_training(fast, eager, x, mask, "float64")
        untaped = fast(x, mask=mask, training=True)[0]  # no tape records this one
        assert (
            max_err(numpy("tensorflow", untaped), numpy("tensorflow", eager(x, mask=mask, training=True)[0]))
            <= TOL["float64"]
        )
    functions = list(fast._graphs.cache.entries.values())
    assert len(functions) == 2  # (shape, no mask) and (shape, mask): no entry per draw
    assert [f.experimental_get_tracing_count() for f in functions] == [1, 1]
    assert fast.cache_info()["compiles"] == 2
    inferred = fast(x)[0]  # training=None: Keras's rule, inference; no masks drawn, none applied
    assert max_err(numpy("tensorflow", inferred), numpy("tensorflow", eager(x)[0])) <= TOL["float64"]


@pytest.mark.parametrize("method", TF_METHODS)
def test_tensorflow_dropout_inside_a_tf_function(method):
    """A training step traced by the user's own ``tf.function``: the masks are drawn in that
    graph (the cells' generators advance per call) and match the uncompiled RNN's, call after call."""
    import tensorflow as tf

    eager, source = seeded_pair("GRUCell", (0.3, 0.4), "tensorflow")
    fast = xf.compile(source, method)

    def traced(model):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                y, _ = model(x, training=True)
                loss = tf.reduce_sum(y * y)
            return y, tape.gradient(loss, model.trainable_variables)

        return step

    got, want = traced(fast), traced(eager)
    x = sequence("tensorflow", "float64", 8)
    outputs = []
    for _ in range(3):
        (y, grads), (y_want, grads_want) = got(x), want(x)
        assert max_err(y.numpy(), y_want.numpy()) <= TOL["float64"]
        assert all(max_err(g.numpy(), w.numpy()) <= TOL["float64"] for g, w in zip(grads, grads_want, strict=True))
        outputs.append(y.numpy())
    assert max_err(outputs[0], outputs[1]) > 0  # new masks per call of the traced step


@pytest.mark.parametrize("method", ["torchscript", *TF_METHODS])
@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell"])
def test_compiled_dropout_uses_masks_set_by_hand(method, kind):
    """``set_dropout_masks`` (per gate here) is used by the next compiled call and reset after it."""
    backend = backend_of(method)
    eager, source = seeded_pair(kind, (0.3, 0.4), backend)
    fast = xf.compile(source, method)
    g = 4 if kind == "LSTMCell" else 3
    rng = np.random.default_rng(0)
    x = sequence(backend, "float64", 5)
    for a, b in zip(eager.cells, source.cells, strict=True):
        inputs = [(rng.random((BATCH, a.input_dim)) > 0.3) / 0.7 for _ in range(g)]
        recurrent = [(rng.random((BATCH, UNITS)) > 0.4) / 0.6 for _ in range(g)]
        for cell in (a, b):
            cell.set_dropout_masks(
                inputs=[native(backend, m) for m in inputs], recurrent=[native(backend, m) for m in recurrent]
            )
    got, want = numpy(backend, fast(x, training=True)[0]), numpy(backend, eager(x, training=True)[0])
    assert max_err(got, want) <= TOL["float64"]
    assert all(c.get_dropout_masks() == (None, None) for c in source.cells)  # reset after the call
    drawn = numpy(backend, fast(x, training=True)[0])  # the next call draws its own
    assert max_err(drawn, numpy(backend, eager(x, training=True)[0])) <= TOL["float64"]
    assert max_err(drawn, got) > 0


def test_inductor_dropout_matches_uncompiled():
    """``torch.compile`` of the masked loop with the dropout masks (one case: it compiles per shape)."""
    import torch

    eager, source = seeded_pair("GRUCell", (0.3, 0.4))
    fast = xf.compile(source, "inductor")
    x = torch.tensor(np.random.default_rng(6).normal(size=(BATCH, STEPS, FEATURES)), requires_grad=True)
    y, states, grads = run_and_grads(fast, x, GENERAL)
    y_want, states_want, grads_want = run_and_grads(eager, x, GENERAL)
    assert max_err(y, y_want) <= TOL["float64"]
    assert all(max_err(s, w) <= TOL["float64"] for s, w in zip(states, states_want, strict=True))
    assert all(max_err(g, w) <= TOL["float64"] for g, w in zip(grads, grads_want, strict=True))


def test_triton_dropout_runs_the_scripted_masked_loop(monkeypatch):
    """``triton`` trains with dropout through the scripted masked loop (the cells' own masks):
    the uncompiled RNN's results with the same draws (Triton's interpreter on the CPU)."""
    require("torch")
    pytest.importorskip("triton", reason="xf.compile(rnn, 'triton') needs triton")
    import torch

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    rnn = layers.RNN(make_cells("torch", "GRUCell", 1, UNITS, "float64", dropout=0.5, recurrent_dropout=0.3))
    rnn.build((None, None, FEATURES))
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(BATCH, STEPS, FEATURES)))
    torch.manual_seed(3)
    got = xf.compile(rnn, "triton")(x, training=True)
    torch.manual_seed(3)
    want = rnn(x, training=True)
    assert max_err(got.detach(), want.detach()) <= TOL["float64"]
