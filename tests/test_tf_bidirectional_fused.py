"""``xf.compile(Bidirectional, "tf.function" | "xla")`` on TensorFlow, both directions and the merge in
one graph (``graph_bidirectional.py``), against the uncompiled ``Bidirectional`` and Keras's own
(Keras's semantics): outputs, final states and gradients, unmasked, right-padded and with gaps, NaN
in the padding reaching nothing, with and without a recording tape; the calls that defer to the two
compiled RNNs doing so, with the same numbers. Tests that expect the fused call count the compiled
RNNs' own calls (``CompiledRNN.__call__``; a deferred call makes two) and read which per-shape
functions were made. Each direction is a two-layer stack of every cell form."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from conftest import TOL
from helpers import assert_all_close, flat, max_err, random_cell_states, random_cell_weights

import rnn_xframework as xf
from rnn_xframework import layers

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
from rnn_xframework.backends.tensorflow.compile import function, graph_bidirectional  # noqa: E402

BATCH, STEPS, FEATURES, UNITS = 4, 7, 3, 5
CONFIGS = {
    "SimpleRNN": ("SimpleRNNCell", {}),
    "SimpleRNN relu, no bias": ("SimpleRNNCell", {"activation": "relu", "use_bias": False}),
    "LSTM": ("LSTMCell", {}),
    "LSTM hard_sigmoid, no bias": ("LSTMCell", {"recurrent_activation": "hard_sigmoid", "use_bias": False}),
    "GRU": ("GRUCell", {}),
    "GRU reset_after=False": ("GRUCell", {"reset_after": False}),
}
MASKS = {
    "none": None,
    "right-padded": np.arange(STEPS)[None, :] < np.array([STEPS, 3, 0, 5])[:, None],
    "gaps": np.array([[1, 0, 1, 1, 0, 1, 1], [0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0], [0] * STEPS], bool),
}


@pytest.fixture(params=list(CONFIGS))
def config(request):
    return CONFIGS[request.param]


@pytest.fixture(params=["tf.function", "xla"])
def method(request):
    return request.param


@pytest.fixture
def rnn_calls(monkeypatch):
    """A list that grows by one at every call of a compiled TF RNN (the deferred path makes two)."""
    calls = []
    original = function.CompiledRNN.__call__

    def counted(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(function.CompiledRNN, "__call__", counted)
    return calls


def made(fast):
    """The kinds of per-shape functions the fused call made: ``"graph"`` (differentiable) or
    ``"inference"`` (XLA, no tape), one per cached shape."""
    return sorted(key[0] for key in fast._cache().entries)


def make(config, dtype, rng, *, merge_mode="concat", n_layers=2, **kw):
    kind, cell_kw = config
    cells = [getattr(layers, kind)(UNITS, backend="tensorflow", dtype=dtype, **cell_kw) for _ in range(n_layers)]
    bi = layers.Bidirectional(layers.RNN(cells, **kw), merge_mode=merge_mode, input_size=FEATURES)
    weights = []
    for _ in range(2):
        dims = [FEATURES] + [UNITS] * (n_layers - 1)
        w = random_cell_weights(rng, kind, dims, UNITS, dtype, reset_after=cell_kw.get("reset_after", True))
        weights += w if cell_kw.get("use_bias", True) else [a for i, a in enumerate(w) if i % 3 != 2]
    bi.set_weights(weights)
    return bi


def random_states(config, rng, dtype, n_layers=2):
    states = random_cell_states(rng, config[0], 2 * n_layers, BATCH, UNITS, dtype)
    return [[tf.constant(s) for s in layer] for layer in states]


def assert_close(got, want, dtype):
    assert_all_close(got, want, TOL[dtype])


def assert_grads_close(got, want, dtype):
    """Gradients at the stated tolerance relative to their scale (sums over every step)."""
    assert len(got) == len(want) > 0
    for g, w in zip(got, want, strict=True):
        assert g is not None and w is not None
        assert max_err(g.numpy(), w.numpy()) <= TOL[dtype] * max(1.0, float(np.abs(w.numpy()).max()))


@pytest.mark.parametrize("mask", list(MASKS))
def test_fused_call_matches_the_uncompiled(rng, dtype, config, method, mask, rnn_calls):
    check_call(config, dtype, rng, method, "concat", mask, rnn_calls)


@pytest.mark.parametrize("merge_mode", ["sum", "mul", "ave", None])
def test_fused_call_merges_as_the_uncompiled(rng, method, merge_mode, rnn_calls):
    check_call(CONFIGS["LSTM"], "float64", rng, method, merge_mode, "right-padded", rnn_calls)


def check_call(config, dtype, rng, method, merge_mode, mask, rnn_calls):
    """Outputs and final states from given initial states, under a tape and without."""
    bi = make(config, dtype, rng, merge_mode=merge_mode, return_sequences=True, return_state=True)
    fast = xf.compile(bi, method)
    assert isinstance(fast, graph_bidirectional.FusedBidirectional)
    x = tf.constant(rng.normal(size=(BATCH, STEPS, FEATURES)).astype(dtype))
    states = random_states(config, rng, dtype)
    m = MASKS[mask]
    want = bi(x, initial_state=states, mask=m)
    with tf.GradientTape():  # recording: the differentiable function
        assert_close(fast(x, initial_state=states, mask=m), want, dtype)
    assert_close(fast(x, initial_state=states, mask=None if m is None else tf.constant(m)), want, dtype)
    assert rnn_calls == []
    assert made(fast) == (["graph", "inference"] if method == "xla" else ["graph"])


@pytest.mark.parametrize(("return_sequences", "time_major"), [(False, False), (True, True), (False, True)])
@pytest.mark.parametrize("mask", ["none", "right-padded"])
@pytest.mark.parametrize("name", ["LSTM", "GRU reset_after=False"])
def test_fused_flags_match_the_uncompiled(rng, name, method, return_sequences, time_major, mask, rnn_calls):
    """The last output only, and ``time_major`` inputs (``[time, batch, features]``), with the
    zero initial states and with given ones; ``return_state=False``."""
    config = CONFIGS[name]
    bi = make(config, "float64", rng, return_sequences=return_sequences, time_major=time_major)
    fast = xf.compile(bi, method)
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    x = tf.constant(x.transpose(1, 0, 2) if time_major else x)
    states = random_states(config, rng, "float64")
    for kw in ({}, {"initial_state": states}):
        got = fast(x, mask=MASKS[mask], **kw)
        assert not isinstance(got, (list, tuple))
        assert_close(got, bi(x, mask=MASKS[mask], **kw), "float64")
    assert rnn_calls == []


@pytest.mark.parametrize("mask", ["none", "gaps"])
def test_fused_gradients_match_the_uncompiled(rng, dtype, config, method, mask, rnn_calls):
    """Gradients of a weighted loss over the merged output and every final state, with respect to
    the inputs, every initial state and every variable of both RNNs."""
    bi = make(config, dtype, rng, return_sequences=True, return_state=True)
    fast = xf.compile(bi, method)
    x = tf.constant(rng.normal(size=(BATCH, STEPS, FEATURES)).astype(dtype))
    states = random_states(config, rng, dtype)
    w_y = tf.constant(rng.uniform(-1, 1, (BATCH, STEPS, 2 * UNITS)).astype(dtype))
    w_s = [tf.constant(s) for layer in random_cell_states(rng, config[0], 4, BATCH, UNITS, dtype) for s in layer]
    variables = bi.trainable_variables
    assert len(variables) >= 8

    def grads(model):
        with tf.GradientTape() as tape:
            tape.watch([x, *flat(states)])
            y, final = model(x, initial_state=states, mask=MASKS[mask])
            loss = tf.reduce_sum(y * w_y) + sum(tf.reduce_sum(s * w) for s, w in zip(flat(final), w_s, strict=True))
        return [loss, *tape.gradient(loss, [x, *flat(states), *variables])]

    got, want = grads(fast), grads(bi)
    assert_grads_close(got, want, dtype)
    assert rnn_calls == [] and made(fast) == ["graph"]


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("mask", ["right-padded", "gaps"])
def test_nan_in_masked_padding_never_leaks(rng, config, method, mask):
    """NaN / inf at every masked step: outputs, states and every gradient as with zeros there, all
    finite, with and without a tape."""
    bi = make(config, "float64", rng, return_sequences=True, return_state=True)
    fast = xf.compile(bi, method)
    m = MASKS[mask]
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    bad = x.copy()
    rows, steps = np.nonzero(~m)
    for i, (r, t) in enumerate(zip(rows, steps, strict=True)):
        bad[r, t] = (np.nan, np.inf, -np.inf)[i % 3]
    clean, bad = tf.constant(np.where(m[:, :, None], x, 0.0)), tf.constant(bad)
    variables = bi.trainable_variables

    def run(model, x, tape_on):
        if not tape_on:
            return model(x, mask=m), None
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = model(x, mask=m)
            loss = sum(tf.reduce_sum(tf.square(t)) for t in flat(out))
        return out, tape.gradient(loss, [x, *variables])

    want, want_grads = run(bi, clean, True)
    for tape_on in (False, True):
        got, grads = run(fast, bad, tape_on)
        assert all(bool(tf.reduce_all(tf.math.is_finite(t))) for t in flat(got))
        assert_close(got, want, "float64")
    assert all(bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads)
    assert_grads_close(grads, want_grads, "float64")


KERAS_CONFIGS = {  # Keras's own layer for each library form it has
    "SimpleRNN": ("SimpleRNN", {}),
    "LSTM": ("LSTM", {}),
    "GRU": ("GRU", {}),
    "GRU reset_after=False": ("GRU", {"reset_after": False}),
}


@pytest.mark.parametrize("mask", ["none", "right-padded"])
@pytest.mark.parametrize("merge_mode", ["concat", "ave"])
@pytest.mark.parametrize("keras_config", list(KERAS_CONFIGS))
def test_fused_call_matches_keras_bidirectional(rng, method, keras_config, merge_mode, mask, rnn_calls):
    """Keras's ``Bidirectional`` with the same weights, ported by ``xf.from_keras``: outputs,
    final states and the gradients w.r.t. the inputs and every weight (canonical = Keras's layout)."""
    name, kw = KERAS_CONFIGS[keras_config]
    inner = getattr(keras.layers, name)(UNITS, return_sequences=True, return_state=True, dtype="float64", **kw)
    k = keras.layers.Bidirectional(inner, merge_mode=merge_mode, dtype="float64")
    k.build((None, STEPS, FEATURES))
    k.set_weights([rng.uniform(-0.6, 0.6, w.shape) for w in k.get_weights()])
    fast = xf.compile(xf.from_keras(k, backend="tensorflow"), method)
    x = tf.constant(rng.normal(size=(BATCH, STEPS, FEATURES)))
    m = MASKS[mask]
    k_cells = [k.forward_layer.cell, k.backward_layer.cell]
    k_vars = [getattr(c, n) for c in k_cells for n in ("kernel", "recurrent_kernel", "bias")]
    ours = [getattr(c, n) for c in fast.source.cells for n in ("kernel", "recurrent_kernel", "bias")]

    def grads(model, variables):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = model(x, mask=m)
            loss = sum(tf.reduce_sum(t * (0.5 + i)) for i, t in enumerate(flat(out)))
        return out, tape.gradient(loss, [x, *variables])

    want, want_grads = grads(lambda x, mask: k(x, mask=None if mask is None else tf.constant(mask)), k_vars)
    got, got_grads = grads(fast, ours)
    assert_close(got, want, "float64")
    assert_grads_close(got_grads, want_grads, "float64")
    assert_close(fast(x, mask=m), want, "float64")  # no tape
    assert rnn_calls == [] and made(fast) == (["graph", "inference"] if method == "xla" else ["graph"])


def test_weights_set_after_a_call_show(rng, method, rnn_calls):
    """The traced functions read the variables: ``set_weights`` and an optimizer step on the
    source show in the next call, with and without a tape."""
    bi = make(CONFIGS["LSTM"], "float32", rng, return_sequences=True)
    fast = xf.compile(bi, method)
    x = tf.constant(rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32"))
    fast(x)
    bi.set_weights([w * 0.5 for w in bi.get_weights()])
    assert_close(fast(x), bi(x), "float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(fast(x)))
    variables = bi.trainable_variables
    before = bi.get_weights()
    keras.optimizers.SGD(0.1).apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
    assert all(not np.array_equal(a, b) for a, b in zip(bi.get_weights(), before, strict=True))
    assert_close(fast(x), bi(x), "float32")
    with tf.GradientTape():
        assert_close(fast(x), bi(x), "float32")
    assert rnn_calls == []


def test_fused_call_inside_a_user_graph(rng, method, rnn_calls):
    """Called from a user's ``tf.function`` (no eager concrete-function cache): the same numbers."""
    bi = make(CONFIGS["GRU"], "float64", rng, merge_mode=None, return_sequences=True)
    fast = xf.compile(bi, method)
    x = tf.constant(rng.normal(size=(BATCH, STEPS, FEATURES)))
    m = tf.constant(MASKS["gaps"])
    graph = tf.function(lambda x, m: fast(x, mask=m))
    assert_close(graph(x, m), bi(x, mask=m), "float64")
    assert rnn_calls == [] and made(fast)


@pytest.mark.parametrize("case", ["dropout", "unbuilt", "dropout, masked"])
def test_other_calls_run_the_two_compiled_rnns(method, case, rnn_calls):
    """A training call with dropout draws each compiled RNN's masks as the uncompiled RNNs do (two
    objects seeded alike: the same draws), and an unbuilt pair builds on its first call: both run
    the two compiled RNNs, with the uncompiled layer's numbers; an unbuilt pair fuses after."""
    rate = 0.0 if case == "unbuilt" else 0.3
    rng = np.random.default_rng(3)
    weights, pair = None, []
    for _ in range(2):
        cells = [
            layers.LSTMCell(UNITS, backend="tensorflow", dtype="float64", dropout=rate, recurrent_dropout=rate, seed=7)
            for _ in range(2)
        ]
        bi = layers.Bidirectional(layers.RNN(cells, return_sequences=True))
        if case != "unbuilt":
            bi.build((None, None, FEATURES))
            weights = weights or [rng.uniform(-0.6, 0.6, w.shape) for w in bi.get_weights()]
            bi.set_weights(weights)
        pair.append(bi)
    fast = xf.compile(pair[0], method)
    x = tf.constant(rng.normal(size=(BATCH, STEPS, FEATURES)))
    mask = MASKS["gaps"] if case == "dropout, masked" else None
    got = fast(x, mask=mask, training=case != "unbuilt")
    assert len(rnn_calls) == 2 and made(fast) == []
    if case == "unbuilt":
        assert_close(got, pair[0](x), "float64")
        assert_close(fast(x), pair[0](x), "float64")  # built now: the fused call
        assert len(rnn_calls) == 2 and made(fast)
    else:
        assert_close(got, pair[1](x, mask=mask, training=True), "float64")
        assert_close(fast(x, mask=mask), pair[1](x, mask=mask), "float64")  # no dropout at inference: fused
        assert len(rnn_calls) == 2 and made(fast)


def test_unknown_number_of_steps_is_refused_as_the_rnns_refuse(rng, method):
    bi = make(CONFIGS["SimpleRNN"], "float32", rng, return_sequences=True)
    fast = xf.compile(bi, method)
    spec = [tf.TensorSpec([None, None, FEATURES], tf.float32)]
    graph = tf.function(lambda x: fast(x), input_signature=spec, autograph=False)  # autograph would wrap the error
    with pytest.raises(xf.UnsupportedConfigError, match="static number of time steps"):
        graph(tf.zeros([BATCH, STEPS, FEATURES]))


def test_fused_call_refuses_as_the_rnns_do_and_changes_nothing(rng, method, rnn_calls):
    """Each RNN's own checks run first: the same typed errors, nothing traced, no cache entry."""
    bi = make(CONFIGS["GRU"], "float32", rng, return_sequences=True)
    fast = xf.compile(bi, method)
    x = tf.zeros([BATCH, STEPS, FEATURES])
    before = [w.copy() for w in bi.get_weights()]
    with pytest.raises(xf.InputShapeError, match="mask"):
        fast(x, mask=np.ones((BATCH, STEPS + 1), bool))
    with pytest.raises(xf.InputShapeError):
        fast(tf.zeros([BATCH, STEPS, FEATURES + 1]))
    with pytest.raises(xf.StateStructureError):
        fast(x, initial_state=[tf.zeros([BATCH, UNITS])])
    with pytest.raises(xf.DTypeMismatchError):
        fast(tf.zeros([BATCH, STEPS, FEATURES], tf.float64))
    assert made(fast) == [] and rnn_calls == []
    assert all(np.array_equal(a, b) for a, b in zip(bi.get_weights(), before, strict=True))


def test_fused_cache_is_bounded_and_compiles_can_be_capped(rng, method):
    """``cache_size`` bounds the fused call's shapes (and both RNNs'); ``max_compiles`` refuses a
    new shape past the cap, typed, leaving the cache as it was."""
    cell = layers.SimpleRNNCell(2, activation="relu", backend="tensorflow", dtype="float64")  # a structure of its own:
    bi = layers.Bidirectional(layers.RNN([cell], return_sequences=True), input_size=FEATURES)  # caps are shared
    fast = xf.compile(bi, method)
    fast.cache_size = 2
    assert fast.cache_size == 2 and fast.forward_layer.cache_size == fast.backward_layer.cache_size == 2
    for steps in (1, 2, 3, 4):
        x = tf.constant(rng.normal(size=(2, steps, FEATURES)))
        assert_close(fast(x), bi(x), "float64")
    assert fast.cache_info() == {"fused": 2, "size": 2, "compiles": 4}
    try:
        fast.max_compiles = 4
        assert fast.forward_layer.max_compiles == fast.backward_layer.max_compiles == 4
        with pytest.raises(xf.UnsupportedConfigError, match="max_compiles"):
            fast(tf.constant(rng.normal(size=(2, 5, FEATURES))))
        assert fast.cache_info() == {"fused": 2, "size": 2, "compiles": 4}
        x = tf.constant(rng.normal(size=(2, 4, FEATURES)))  # a kept shape still runs
        assert_close(fast(x), bi(x), "float64")
        with pytest.raises(xf.UnsupportedConfigError, match="max_compiles"):
            fast.max_compiles = -1
        assert fast.max_compiles == 4
    finally:
        fast.max_compiles = None


def test_evicted_fused_shapes_are_freed(rng, method):
    """Six shapes through a cache of two, each called under a tape and without: the evicted shapes'
    functions are garbage (the XLA gradient's registrations go with them), the kept ones compute
    the uncompiled layer's numbers, one step included."""
    cell = layers.GRUCell(2, backend="tensorflow", dtype="float64")  # a structure no other test compiles
    bi = layers.Bidirectional(layers.RNN([cell], return_sequences=True), input_size=FEATURES)
    fast = xf.compile(bi, method)
    fast.cache_size = 2
    functions = []
    for steps in range(1, 7):
        x = tf.constant(rng.normal(size=(2, steps, FEATURES)))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fast(x)
        grad = tape.gradient(y, x)
        assert_close(fast(x), bi(x), "float64")
        with tf.GradientTape() as tape:
            tape.watch(x)
            y_want = bi(x)
        assert_grads_close([grad], [tape.gradient(y_want, x)], "float64")
        functions += [weakref.ref(v[0] if isinstance(v, tuple) else v) for v in fast._cache().entries.values()]
    gc.collect()
    assert len({id(r()) for r in functions if r() is not None}) <= 2
