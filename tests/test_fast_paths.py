"""The inference fast paths behind ``xf.compile``, against the uncompiled RNN.

torch (``"torchscript"``, autograd off, SimpleRNN stacks): :func:`~rnn_xframework.backends.
torch_fast.wavefront` and :func:`~rnn_xframework.backends.torch_fast.time_major` (chunked), each
forced on in turn, over layer counts, unequal units, mixed activations, no bias, chunk
boundaries and the call flags. TensorFlow (``"xla"``, no tape recording): the fused-product
loop, and that a recording tape takes the differentiable path instead.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL, require
from helpers import max_err, native, numpy

import rnn_xframework as xf
from rnn_xframework import layers

FEATURES, BATCH, STEPS = 5, 3, 7
# (units per layer, activation per layer, use_bias)
STACKS = [
    ([6], ["tanh"], True),
    ([6, 6], ["tanh", "tanh"], True),
    ([3, 5, 4], ["relu", "tanh", "relu"], True),
    ([4, 4], ["relu", "relu"], False),
]
FLAGS = [(True, True, False), (False, True, True), (True, False, True)]  # return_sequences, _state, go_backwards


def stack(backend, units, acts, use_bias, dtype, rng, **kw):
    require(backend)
    cells = [
        layers.SimpleRNNCell(u, activation=a, use_bias=use_bias, backend=backend, dtype=dtype)
        for u, a in zip(units, acts, strict=True)
    ]
    rnn = layers.RNN(cells, **kw)
    rnn.build((None, None, FEATURES))
    # bounded pre-activations (kernels scaled by fan-in), and non-zero biases (Keras's are zero)
    scale = [np.sqrt(3.0 / w.shape[0]) if w.ndim == 2 else 0.5 for w in rnn.get_weights()]
    rnn.set_weights(
        [(rng.uniform(-1, 1, w.shape) * k).astype(dtype) for w, k in zip(rnn.get_weights(), scale, strict=True)]
    )
    return rnn


def call_inputs(backend, units, dtype, rng, batch=BATCH, steps=STEPS):
    x = native(backend, rng.normal(size=(batch, steps, FEATURES)).astype(dtype))
    states = [[native(backend, rng.uniform(-1, 1, (batch, u)).astype(dtype))] for u in units]
    return x, states


def assert_close(backend, got, want, dtype, with_state):
    if not with_state:
        got, want = (got, []), (want, [])
    assert tuple(got[0].shape) == tuple(want[0].shape)
    assert max_err(numpy(backend, got[0]), numpy(backend, want[0])) <= TOL[dtype]
    for s, w in zip(got[1], want[1], strict=True):
        assert max_err(numpy(backend, s[0]), numpy(backend, w[0])) <= TOL[dtype]


# torch: force each path (the scripted loop's thresholds are plain attributes)
PATHS = {
    "wavefront": {"wavefront_max_units": 10**9, "wavefront_max_batch": 10**9},
    "time_major, one chunk": {"wavefront_max_units": 0, "chunk_rows": 10**9},
    "time_major, chunks of 2 steps": {"wavefront_max_units": 0, "chunk_rows": 2 * BATCH},
    "time_major, chunks of 1 step": {"wavefront_max_units": 0, "chunk_rows": 1},
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(("units", "acts", "use_bias"), STACKS)
@pytest.mark.parametrize("flags", FLAGS)
def test_torch_inference_paths_match_uncompiled(rng, dtype, path, units, acts, use_bias, flags):
    require("torch")
    import torch

    seq, state, back = flags
    rnn = stack("torch", units, acts, use_bias, dtype, rng, return_sequences=seq, return_state=state, go_backwards=back)
    fast = xf.compile(rnn, "torchscript")
    for name, value in PATHS[path].items():
        setattr(fast.loop, name, value)
    x, states = call_inputs("torch", units, dtype, rng)
    with torch.no_grad():
        assert_close("torch", fast(x, states), rnn(x, states), dtype, state)
        assert_close("torch", fast(x), rnn(x), dtype, state)  # zero initial states


@pytest.mark.parametrize("path", ["wavefront", "time_major, chunks of 2 steps"])
def test_torch_inference_results_own_their_memory(rng, path):
    """The returned states are not views of the output (nor of a reused scratch buffer), and the
    inputs and initial states are left as they were."""
    require("torch")
    import torch

    rnn = stack("torch", [4, 4], ["tanh", "tanh"], True, "float64", rng, return_sequences=True, return_state=True)
    fast = xf.compile(rnn, "torchscript")
    for name, value in PATHS[path].items():
        setattr(fast.loop, name, value)
    x, states = call_inputs("torch", [4, 4], "float64", rng)
    x0, s0 = x.clone(), [[s[0].clone()] for s in states]
    with torch.no_grad():
        y, new = fast(x, states)
        kept = [s[0].clone() for s in new]
        y.add_(1.0)
        fast(x, states)  # a second call reuses nothing of the first's results
    assert all(torch.equal(a[0], b) for a, b in zip(new, kept, strict=True))
    assert torch.equal(x, x0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(states, s0, strict=True))


@pytest.mark.parametrize(
    ("batch", "units", "wavefront"), [(4, 64, True), (8, 128, True), (16, 64, False), (9, 64, False), (4, 256, False)]
)
def test_torch_auto_rule_picks_the_wavefront_for_small_stacks(rng, batch, units, wavefront):
    """The measured rule (docs/performance.md): the wavefront for at most 8 rows and 128 units
    summed over the layers (``units`` here: two layers of ``units // 2``). Its output is a fresh
    batch-first tensor; the time-major path's is a transposed view of its time-major buffer (as
    ``nn.RNN(batch_first=True)`` returns)."""
    require("torch")
    import torch

    rnn = stack("torch", [units // 2, units // 2], ["tanh", "tanh"], True, "float32", rng, return_sequences=True)
    fast = xf.compile(rnn, "auto")
    x, _ = call_inputs("torch", [units // 2] * 2, "float32", rng, batch=batch)
    with torch.no_grad():
        y = fast(x)
        assert max_err(y.numpy(), rnn(x).numpy()) <= TOL["float32"]
    assert y.is_contiguous() == wavefront


def test_torch_autograd_takes_the_differentiable_loop(rng):
    require("torch")
    import torch

    rnn = stack("torch", [4, 4], ["tanh", "tanh"], True, "float64", rng, return_sequences=True)
    fast = xf.compile(rnn, "torchscript")
    x, _ = call_inputs("torch", [4, 4], "float64", rng)
    y = fast(x)
    assert y.grad_fn is not None
    (g,) = torch.autograd.grad(y.sum(), [rnn.cells[0].cell.weight_hh])
    (want,) = torch.autograd.grad(rnn(x).sum(), [rnn.cells[0].cell.weight_hh])
    assert max_err(g.numpy(), want.numpy()) <= TOL["float64"]


@pytest.mark.parametrize(("units", "acts", "use_bias"), STACKS)
@pytest.mark.parametrize("flags", FLAGS)
def test_xla_inference_matches_uncompiled(rng, dtype, units, acts, use_bias, flags):
    seq, state, back = flags
    rnn = stack(
        "tensorflow", units, acts, use_bias, dtype, rng, return_sequences=seq, return_state=state, go_backwards=back
    )
    fast = xf.compile(rnn, "xla")
    x, states = call_inputs("tensorflow", units, dtype, rng)
    assert_close("tensorflow", fast(x, states), rnn(x, states), dtype, state)
    assert_close("tensorflow", fast(x), rnn(x), dtype, state)
    # each call took the inference functions, once traced each
    assert fast._infer_states.experimental_get_tracing_count() == 1
    assert fast._infer_zeros.experimental_get_tracing_count() == 1


def test_xla_under_a_tape_takes_the_differentiable_path(rng):
    require("tensorflow")
    import tensorflow as tf

    rnn = stack("tensorflow", [4, 4], ["tanh", "tanh"], True, "float64", rng, return_sequences=True)
    fast = xf.compile(rnn, "xla")
    x, _ = call_inputs("tensorflow", [4, 4], "float64", rng)
    variables = rnn.trainable_variables
    with tf.GradientTape() as tape:
        y = fast(x)
    got = tape.gradient(y, variables)
    with tf.GradientTape() as tape:
        y_want = rnn(x)
    want = tape.gradient(y_want, variables)
    assert fast._infer_zeros.experimental_get_tracing_count() == 0
    assert max_err(y.numpy(), y_want.numpy()) <= TOL["float64"]
    assert all(max_err(g.numpy(), w.numpy()) <= 1e-10 for g, w in zip(got, want, strict=True))
    with tf.GradientTape() as tape, tape.stop_recording():
        fast(x)  # a tape that does not record: inference
    assert fast._infer_zeros.experimental_get_tracing_count() == 1


def test_xla_gated_cells_have_no_inference_shortcut(rng):
    require("tensorflow")
    rnn = layers.RNN([layers.LSTMCell(4, backend="tensorflow")])
    rnn.build((None, None, FEATURES))
    fast = xf.compile(rnn, "xla")
    assert fast._infer_zeros is None
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    assert np.isfinite(fast(x).numpy()).all()
