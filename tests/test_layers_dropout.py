"""SimpleRNN/LSTM/GRU layers stacked like keras.Sequential, Keras masking, and Keras dropout
semantics with explicit masks shared between backends."""

import numpy as np
import pytest
from conftest import TOL, require
from helpers import GATES, KINDS, N_STATES, inference_mode, make_cells, max_err, native, numpy, random_cell_weights

from rnn_xframework import layers

LAYER = {"SimpleRNNCell": "SimpleRNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}


def keras_sequential(kind, dtype, weights, features, units, **kw):
    import keras

    cls = getattr(keras.layers, LAYER[kind])
    stack = [cls(units, return_sequences=True, dtype=dtype, **kw), cls(units, dtype=dtype, **kw)]
    model = keras.Sequential([keras.Input((None, features), dtype=dtype), *stack])
    model.set_weights(weights)
    return model


@pytest.mark.parametrize("kind", KINDS)
def test_stack_of_layers_matches_keras_sequential(backend, dtype, rng, kind):
    require("tensorflow")
    x = rng.normal(size=(4, 80, 100)).astype(dtype)
    weights = random_cell_weights(rng, kind, [100, 64], 64, dtype)
    want = keras_sequential(kind, dtype, weights, 100, 64)(x)
    cls = getattr(layers, LAYER[kind])
    first, second = (
        cls(64, return_sequences=True, backend=backend, dtype=dtype),
        cls(64, backend=backend, dtype=dtype),
    )
    first.build((None, None, 100)), second.build((None, None, 64))
    first.set_weights(weights[:3]), second.set_weights(weights[3:])
    assert isinstance(first, cls) and isinstance(first, layers.RNN)
    x_in = native(backend, x)
    y = x_in
    for layer in [first, second]:  # applied in sequence, like keras.Sequential (layer-major)
        y = layer(y)
    assert max_err(numpy(backend, y), want) <= TOL[dtype], backend
    stacked = layers.RNN(make_cells(backend, kind, 2, 64, dtype), order="timestep")  # the other ordering
    stacked.build((None, None, 100))
    stacked.set_weights(weights)
    assert max_err(numpy(backend, stacked(x_in)), want) <= TOL[dtype], backend


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("go_backwards", [False, True])
def test_mask_matches_keras(backend, rng, kind, go_backwards):
    require("tensorflow")
    import keras

    x = rng.normal(size=(3, 9, 5))
    mask = rng.random((3, 9)) > 0.35
    mask[0, :3] = False  # masked first steps: Keras outputs zeros until the first real step
    mask[1, -2:] = False  # masked last steps: the state is carried to the end
    weights = random_cell_weights(rng, kind, [5, 6], 6, "float64")
    cls = getattr(keras.layers, LAYER[kind])
    k1 = cls(6, return_sequences=True, return_state=True, go_backwards=go_backwards, dtype="float64")
    k2 = cls(6, return_sequences=True, go_backwards=go_backwards, dtype="float64")
    k1.build((None, None, 5)), k2.build((None, None, 6))
    k1.set_weights(weights[:3]), k2.set_weights(weights[3:])
    y1, *s1 = k1(x, mask=mask)
    want = k2(y1, mask=mask[:, ::-1] if go_backwards else mask)
    ours = [
        getattr(layers, LAYER[kind])(6, True, True, go_backwards, backend=backend, dtype="float64") for _ in range(2)
    ]
    ours[0].build((None, None, 5)), ours[1].build((None, None, 6))
    ours[0].set_weights(weights[:3]), ours[1].set_weights(weights[3:])
    g1, (state,) = ours[0](native(backend, x), mask=mask)
    assert max_err(numpy(backend, g1), y1) <= 1e-12
    assert all(max_err(numpy(backend, a), b) <= 1e-12 for a, b in zip(state, s1, strict=True))
    g2, _ = ours[1](g1, mask=mask[:, ::-1] if go_backwards else mask)
    assert max_err(numpy(backend, g2), want) <= 1e-12, backend


@pytest.mark.parametrize("order", ["timestep", "layer"])
def test_mask_same_in_both_orderings(backend, rng, order):
    x = rng.normal(size=(2, 6, 3))
    mask = np.array([[1, 1, 0, 1, 0, 0], [0, 1, 1, 1, 1, 0]], bool)
    rnn = layers.RNN(make_cells(backend, "LSTMCell", 2, 4, "float64"), return_sequences=True, order=order)
    rnn.build((None, None, 3))
    rnn.set_weights(random_cell_weights(rng, "LSTMCell", [3, 4], 4, "float64"))
    y = numpy(backend, rnn(native(backend, x), mask=mask))
    np.testing.assert_array_equal(y[0, 2], y[0, 1])  # a masked step repeats the previous output
    np.testing.assert_array_equal(y[1, 0], np.zeros(4))  # zeros before the first real step
    ref = layers.RNN(make_cells("numpy", "LSTMCell", 2, 4, "float64"), return_sequences=True, order="timestep")
    ref.build((None, None, 3)), ref.set_weights(rnn.get_weights())
    assert max_err(y, ref(x, mask=mask)) <= 1e-12


def shared_masks(rng, kind, n, batch, dims, units, rate, rec_rate):
    """The same explicit masks for every backend: 0 or 1/(1-rate), one per gate when Keras
    uses one per gate."""
    count = GATES[kind] if rec_rate > 0 else 1
    out = []
    for dim in dims[:n]:
        ins = [(rng.random((batch, dim)) >= rate) / (1 - rate) for _ in range(count)] if rate else None
        recs = [(rng.random((batch, units)) >= rec_rate) / (1 - rec_rate) for _ in range(count)] if rec_rate else None
        out.append((ins, recs))
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rates", [(0.3, 0.0), (0.0, 0.4), (0.25, 0.5)])
def test_dropout_parity_with_keras_using_the_same_masks(backend, rng, kind, rates):
    require("tensorflow")
    import keras

    rate, rec_rate = rates
    x = rng.normal(size=(4, 12, 7))
    weights = random_cell_weights(rng, kind, [7, 5], 5, "float64")
    masks = shared_masks(rng, kind, 2, 4, [7, 5], 5, rate, rec_rate)
    kcells = [
        getattr(keras.layers, kind)(5, dropout=rate, recurrent_dropout=rec_rate, dtype="float64") for _ in range(2)
    ]
    krnn = keras.layers.RNN(
        keras.layers.StackedRNNCells(kcells, dtype="float64"), return_sequences=True, dtype="float64"
    )
    krnn.build((None, None, 7))
    for i, c in enumerate(kcells):
        c.set_weights(weights[3 * i : 3 * i + 3])
        # Keras reads its cached masks: the single-mask form, or a list per gate
        ins, recs = masks[i]
        count = getattr(c, "dropout_mask_count", None)
        c._dropout_mask = None if ins is None else (ins if count else ins[0])
        c._recurrent_dropout_mask = None if recs is None else (recs if count else recs[0])
    want = krnn(x, training=True)
    assert getattr(kcells[0], "_dropout_mask", None) is None  # Keras resets after the call
    cells = make_cells(backend, kind, 2, 5, "float64", dropout=rate, recurrent_dropout=rec_rate)
    rnn = layers.RNN(cells, return_sequences=True)
    rnn.build((None, None, 7))
    rnn.set_weights(weights)
    for cell, (ins, recs) in zip(cells, masks, strict=True):
        cell.set_dropout_masks(inputs=ins, recurrent=recs)
        got_in, got_rec = cell.get_dropout_masks()
        assert (got_in is None) == (ins is None) and (got_rec is None) == (recs is None)
    y = rnn(native(backend, x), training=True)
    assert max_err(numpy(backend, y), want) <= 1e-12, backend
    assert cells[0].get_dropout_masks() == (None, None)  # reset after the call, as Keras
    plain = numpy(backend, inference_mode(rnn)(native(backend, x)))  # training=None: inference, no dropout
    nodrop = layers.RNN(make_cells("numpy", kind, 2, 5, "float64"), return_sequences=True)
    nodrop.build((None, None, 7)), nodrop.set_weights(weights)
    assert max_err(plain, nodrop(x)) <= 1e-12


@pytest.mark.parametrize("kind", KINDS)
def test_one_mask_per_sequence_until_reset(backend, rng, kind):
    rate = 0.5
    cell = getattr(layers, kind)(8, backend=backend, dtype="float64", dropout=rate, recurrent_dropout=rate)
    cell.build((None, 6))
    x = native(backend, rng.normal(size=(5, 6)))
    state = cell.get_initial_state(5)
    cell(x, state, training=True)
    first = cell.get_dropout_masks()
    assert len(first[0]) == len(first[1]) == (1 if kind == "SimpleRNNCell" else 3 + (kind == "LSTMCell"))
    values = np.unique(np.concatenate([numpy(backend, m).ravel() for m in first[0] + first[1]]))
    np.testing.assert_array_equal(values, [0.0, 1 / (1 - rate)])  # inverted scaling
    a, _ = cell(x, state, training=True)
    b, _ = cell(x, state, training=True)
    np.testing.assert_array_equal(numpy(backend, a), numpy(backend, b))  # the same masks, step after step
    assert all(m1 is m2 for m1, m2 in zip(first[0], cell.get_dropout_masks()[0], strict=True))
    cell.reset_dropout_mask(), cell.reset_recurrent_dropout_mask()
    c, _ = cell(x, state, training=True)
    assert not np.array_equal(numpy(backend, a), numpy(backend, c))  # new draw after reset
    for training in (None, False):
        assert N_STATES[kind] == len(cell(x, state, training=training)[1])
    inf, _ = inference_mode(cell)(x, state)
    inf2, _ = cell(x, state, training=False)
    np.testing.assert_array_equal(numpy(backend, inf), numpy(backend, inf2))


def test_set_dropout_masks_checks_its_arguments(backend):
    from rnn_xframework.errors import UnsupportedConfigError

    cell = layers.LSTMCell(3, backend=backend, dropout=0.2, recurrent_dropout=0.2)
    cell.build((None, 2))
    with pytest.raises(UnsupportedConfigError, match="expected a list of 4"):
        cell.set_dropout_masks(inputs=[np.ones((1, 2))])
    plain = layers.GRUCell(3, backend=backend)
    with pytest.raises(UnsupportedConfigError, match="dropout is 0"):
        plain.set_dropout_masks(inputs=[np.ones((1, 2))])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        layers.SimpleRNNCell(3, backend=backend, dropout=1.0)
