"""The inference fast paths behind ``xf.compile``, against the uncompiled RNN.

torch (``"torchscript"``, autograd off, SimpleRNN stacks): :func:`~rnn_xframework.backends.
torch.compile.script_loops.wavefront` and
:func:`~rnn_xframework.backends.torch.compile.script_loops.time_major` (chunked), each
forced on in turn, over layer counts, unequal units, mixed activations, no bias, chunk
boundaries and the call flags. TensorFlow (``"xla"``, no tape recording):
the inference loop (:func:`~rnn_xframework.backends.tensorflow.compile.graph_loops.layer_major`
``per_step``: one product per step for SimpleRNN and LSTM layers, per-step projections for GRU), for
every form of stack, masked or not, and that a recording tape takes the differentiable path instead
(same numbers); the cell specs that declare ``sums_recurrent`` do sum it.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL, require
from helpers import KINDS, max_err, native, numpy

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
def test_torchscript_rule_picks_the_wavefront_for_small_stacks(rng, batch, units, wavefront):
    """``"torchscript"``'s measured rule (docs/performance.md): the wavefront for at most 8 rows and 128 units
    summed over the layers (``units`` here: two layers of ``units // 2``). Its output is a fresh
    batch-first tensor; the time-major path's is a transposed view of its time-major buffer (as
    ``nn.RNN(batch_first=True)`` returns)."""
    require("torch")
    import torch

    rnn = stack("torch", [units // 2, units // 2], ["tanh", "tanh"], True, "float32", rng, return_sequences=True)
    fast = xf.compile(rnn, "torchscript")  # ("auto" is "cpu" for SimpleRNN stacks where the C kernel builds)
    x, _ = call_inputs("torch", [units // 2] * 2, "float32", rng, batch=batch)
    with torch.no_grad():
        y = fast(x)
        assert max_err(y.numpy(), rnn(x).numpy()) <= TOL["float32"]
    assert y.is_contiguous() == wavefront


def _grad_fns(t):
    """The names of every autograd node behind ``t``."""
    seen, todo = set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is not None and type(fn).__name__ not in seen:
            seen.add(type(fn).__name__)
            todo += [f for f, _ in fn.next_functions]
    return seen


def _loss(out, with_state):
    """A loss that weighs every output and state differently (a plain sum would hide mix-ups)."""
    y, states = out if with_state else (out, [])
    return (y * y.detach().cos()).sum() + sum((1.0 + i) * (s[0] * s[0].detach()).sum() for i, s in enumerate(states))


@pytest.mark.parametrize(("units", "acts", "use_bias"), STACKS)
@pytest.mark.parametrize("flags", FLAGS)
@pytest.mark.parametrize("steps", [STEPS, 1])
def test_torch_training_path_gradients_match_uncompiled(rng, units, acts, use_bias, flags, steps):
    """With autograd on, a compiled SimpleRNN stack trains through ``bptt.StackFunction``:
    the gradients w.r.t. inputs, initial states and every parameter are autograd's through the
    uncompiled cells."""
    require("torch")
    import torch

    seq, state, back = flags
    rnn = stack(
        "torch", units, acts, use_bias, "float64", rng, return_sequences=seq, return_state=state, go_backwards=back
    )
    fast = xf.compile(rnn, "torchscript")
    x, states = call_inputs("torch", units, "float64", rng, steps=steps)
    x.requires_grad_(True)
    for s in states:
        s[0].requires_grad_(True)
    sources = [x, *(s[0] for s in states), *(p for p in rnn.parameters() if p.requires_grad)]
    out = fast(x, states)
    assert "StackFunctionBackward" in _grad_fns(out[0] if state else out)
    got = torch.autograd.grad(_loss(out, state), sources, allow_unused=True)
    want = torch.autograd.grad(_loss(rnn(x, states), state), sources, allow_unused=True)
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if g is not None:
            assert max_err(g.numpy(), w.numpy()) <= 1e-10


@pytest.mark.parametrize("acts", [["tanh", "tanh"], ["relu", "tanh"]])
def test_torch_training_path_gradcheck(rng, acts):
    """``torch.autograd.gradcheck`` (finite differences) on the hand-written backward."""
    require("torch")
    import torch

    from rnn_xframework.backends.torch.compile.bptt import StackFunction
    from rnn_xframework.backends.torch.compile.torchscript import bptt_kernels

    units, n = [3, 2], 2
    x = torch.tensor(rng.normal(size=(2, 4, 3)), requires_grad=True)
    h0 = [torch.tensor(rng.uniform(-1, 1, (2, u)), requires_grad=True) for u in units]
    w_ih = [
        torch.tensor(rng.uniform(-0.8, 0.8, (u, d)), requires_grad=True) for u, d in zip(units, [3, 3], strict=True)
    ]
    w_hh = [torch.tensor(rng.uniform(-0.8, 0.8, (u, u)), requires_grad=True) for u in units]
    # biases away from zero, so no relu input sits at its kink
    bias = [torch.tensor(rng.uniform(0.2, 0.5, (u,)) * rng.choice([-1, 1], u), requires_grad=True) for u in units]
    relu = tuple(a == "relu" for a in acts)
    assert torch.autograd.gradcheck(
        lambda *t: StackFunction.apply(t[0], bptt_kernels(), relu, n, *t[1:]),
        (x, *h0, *w_ih, *w_hh, *bias),
        eps=1e-6,
        atol=1e-7,
    )


def test_torch_gated_and_no_grad_calls_keep_their_loops(rng):
    """LSTM/GRU stacks have no hand-written backward (autograd through the fast loop), and a
    call without autograd takes the inference loop even for a SimpleRNN stack."""
    require("torch")
    import torch

    gated = layers.RNN([layers.SimpleRNNCell(4, backend="torch"), layers.LSTMCell(4, backend="torch")])
    gated.build((None, None, FEATURES))
    assert xf.compile(gated, "torchscript").train_loop is None
    rnn = stack("torch", [4, 4], ["tanh", "tanh"], True, "float64", rng, return_sequences=True)
    fast = xf.compile(rnn, "torchscript")
    x, _ = call_inputs("torch", [4, 4], "float64", rng)
    with torch.no_grad():
        assert fast(x).grad_fn is None


def inference_traces(fast):
    """Traces of each XLA inference function a compiled TF RNN holds (one per call signature)."""
    return [fn.experimental_get_tracing_count() for fn, _ in fast._inference_cache.entries.values()]


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
    assert inference_traces(fast) == [1, 1]


def test_xla_inference_cache_follows_weights_shapes_and_scopes(rng):
    """Eager inference calls reuse a traced concrete function per signature: it must still read
    the current weights, and a new shape, state or device scope must not reuse a wrong one."""
    require("tensorflow")
    import tensorflow as tf

    rnn = stack("tensorflow", [4, 3], ["tanh", "tanh"], True, "float32", rng, return_sequences=True)
    fast = xf.compile(rnn, "xla")
    x, _ = call_inputs("tensorflow", [4, 3], "float32", rng)
    fast(x)
    rnn.set_weights([w * 0.5 for w in rnn.get_weights()])
    assert max_err(fast(x).numpy(), rnn(x).numpy()) <= TOL["float32"]
    for batch, steps in [(5, 7), (3, 2)]:
        x2, s2 = call_inputs("tensorflow", [4, 3], "float32", rng, batch=batch, steps=steps)
        assert max_err(fast(x2).numpy(), rnn(x2).numpy()) <= TOL["float32"]
        assert max_err(fast(x2, s2).numpy(), rnn(x2, s2).numpy()) <= TOL["float32"]
    with tf.device("/CPU:0"):
        assert max_err(fast(x).numpy(), rnn(x).numpy()) <= TOL["float32"]
    graph = tf.function(lambda x: fast(x))  # inside a user's graph: no eager cache, same numbers
    assert max_err(graph(x).numpy(), rnn(x).numpy()) <= TOL["float32"]


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
    assert inference_traces(fast) == []
    assert max_err(y.numpy(), y_want.numpy()) <= TOL["float64"]
    assert all(max_err(g.numpy(), w.numpy()) <= 1e-10 for g, w in zip(got, want, strict=True))
    with tf.GradientTape() as tape, tape.stop_recording():
        fast(x)  # a tape that does not record: inference
    assert inference_traces(fast) == [1]


GATED = [  # (kind, cell options): every option the graphs run for LSTM and GRU
    ("LSTMCell", {}),
    ("LSTMCell", {"activation": "relu", "recurrent_activation": "hard_sigmoid", "use_bias": False}),
    ("GRUCell", {}),
    ("GRUCell", {"reset_after": False}),
    ("GRUCell", {"activation": "softsign", "use_bias": False}),
]


@pytest.fixture(params=GATED, ids=lambda g: f"{g[0]}{g[1] or ''}")
def gated(request):
    return request.param


@pytest.fixture
def inference_calls(monkeypatch):
    """A list that grows by one at every call that takes the XLA inference shortcut."""
    require("tensorflow")
    from rnn_xframework.backends.tensorflow.compile import function

    calls = []
    original = function.CompiledRNN._inference

    def counted(self, *args):
        calls.append(self)
        return original(self, *args)

    monkeypatch.setattr(function.CompiledRNN, "_inference", counted)
    return calls


def flat_states(out):
    """``(y, [[h, c], [h, c]])`` -> ``[y, h, c, h, c]``."""
    y, states = out
    return [y, *(s for layer in states for s in layer)]


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("flags", FLAGS)
def test_xla_gated_inference_matches_the_tape_path(rng, dtype, gated, flags, masked, inference_calls):
    """LSTM and GRU stacks (every form) take the shortcut when no tape records, masked or not, with
    and without initial states, and give the differentiable path's and the uncompiled RNN's numbers."""
    import tensorflow as tf

    kind, options = gated
    seq, state, back = flags
    cells = [getattr(layers, kind)(u, backend="tensorflow", dtype=dtype, **options) for u in (4, 3)]
    rnn = layers.RNN(cells, return_sequences=seq, return_state=state, go_backwards=back)
    rnn.build((None, None, FEATURES))
    rnn.set_weights([rng.uniform(-0.7, 0.7, w.shape).astype(dtype) for w in rnn.get_weights()])
    fast = xf.compile(rnn, "xla")
    assert fast._inference_shortcut
    x = tf.constant(rng.normal(size=(BATCH, STEPS, FEATURES)).astype(dtype))
    states = [
        [tf.constant(rng.uniform(-1, 1, (BATCH, u)).astype(dtype)) for _ in cell.state_sizes]
        for cell, u in zip(cells, (4, 3), strict=True)
    ]
    mask = np.array([[1, 1, 0, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0, 0], [0] * STEPS], bool) if masked else None
    for kw in ({}, {"initial_state": states}):
        with tf.GradientTape():
            taped = fast(x, mask=mask, **kw)
        assert inference_calls == []  # a recording tape: the differentiable path
        got = fast(x, mask=mask, **kw)
        assert len(inference_calls) == 1
        inference_calls.clear()
        want = rnn(x, mask=mask, **kw)
        for g in (got, taped):
            outs, outs_want = (flat_states(g), flat_states(want)) if state else ([g], [want])
            assert len(outs) == len(outs_want) == (1 + 2 * len(cells[0].state_sizes) if state else 1)
            for o, w in zip(outs, outs_want, strict=True):
                assert tuple(o.shape) == tuple(w.shape) and max_err(o.numpy(), w.numpy()) <= TOL[dtype]
    assert inference_traces(fast) == [1, 1]  # one per signature, traced once each


@pytest.mark.parametrize("kind", KINDS)
def test_a_spec_that_sums_its_recurrent_product_does(rng, kind):
    """``CellSpec.sums_recurrent`` (what lets the XLA inference loop use one product per step) is
    a fact of the spec's step: given the input projection plus the recurrent product and a
    ``recurrent`` that adds nothing, it computes the same as given them apart. GRU says no, and
    there the two differ."""
    from rnn_xframework import cells
    from rnn_xframework.backends.numpy import STEP_OPS

    spec = cells.get(kind)
    layout = spec.layout({"reset_after": True, "units": 4})
    weights = [rng.uniform(-1, 1, shape) for _, shape in layout.shapes(3, 4, use_bias=True)]
    b_in, b_rec = layout.bias_parts(weights[2])
    w = cells.StepWeights(weights[0], weights[1], None, b_rec)
    config = {**spec.defaults(), "units": 4}
    xp = rng.normal(size=(2, 3)) @ weights[0] + b_in
    states = [rng.uniform(-1, 1, (2, 4)) for _ in spec.states]
    apart = spec.step(STEP_OPS, config, xp, cells.recurrent_product(w, 4, spec.n_gates), states)
    summed_in = xp + cells.recurrent_product(w, 4, spec.n_gates)(states[0], 0, spec.n_gates)
    nothing = lambda h, start, stop: np.zeros((h.shape[0], 4 * (stop - start)))  # noqa: E731
    summed = spec.step(STEP_OPS, config, summed_in, nothing, states)
    pairs = zip([apart[0], *apart[1]], [summed[0], *summed[1]], strict=True)
    same = all(np.allclose(a, b, rtol=0, atol=1e-12) for a, b in pairs)
    assert spec.sums_recurrent == (kind != "GRUCell")
    assert same == spec.sums_recurrent
