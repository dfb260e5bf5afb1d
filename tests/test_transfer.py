"""Weights between backends and to disk: canonical layout, all-or-nothing writes."""

import itertools
import os

import numpy as np
import pytest
from conftest import BACKENDS, TOL, require
from helpers import make_rnn, max_err, native, numpy, random_states, random_weights

import rnn_xframework as xf
from rnn_xframework import layers

PAIRS = list(itertools.permutations(BACKENDS, 2))


def built_rnn(backend, rng, dtype="float64", order="timestep"):
    rnn = make_rnn(backend, 2, 6, dtype, return_sequences=True, return_state=True, order=order)
    rnn.build((None, None, 5))
    rnn.set_weights(random_weights(rng, [5, 6], 6, dtype))
    return rnn


def run(rnn, backend, x, states):
    y, s = rnn(native(backend, x), [[native(backend, a) for a in layer] for layer in states])
    return numpy(backend, y), [numpy(backend, layer[0]) for layer in s]


@pytest.mark.parametrize("src,dst", PAIRS)
def test_transfer_between_backends_gives_same_outputs(src, dst, rng):
    require(src), require(dst)
    a = built_rnn(src, rng)
    b = make_rnn(dst, 2, 6, "float64", return_sequences=True, return_state=True, order="layer")
    assert xf.transfer_weights(a, b) is b
    x = rng.normal(size=(3, 4, 5))
    states = random_states(rng, 2, 3, 6, "float64")
    (ya, sa), (yb, sb) = run(a, src, x, states), run(b, dst, x, states)
    assert max_err(ya, yb) <= TOL["float64"]
    assert max_err(sa[1], sb[1]) <= TOL["float64"]
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize("src,dst", PAIRS)
def test_convert_makes_the_same_structure(src, dst, rng):
    require(src), require(dst)
    a = built_rnn(src, rng, order="layer")
    b = xf.convert(a, backend=dst)
    assert b.backend == dst and b.order == "layer" and b.return_sequences and b.return_state
    assert isinstance(b, layers.RNN) and len(b.cells) == 2
    x = rng.normal(size=(3, 4, 5))
    states = random_states(rng, 2, 3, 6, "float64")
    assert max_err(run(a, src, x, states)[0], run(b, dst, x, states)[0]) <= TOL["float64"]
    cell = xf.convert(a.cells[0], dst)
    assert isinstance(cell, layers.SimpleRNNCell) and cell.backend == dst
    stack = xf.convert(a.cell, dst, dtype="float32")
    assert isinstance(stack, layers.StackedRNNCells) and stack.dtype_name == "float32"


@pytest.mark.parametrize("src,dst", PAIRS)
def test_convert_of_an_unbuilt_object_says_build_it_first(src, dst):
    """An unbuilt source has no weights: a typed error at convert time, not an unbuilt copy that
    fails later (or draws weights of its own)."""
    require(src), require(dst)
    rnn = make_rnn(src, 2, 6, "float32")
    for obj, how in ((rnn, r"rnn\.build\(\(None, None, features\)\)"), (rnn.cells[0], r"cell\.build")):
        with pytest.raises(xf.NotBuiltError, match=f"not built yet.*{how}"):
            xf.convert(obj, backend=dst)
    assert isinstance(xf.NotBuiltError("x"), xf.WeightsError)
    assert rnn.cells[0].input_dim is None  # the source is left as it was


def test_torch_bias_mapping(rng):
    require("torch")
    import torch

    w = random_weights(rng, [3], 4, "float32")
    cell = layers.SimpleRNNCell(4, backend="torch")
    cell.set_weights(w)
    np.testing.assert_array_equal(cell.cell.bias_ih.detach().numpy(), w[2])
    assert not cell.cell.bias_hh.detach().numpy().any()
    assert not cell.cell.bias_hh.requires_grad  # Keras has one bias: the second stays frozen
    assert len(cell.trainable_variables) == 3
    np.testing.assert_array_equal(cell.cell.weight_ih.detach().numpy(), w[0].T)
    with torch.no_grad():
        cell.cell.bias_hh.fill_(0.25)
    np.testing.assert_allclose(cell.get_weights()[2], w[2] + 0.25)
    both = layers.SimpleRNNCell(4, backend="torch", train_recurrent_bias=True)
    both.build((None, 3))
    assert both.cell.bias_hh.requires_grad and len(both.trainable_variables) == 4


