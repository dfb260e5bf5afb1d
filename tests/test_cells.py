"""One cell on every backend against the NumPy reference."""

import numpy as np
import pytest
from conftest import TOL
from helpers import max_err, native, numpy, random_weights

import rnn_xframework as xf
from rnn_xframework import layers


def test_tutorial_cell_api(backend):
    cell = layers.SimpleRNNCell(64, backend=backend)
    cell.build(input_shape=(None, 100))
    assert len(cell.trainable_variables) == 3
    h0 = cell.get_initial_state(batch_size=4)
    assert isinstance(h0, list) and len(h0) == 1 and numpy(backend, h0[0]).shape == (4, 64)
    assert not numpy(backend, h0[0]).any()
    xt = native(backend, np.random.default_rng(0).normal(size=(4, 100)).astype("float32"))
    out, h1 = cell(xt, h0, training=False)
    assert isinstance(h1, list) and len(h1) == 1
    assert numpy(backend, out).shape == (4, 64)
    np.testing.assert_array_equal(numpy(backend, out), numpy(backend, h1[0]))
    assert isinstance(cell, xf.Cell)
    assert isinstance(cell, layers.SimpleRNNCell)
    assert cell.backend == backend


def test_first_call_builds(backend):
    cell = layers.SimpleRNNCell(8, backend=backend)
    assert cell.input_dim is None
    out, _ = cell(native(backend, np.ones((2, 5), "float32")), cell.get_initial_state(2))
    assert cell.input_dim == 5 and numpy(backend, out).shape == (2, 8)


@pytest.mark.parametrize("activation,use_bias", [("tanh", True), ("relu", True), ("tanh", False)])
def test_step_matches_reference(backend, dtype, rng, activation, use_bias):
    weights = random_weights(rng, [7], 5, dtype)
    if not use_bias:
        weights = weights[:2]
    x = rng.normal(size=(3, 7)).astype(dtype)
    h = rng.uniform(-1, 1, (3, 5)).astype(dtype)
    z = x @ weights[0] + h @ weights[1] + (weights[2] if use_bias else 0)
    expected = np.tanh(z) if activation == "tanh" else np.maximum(z, 0)
    cell = layers.SimpleRNNCell(5, activation, use_bias, backend=backend, dtype=dtype)
    cell.set_weights(weights)
    out, (h1,) = cell(native(backend, x), [native(backend, h)])
    assert max_err(numpy(backend, out), expected) <= TOL[dtype]
    assert max_err(numpy(backend, h1), expected) <= TOL[dtype]
    for got, want in zip(cell.get_weights(), weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype] / 10)


def test_state_as_tuple_or_bare_tensor(backend):
    cell = layers.SimpleRNNCell(4, backend=backend)
    x = native(backend, np.ones((2, 3), "float32"))
    h = cell.get_initial_state(2)[0]
    a, sa = cell(x, [h])
    b, sb = cell(x, (h,))
    c, sc = cell(x, h)
    assert isinstance(sa, list) and isinstance(sb, list) and isinstance(sc, list)
    np.testing.assert_array_equal(numpy(backend, a), numpy(backend, b))
    np.testing.assert_array_equal(numpy(backend, a), numpy(backend, c))


def test_float64_cell_keeps_float64(backend):
    cell = layers.SimpleRNNCell(4, backend=backend, dtype="float64")
    out, _ = cell(native(backend, np.ones((2, 3))), cell.get_initial_state(2))
    assert numpy(backend, out).dtype == np.float64
    assert all(w.dtype == np.float64 for w in cell.get_weights())


def test_keras_default_initialization(backend):
    cell = layers.SimpleRNNCell(16, backend=backend)
    cell.build((None, 32))
    kernel, recurrent, bias = cell.get_weights()
    limit = np.sqrt(6 / (32 + 16))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > limit / 2
    np.testing.assert_allclose(recurrent.T @ recurrent, np.eye(16), atol=1e-5)
    assert not bias.any()


@pytest.mark.parametrize("kind", ["SimpleRNNCell", "LSTMCell", "GRUCell"])
def test_torch_fast_path_is_the_checked_path(kind, rng, monkeypatch):
    """The eager fast path (ATen's cell kernel after a few comparisons) gives exactly what the fully
    checked path gives, gradients included, and falls back to it for anything unusual."""
    torch = pytest.importorskip("torch")
    from rnn_xframework.backends.torch import cell as torch_cell

    checked = []
    real_check = torch_cell.protocol.check_step
    monkeypatch.setattr(
        torch_cell.protocol, "check_step", lambda *a: checked.append(type(a[3]).__name__) or real_check(*a)
    )
    cell = layers.make_cell(kind, units=5, backend="torch", dtype="float64")
    cell.build((None, 4))
    x = torch.from_numpy(rng.normal(size=(3, 4))).requires_grad_()
    states = [torch.from_numpy(rng.normal(size=(3, 5))) for _ in cell.state_sizes]
    fast_out, fast_states = cell(x, states)
    assert checked == []  # a list of right-sized tensors took the fast path: no full check ran
    slow_out, slow_states = cell.step(x, list(states), None)
    assert torch.equal(fast_out, slow_out)
    assert all(torch.equal(a, b) for a, b in zip(fast_states, slow_states, strict=True))
    (grad_fast,) = torch.autograd.grad(fast_out.sum(), x)
    (grad_slow,) = torch.autograd.grad(slow_out.sum(), x)
    assert torch.equal(grad_fast, grad_slow)
    out_tuple, _ = cell(x, tuple(states))  # a tuple takes the checked path: same numbers
    assert checked == ["tuple"]
    assert torch.equal(out_tuple, fast_out)


@pytest.mark.parametrize("kind", ["SimpleRNNCell", "LSTMCell", "GRUCell"])
def test_keras_weight_names_on_every_backend(backend, kind, rng):
    """``cell.kernel``, ``cell.recurrent_kernel``, ``cell.bias`` exist on every backend, in
    Keras's layout (torch: differentiable read-only views of the parameters)."""
    cell = layers.make_cell(kind, units=3, backend=backend, dtype="float64")
    cell.build((None, 2))
    weights = [w + rng.normal(size=w.shape) for w in cell.get_weights()]
    cell.set_weights(weights)
    for name, want in zip(("kernel", "recurrent_kernel", "bias"), weights, strict=True):
        np.testing.assert_allclose(numpy(backend, getattr(cell, name)), want, rtol=0, atol=1e-15)
