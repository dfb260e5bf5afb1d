"""Stacks and whole sequences: both orderings, every backend, the NumPy reference, and Keras and
PyTorch called directly with the same weights (every cell type)."""

import numpy as np
import pytest
from conftest import TOL, require
from helpers import (
    KINDS,
    N_STATES,
    chapter_problem,
    make_rnn,
    max_err,
    native,
    numpy,
    random_states,
    random_weights,
    run_rnn,
)

from rnn_xframework import layers, layouts

TUTORIAL = (4, 80, 100, 64, 2)
TORCH_MODULES = {"SimpleRNNCell": "RNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}  # torch.nn class names
SIZES = [TUTORIAL, (1, 3, 2, 5, 1), (7, 11, 9, 4, 3), (2, 1, 6, 6, 2)]


def reference(x, weights, states, n_layers):
    """The tutorial's timestep-major loop, written out in NumPy (independent of the library)."""
    units = weights[1].shape[0]
    h = [s[0] for s in states]
    outputs = []
    for t in range(x.shape[1]):
        inp = x[:, t]
        for i in range(n_layers):
            k, r, b = weights[3 * i : 3 * i + 3]
            h[i] = np.tanh(inp @ k + b + h[i] @ r)
            inp = h[i]
        outputs.append(inp)
    assert outputs[-1].shape[1] == units
    return np.stack(outputs, 1), [[s] for s in h]


def problem(rng, sizes, dtype):
    batch, steps, features, units, n_layers = sizes
    x = rng.normal(size=(batch, steps, features)).astype(dtype)
    weights = random_weights(rng, [features] + [units] * (n_layers - 1), units, dtype)
    states = random_states(rng, n_layers, batch, units, dtype)
    return x, weights, states


@pytest.mark.parametrize("order", ["timestep", "layer"])
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_sequence_matches_reference(backend, dtype, rng, order, sizes):
    x, weights, states = problem(rng, sizes, dtype)
    want_y, want_states = reference(x, weights, states, sizes[4])
    rnn = make_rnn(backend, sizes[4], sizes[3], dtype, return_sequences=True, return_state=True, order=order)
    rnn.build((None, None, sizes[2]))
    rnn.set_weights(weights)
    y, got_states = rnn(native(backend, x), [[native(backend, s) for s in layer] for layer in states])
    assert max_err(numpy(backend, y), want_y) <= TOL[dtype]
    assert isinstance(got_states, list) and all(isinstance(s, list) and len(s) == 1 for s in got_states)
    for got, want in zip(got_states, want_states, strict=True):
        assert max_err(numpy(backend, got[0]), want[0]) <= TOL[dtype]


def test_orderings_agree_with_each_other(backend, rng):
    x, weights, states = problem(rng, TUTORIAL, "float64")
    outs = []
    for order in ("timestep", "layer"):
        rnn = make_rnn(backend, 2, 64, "float64", return_sequences=True, order=order)
        rnn.build((None, None, 100))
        rnn.set_weights(weights)
        outs.append(numpy(backend, rnn(native(backend, x), [[native(backend, s[0])] for s in states])))
    assert max_err(*outs) <= TOL["float64"]


def test_return_flags_and_default_state(backend, rng):
    x = rng.normal(size=(3, 6, 4)).astype("float32")
    last = make_rnn(backend, 2, 5, "float32")
    last.build((None, None, 4))
    seq = make_rnn(backend, 2, 5, "float32", return_sequences=True, return_state=True)
    seq.build((None, None, 4))
    seq.set_weights(last.get_weights())
    y_last = numpy(backend, last(native(backend, x)))
    y_seq, states = seq(native(backend, x))
    assert y_last.shape == (3, 5) and numpy(backend, y_seq).shape == (3, 6, 5)
    np.testing.assert_array_equal(numpy(backend, y_seq)[:, -1], y_last)
    assert [len(s) for s in states] == [1, 1]
    np.testing.assert_array_equal(numpy(backend, states[1][0]), y_last)


def test_go_backwards_is_the_reversed_sequence(backend, rng):
    x = rng.normal(size=(2, 5, 3)).astype("float64")
    fwd = make_rnn(backend, 2, 4, "float64", return_sequences=True)
    fwd.build((None, None, 3))
    back = make_rnn(backend, 2, 4, "float64", return_sequences=True, go_backwards=True)
    back.build((None, None, 3))
    back.set_weights(fwd.get_weights())
    want = numpy(backend, fwd(native(backend, x[:, ::-1].copy())))
    assert max_err(numpy(backend, back(native(backend, x))), want) <= TOL["float64"]


def test_one_layer_stack_state_is_not_unwrapped(backend):
    stack = layers.StackedRNNCells([layers.SimpleRNNCell(3, backend=backend)])
    states = stack.get_initial_state(2)
    assert isinstance(states, list) and len(states) == 1 and isinstance(states[0], list)
    _, new = stack(native(backend, np.ones((2, 4), "float32")), states)
    assert len(new) == 1 and isinstance(new[0], list) and len(new[0]) == 1
    out2, _ = stack(native(backend, np.ones((2, 4), "float32")), new)  # its own output feeds back
    assert numpy(backend, out2).shape == (2, 3)


def test_stack_is_a_cell_equal_to_its_cells_in_sequence(backend, rng):
    cells = [layers.SimpleRNNCell(4, backend=backend, dtype="float64") for _ in range(2)]
    stack = layers.StackedRNNCells(cells)
    stack.build((None, 3))
    stack.set_weights(random_weights(rng, [3, 4], 4, "float64"))
    assert stack.state_size == [4, 4] and stack.units == 4
    x = native(backend, rng.normal(size=(2, 3)))
    out, states = stack(x, stack.get_initial_state(2))
    h0, s0 = cells[0](x, cells[0].get_initial_state(2))
    h1, _ = cells[1](h0, cells[1].get_initial_state(2))
    np.testing.assert_array_equal(numpy(backend, out), numpy(backend, h1))
    np.testing.assert_array_equal(numpy(backend, states[0][0]), numpy(backend, s0[0]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("order", ["timestep", "layer"])
def test_chapter_sequence_every_backend_matches_keras_itself(backend, dtype, rng, kind, order):
    """The book's stack (2 layers, 64 units, 80 steps) of each cell type on every backend gives what
    Keras's own ``RNN(StackedRNNCells)`` gives, and what the chapter's loop over raw Keras cells gives."""
    require("tensorflow")
    import keras

    x, weights, states = chapter_problem(rng, kind, dtype)
    keras_cells = [getattr(keras.layers, kind)(64, dtype=dtype) for _ in range(2)]
    # An explicit float64 stack: keras.layers.RNN(list_of_cells) wraps them in a float32
    # StackedRNNCells that casts float64 inputs down to float32 (Keras 3.15).
    stacked = keras.layers.StackedRNNCells(keras_cells, dtype=dtype)
    keras_rnn = keras.layers.RNN(stacked, return_sequences=True, return_state=True, dtype=dtype)
    keras_rnn.build((None, None, 100))
    for i, cell in enumerate(keras_cells):
        cell.set_weights(weights[3 * i : 3 * i + 3])
    want_y, *want_states = keras_rnn(x, initial_state=[list(layer) for layer in states])
    # and the chapter's own loop over raw Keras cells
    h = [list(layer) for layer in states]
    for xt in np.moveaxis(x, 1, 0):
        out0, h[0] = keras_cells[0](xt, h[0])
        out1, h[1] = keras_cells[1](out0, h[1])
    y, got_states = run_rnn(backend, kind, dtype, x, weights, states, order)
    assert max_err(y, want_y) <= TOL[dtype], backend
    assert max_err(y[:, -1], out1) <= TOL[dtype], backend
    want_flat = [np.asarray(s) for s in keras.tree.flatten(want_states)]
    got_flat = [s for layer in got_states for s in layer]
    assert len(got_flat) == len(want_flat) == 2 * N_STATES[kind]
    for got, want in zip(got_flat, want_flat, strict=True):
        assert max_err(got, want) <= TOL[dtype], backend


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("order", ["timestep", "layer"])
def test_chapter_sequence_every_backend_matches_pytorch_itself(backend, dtype, rng, kind, order):
    """The same stack gives what PyTorch's multi-layer ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` with the
    same weights gives: outputs and every layer's final states."""
    require("torch")
    import torch

    x, weights, states = chapter_problem(rng, kind, dtype)
    module_class = getattr(torch.nn, TORCH_MODULES[kind])
    module = module_class(100, 64, num_layers=2, batch_first=True, dtype=getattr(torch, dtype))
    layout = layouts.get(kind)
    with torch.no_grad():
        for i in range(2):
            for name, value in layout.to_torch(weights[3 * i : 3 * i + 3]).items():
                getattr(module, f"{name}_l{i}").copy_(torch.from_numpy(value))
    stacked = [torch.from_numpy(np.stack([layer[j] for layer in states])) for j in range(N_STATES[kind])]
    want_y, want_end = module(torch.from_numpy(x), tuple(stacked) if kind == "LSTMCell" else stacked[0])
    want_end = [t.detach().numpy() for t in (want_end if kind == "LSTMCell" else (want_end,))]
    y, got_states = run_rnn(backend, kind, dtype, x, weights, states, order)
    assert max_err(y, want_y.detach()) <= TOL[dtype], backend
    for i, layer in enumerate(got_states):
        for j, got in enumerate(layer):
            assert max_err(got, want_end[j][i]) <= TOL[dtype], backend