def test_torch_cell_is_a_real_module(rng):
    require("torch")
    import torch

    rnn = built_rnn("torch", rng)
    assert isinstance(rnn, torch.nn.Module)
    state = rnn.state_dict()
    assert "cell.cells.0.cell.weight_ih" in state
    other = built_rnn("torch", np.random.default_rng(99))
    other.load_state_dict(state)
    for wa, wb in zip(rnn.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    optimizer = torch.optim.SGD(rnn.parameters(), lr=0.1)
    y, _ = rnn(torch.ones(2, 3, 5, dtype=torch.float64))
    y.sum().backward()
    optimizer.step()
    assert not np.array_equal(rnn.get_weights()[0], other.get_weights()[0])


def test_tensorflow_cell_is_a_keras_layer_usable_in_tf_function(rng):
    require("tensorflow")
    import keras
    import tensorflow as tf

    rnn = built_rnn("tensorflow", rng, dtype="float32")
    assert isinstance(rnn, keras.layers.Layer) and isinstance(rnn.cells[0], keras.layers.SimpleRNNCell)
    x = tf.constant(rng.normal(size=(2, 4, 5)).astype("float32"))
    eager = rnn(x)[0]
    traced = tf.function(lambda t: rnn(t)[0])(x)
    assert max_err(eager, traced) <= TOL["float32"]
    assert len(rnn.trainable_variables) == 6


@pytest.mark.parametrize("src,dst", [(a, b) for a in BACKENDS for b in BACKENDS])
def test_save_and_load_round_trip(src, dst, rng, tmp_path):
    require(src), require(dst)
    a = built_rnn(src, rng)
    path = xf.save_weights(a, tmp_path / "model")
    assert path.endswith("model.npz") and os.path.exists(path)
    with np.load(path, allow_pickle=False) as f:  # never pickled
        assert "cells.1.recurrent_kernel" in f.files and f["cells.0.kernel"].shape == (5, 6)
    b = make_rnn(dst, 2, 6, "float64")
    xf.load_weights(b, path)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_load_rejects_a_file_of_another_shape_and_keeps_weights(backend, rng, tmp_path):
    path = xf.save_weights(built_rnn(backend, rng), tmp_path / "a.npz")
    cells = [layers.SimpleRNNCell(6, backend=backend, dtype="float64"), layers.SimpleRNNCell(7, backend=backend)]
    other = layers.RNN(cells)
    other.build((None, None, 5))
    before = other.get_weights()
    with pytest.raises(xf.WeightsError, match="units=7"):
        xf.load_weights(other, path)
    for wa, wb in zip(before, other.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(xf.WeightsError, match="not an rnn_xframework weight file"):
        xf.load_weights(other, tmp_path / "junk.npz")


def test_failed_save_leaves_no_file(rng, tmp_path, monkeypatch):
    rnn = built_rnn("numpy", rng)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        xf.save_weights(rnn, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", ["count", "shape", "second cell"])
def test_failed_set_weights_changes_nothing(backend, rng, bad):
    rnn = built_rnn(backend, rng)
    before = rnn.get_weights()
    weights = [w + 1 for w in before]
    if bad == "count":
        weights = weights[:-1]
    elif bad == "shape":
        weights[0] = weights[0][:-1]
    else:
        weights[4] = np.zeros((7, 6))
    with pytest.raises(xf.WeightsError):
        rnn.set_weights(weights)
    with pytest.raises(xf.WeightsError):
        rnn.cells[0].set_weights(weights[3:])
    for wa, wb in zip(before, rnn.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)


def test_transfer_between_different_stacks_changes_nothing(backend, rng):
    a = built_rnn("numpy", rng)
    b = make_rnn(backend, 3, 6, "float64")
    b.build((None, None, 5))
    before = b.get_weights()
    with pytest.raises(xf.WeightsError, match="structures differ"):
        xf.transfer_weights(a, b)
    c = make_rnn(backend, 2, 6, "float64")
    c.build((None, None, 9))  # same units, other input size
    before_c = c.get_weights()
    with pytest.raises(xf.WeightsError, match="kernel"):
        xf.transfer_weights(a, c)
    for wa, wb in zip(before + before_c, b.get_weights() + c.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
