"""LSTMCell and GRUCell on every backend: the NumPy reference, transfers in every direction, and
the configurations PyTorch cannot hold. Whole sequences against Keras and PyTorch called directly,
for every cell type: tests/test_stacks.py."""

import itertools

import numpy as np
import pytest
from conftest import BACKENDS, TOL, require
from helpers import (
    KINDS,
    N_STATES,
    chapter_problem,
    make_cells,
    max_err,
    native,
    numpy,
    random_cell_states,
    random_cell_weights,
    to_native_states,
)

import rnn_xframework as xf
from rnn_xframework import layers, layouts

GATED = ["LSTMCell", "GRUCell"]


@pytest.mark.parametrize("kind", GATED)
def test_step_matches_reference(backend, dtype, rng, kind):
    ref = getattr(layers, kind)(5, backend="numpy", dtype=dtype)
    cell = getattr(layers, kind)(5, backend=backend, dtype=dtype)
    weights = random_cell_weights(rng, kind, [7], 5, dtype)
    ref.set_weights(weights), cell.set_weights(weights)
    x = rng.normal(size=(3, 7)).astype(dtype)
    states = random_cell_states(rng, kind, 1, 3, 5, dtype)[0]
    want, want_states = ref(x, states)
    got, got_states = cell(native(backend, x), [native(backend, s) for s in states])
    assert isinstance(got_states, list) and len(got_states) == N_STATES[kind]
    assert max_err(numpy(backend, got), want) <= TOL[dtype]
    for g, w in zip(got_states, want_states, strict=True):
        assert max_err(numpy(backend, g), w) <= TOL[dtype]
    for g, w in zip(cell.get_weights(), weights, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=TOL[dtype] / 10)
    assert isinstance(cell, getattr(layers, kind)) and isinstance(cell, xf.Cell)


def test_numpy_reference_is_the_textbook_math(rng):
    """The oracle itself, against the formulas written out here (float64)."""
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    x, h, c = rng.normal(size=(2, 3)), rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    k, u, b = random_cell_weights(rng, "LSTMCell", [3], 4, "float64")
    z = x @ k + h @ u + b
    c1 = sig(z[:, 4:8]) * c + sig(z[:, :4]) * np.tanh(z[:, 8:12])
    h1 = sig(z[:, 12:]) * np.tanh(c1)
    lstm = layers.LSTMCell(4, backend="numpy", dtype="float64")
    lstm.set_weights([k, u, b])
    out, (gh, gc) = lstm(x, [h, c])
    np.testing.assert_array_equal(gh, out)
    assert max_err(out, h1) <= 1e-15 and max_err(gc, c1) <= 1e-15
    k, u, b = random_cell_weights(rng, "GRUCell", [3], 4, "float64")
    xz, hz = x @ k + b[0], h @ u + b[1]
    zg, r = sig(xz[:, :4] + hz[:, :4]), sig(xz[:, 4:8] + hz[:, 4:8])
    want = zg * h + (1 - zg) * np.tanh(xz[:, 8:] + r * hz[:, 8:])
    gru = layers.GRUCell(4, backend="numpy", dtype="float64")
    gru.set_weights([k, u, b])
    assert max_err(gru(x, [h])[0], want) <= 1e-15


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("src,dst", list(itertools.permutations(BACKENDS, 2)))
def test_transfer_and_convert_every_direction(src, dst, rng, kind):
    require(src), require(dst)
    x, weights, states = chapter_problem(rng, kind, "float64", (3, 5, 4, 6, 2))
    a = layers.RNN(make_cells(src, kind, 2, 6, "float64"), return_sequences=True)
    a.build((None, None, 4))
    a.set_weights(weights)
    b = layers.RNN(make_cells(dst, kind, 2, 6, "float64"), return_sequences=True, order="layer")
    xf.transfer_weights(a, b)
    c = xf.convert(a, dst)
    ya = numpy(src, a(native(src, x), to_native_states(src, states)))
    for other in (b, c):
        assert max_err(numpy(dst, other(native(dst, x), to_native_states(dst, states))), ya) <= TOL["float64"]
        for wa, wb in zip(a.get_weights(), other.get_weights(), strict=True):
            np.testing.assert_array_equal(wa, wb)


def test_gru_reset_before_runs_everywhere_but_has_no_torch_nn_form(rng):
    """Keras's ``reset_after=False`` GRU runs on every backend (on torch with the library's own
    parameters, refused there before); ``torch.nn`` has no such cell, so exporting to it raises."""
    require("tensorflow"), require("torch")
    w = random_cell_weights(rng, "GRUCell", [3], 4, "float64", reset_after=False)
    ref = layers.GRUCell(4, backend="numpy", dtype="float64", reset_after=False)
    ref.set_weights(w)
    assert w[2].shape == (12,)
    tf_cell = xf.convert(ref, "tensorflow")
    x, h = rng.normal(size=(2, 3)), rng.normal(size=(2, 4))
    assert max_err(tf_cell(native("tensorflow", x), [native("tensorflow", h)])[0], ref(x, [h])[0]) <= 1e-12
    torch_cell = xf.convert(ref, "torch")
    got = torch_cell(native("torch", x), [native("torch", h)])[0]
    assert max_err(numpy("torch", got), ref(x, [h])[0]) <= 1e-12
    with pytest.raises(xf.UnsupportedConfigError, match="reset_after"):
        xf.to_torch(ref)
    with pytest.raises(xf.UnsupportedConfigError, match="no PyTorch equivalent"):
        layouts.get("GRUCell(reset_after=False)").to_torch(w)
    with pytest.raises(xf.WeightsError, match="structures differ"):
        xf.transfer_weights(ref, layers.GRUCell(4, backend="numpy", dtype="float64"))


@pytest.mark.parametrize(
    "kind,kw", [("LSTMCell", {"activation": "relu"}), ("GRUCell", {"recurrent_activation": "tanh"})]
)
def test_activations_torch_cannot_express(rng, kind, kw):
    require("torch"), require("tensorflow")
    ref = getattr(layers, kind)(4, backend="numpy", dtype="float64", **kw)
    ref.build((None, 3))
    with pytest.raises(xf.UnsupportedConfigError, match=r"torch\.nn"):
        xf.convert(ref, "torch")
    held = xf.convert(ref, "tensorflow")
    x = rng.normal(size=(2, 3))
    s = ref.get_initial_state(2)
    assert max_err(held(native("tensorflow", x), [native("tensorflow", t) for t in s])[0], ref(x, s)[0]) <= 1e-12


def test_bias_on_one_side_only_is_refused(rng):
    a = layers.LSTMCell(4, backend="numpy", use_bias=False)
    a.build((None, 3))
    with pytest.raises(xf.WeightsError, match="structures differ"):
        xf.transfer_weights(a, layers.LSTMCell(4, backend="numpy"))


def test_torch_bias_mapping_for_gated_cells(rng):
    require("torch")
    lstm = layers.LSTMCell(4, backend="torch", dtype="float64")
    w = random_cell_weights(rng, "LSTMCell", [3], 4, "float64")
    lstm.set_weights(w)
    np.testing.assert_array_equal(lstm.cell.bias_ih.detach().numpy(), w[2])
    assert not lstm.cell.bias_hh.detach().numpy().any() and not lstm.cell.bias_hh.requires_grad
    gru = layers.GRUCell(4, backend="torch", dtype="float64")
    w = random_cell_weights(rng, "GRUCell", [3], 4, "float64")
    gru.set_weights(w)
    zr = lambda a: np.concatenate([a[4:8], a[:4], a[8:]])  # noqa: E731 - Keras z,r,h -> torch r,z,n
    np.testing.assert_array_equal(gru.cell.bias_ih.detach().numpy(), zr(w[2][0]))
    np.testing.assert_array_equal(gru.cell.bias_hh.detach().numpy(), zr(w[2][1]))
    np.testing.assert_array_equal(gru.cell.weight_ih.detach().numpy(), zr(w[0].T))
    assert gru.cell.bias_hh.requires_grad and len(gru.trainable_variables) == 4


@pytest.mark.parametrize("kind", GATED)
def test_initial_state_initialization_and_bare_tensor(backend, kind):
    cell = getattr(layers, kind)(16, backend=backend)
    cell.build((None, 32))
    kernel, recurrent, bias = cell.get_weights()
    g = kernel.shape[1] // 16
    limit = np.sqrt(6 / (32 + 16 * g))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > limit / 2
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(16), atol=1e-5)
    if kind == "LSTMCell":  # unit_forget_bias
        np.testing.assert_array_equal(bias, np.r_[np.zeros(16), np.ones(16), np.zeros(32)])
    else:
        assert bias.shape == (2, 48) and not bias.any()
    s = cell.get_initial_state(2)
    assert len(s) == N_STATES[kind] and all(numpy(backend, t).shape == (2, 16) for t in s)
    x = native(backend, np.ones((2, 32), "float32"))
    if kind == "LSTMCell":
        with pytest.raises(xf.StateStructureError, match="bare tensor"):
            cell(x, s[0])
    else:
        assert numpy(backend, cell(x, s[0])[0]).shape == (2, 16)


@pytest.mark.parametrize("kind", GATED)
def test_gradients_torch_match_tensorflow(rng, kind):
    require("torch"), require("tensorflow")
    import tensorflow as tf
    import torch

    x, weights, states = chapter_problem(rng, kind, "float64", (3, 6, 5, 4, 2))
    t = layers.RNN(make_cells("torch", kind, 2, 4, "float64"), return_sequences=True)
    k = layers.RNN(make_cells("tensorflow", kind, 2, 4, "float64"), return_sequences=True)
    for r in (t, k):
        r.build((None, None, 5)), r.set_weights(weights)
    t(torch.from_numpy(x), to_native_states("torch", states)).pow(2).sum().backward()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(k(tf.constant(x), to_native_states("tensorflow", states)) ** 2)
    tf_grads = [g.numpy() for g in tape.gradient(loss, [v for c in k.cells for v in c.trainable_variables])]
    layout = layouts.get(kind)
    torch_grads = []
    for c in t.cells:
        params = dict(c.cell.named_parameters())
        grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)).numpy() for n, p in params.items()}
        torch_grads += layout.from_torch(grads)
    for a, b in zip(torch_grads, tf_grads, strict=True):
        assert max_err(a, b) <= 1e-12
