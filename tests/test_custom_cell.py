"""The extension point is real: a cell type of our own (tests/plugins/xf_mgu.py, the minimal
gated unit), registered through the public ``rnn_xframework.cells.register()`` by the ``mgu``
fixture (tests/conftest.py), runs on every backend, in both orderings, moves between backends
and through a weight file, with no change to the library.

The MGU (Zhou et al. 2016) has one forget gate::

    f  = sigmoid(x W_f + h U_f + b_f)
    h~ = tanh(x W_h + (f * h) U_h + b_h)
    h' = (1 - f) * h + f * h~
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL, require
from helpers import max_err, native, numpy

import rnn_xframework as xf
from rnn_xframework import layers

BATCH, STEPS, FEATURES, UNITS = 3, 5, 4, 6


def reference(x, weights, states):
    """The MGU stack written out in NumPy, independently of the library."""
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    hs = [s[0] for s in states]
    outputs = []
    for t in range(x.shape[1]):
        inp = x[:, t]
        for layer in range(len(hs)):
            kernel, recurrent, bias = weights[3 * layer : 3 * layer + 3]
            u = UNITS
            f = sigmoid(inp @ kernel[:, :u] + hs[layer] @ recurrent[:, :u] + bias[:u])
            cand = np.tanh(inp @ kernel[:, u:] + (f * hs[layer]) @ recurrent[:, u:] + bias[u:])
            hs[layer] = (1 - f) * hs[layer] + f * cand
            inp = hs[layer]
        outputs.append(inp)
    return np.stack(outputs, 1), [[h] for h in hs]


def problem(rng, dtype):
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype(dtype)
    weights = []
    for dim in (FEATURES, UNITS):
        weights += [
            rng.uniform(-1, 1, (dim, 2 * UNITS)) * np.sqrt(3.0 / dim),
            rng.uniform(-1, 1, (UNITS, 2 * UNITS)) * np.sqrt(1.5 / UNITS),
            rng.uniform(-0.5, 0.5, (2 * UNITS,)),
        ]
    states = [[rng.uniform(-1, 1, (BATCH, UNITS)).astype(dtype)] for _ in range(2)]
    return x, [w.astype(dtype) for w in weights], states


def mgu_rnn(backend, dtype, order="timestep"):
    stack = [layers.make_cell("MGUCell", backend=backend, units=UNITS, dtype=dtype) for _ in range(2)]
    rnn = layers.RNN(stack, return_sequences=True, return_state=True, order=order)
    rnn.build((None, None, FEATURES))
    return rnn


def run(rnn, backend, x, states):
    y, final = rnn(native(backend, x), [[native(backend, s) for s in layer] for layer in states])
    return numpy(backend, y), [[numpy(backend, s) for s in layer] for layer in final]


@pytest.mark.parametrize("order", ["timestep", "layer"])
def test_registered_cell_runs_on_every_backend_and_ordering(mgu, backend, dtype, order, rng):
    x, weights, states = problem(rng, dtype)
    rnn = mgu_rnn(backend, dtype, order)
    rnn.set_weights(weights)
    y, final = run(rnn, backend, x, states)
    want_y, want_final = reference(x.astype(np.float64), weights, states)
    assert max_err(y, want_y) <= TOL[dtype]
    assert max_err(final[1][0], want_final[1][0]) <= TOL[dtype]
    assert isinstance(rnn.cells[0], layers.MGUCell) and not isinstance(rnn.cells[0], layers.GRUCell)


def test_registered_cell_has_keras_defaults_and_names(mgu, backend):
    cell = layers.MGUCell(UNITS, backend=backend)
    cell.build((None, FEATURES))
    kernel, recurrent, bias = cell.get_weights()
    assert kernel.shape == (FEATURES, 2 * UNITS) and recurrent.shape == (UNITS, 2 * UNITS)
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(UNITS), atol=1e-5)  # orthogonal rows
    assert not bias.any()
    assert cell.portable_config() == {
        "units": UNITS,
        "use_bias": True,
        "dropout": 0.0,
        "recurrent_dropout": 0.0,
        "activation": "tanh",
        "recurrent_activation": "sigmoid",
    }


@pytest.mark.parametrize("target", ["numpy", "torch", "tensorflow"])
def test_registered_cell_converts_and_round_trips_a_file(mgu, backend, target, rng, tmp_path):
    if target != "numpy":
        pytest.importorskip(target)
    x, weights, states = problem(rng, "float64")
    source = mgu_rnn(backend, "float64")
    source.set_weights(weights)
    ported = xf.convert(source, backend=target)
    assert max_err(run(ported, target, x, states)[0], run(source, backend, x, states)[0]) <= TOL["float64"]
    path = xf.save_weights(source, tmp_path / "mgu")
    fresh = mgu_rnn(target, "float64")
    xf.load_weights(fresh, path)
    for got, want in zip(fresh.get_weights(), weights, strict=True):
        assert np.array_equal(got, want)
    with pytest.raises(xf.WeightsError, match="MGUCell"):
        xf.load_weights(layers.RNN([layers.GRUCell(UNITS, backend="numpy")]), path)


def test_unregistered_cell_type_is_unknown():
    with pytest.raises(xf.UnsupportedConfigError, match="unknown cell type 'MGUCell'"):
        layers.make_cell("MGUCell", backend="numpy", units=3)
    with pytest.raises(AttributeError):
        layers.MGUCell  # noqa: B018
    with pytest.raises(AttributeError):
        layers.MGU  # noqa: B018


AUTO = {"torch": "torchscript", "tensorflow": "xla"}  # what "auto" picks for a registered type (CPU)


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_registered_cell_compiles_with_auto_on_every_framework(mgu, framework, dtype, rng):
    """``xf.compile(rnn, "auto")`` compiles a registered type: torch runs the spec's step traced
    inside its scripted loop (backends/torch/compile/spec_layer.py), TensorFlow traces it into
    its graph. Outputs and final states match the NumPy reference written out above; on torch the
    gradients match the eager RNN's, and other shapes run on the same compiled object."""
    require(framework)
    x, weights, states = problem(rng, dtype)
    rnn = mgu_rnn(framework, dtype)
    rnn.set_weights(weights)
    fast = xf.compile(rnn, "auto")
    assert fast.method == AUTO[framework]
    y, final = run(fast, framework, x, states)
    want_y, want_final = reference(x.astype(np.float64), weights, states)
    assert max_err(y, want_y) <= TOL[dtype]
    for layer in range(2):
        assert max_err(final[layer][0], want_final[layer][0]) <= TOL[dtype]
    longer = rng.normal(size=(BATCH + 2, STEPS + 3, FEATURES)).astype(dtype)
    zeros = [[np.zeros((BATCH + 2, UNITS), dtype)] for _ in range(2)]
    assert max_err(run(fast, framework, longer, zeros)[0], run(rnn, framework, longer, zeros)[0]) <= TOL[dtype]
    if framework == "torch":
        import torch

        xt = native("torch", x).requires_grad_(True)
        trained = [xt, *(p for p in rnn.parameters() if p.requires_grad)]
        eager = torch.autograd.grad(rnn(xt)[0].square().sum(), trained)
        compiled = torch.autograd.grad(fast(xt)[0].square().sum(), trained)
        for got, want in zip(compiled, eager, strict=True):
            assert max_err(got, want) <= TOL[dtype] * 10  # sums over batch and steps


def test_registered_cell_has_a_sequence_layer(mgu, backend, rng):
    """``layers.MGU`` for ``MGUCell``, as ``layers.LSTM`` for ``LSTMCell``: one object per
    registration, an ``RNN`` over one cell, gone with the type."""
    x, weights, _ = problem(rng, "float64")
    layer = layers.MGU(
        UNITS, return_sequences=True, return_state=True, backend=backend, dtype="float64", input_size=FEATURES
    )
    assert layers.MGU is layers.MGU and isinstance(layer, layers.MGU) and isinstance(layer.cells[0], layers.MGUCell)
    layer.set_weights(weights[:3])
    zeros = [[np.zeros((BATCH, UNITS))]]
    want = reference(x, weights[:3], [[np.zeros((BATCH, UNITS))]])[0]
    assert max_err(run(layer, backend, x, zeros)[0], want) <= TOL["float64"]
    assert not isinstance(layers.LSTM(3, backend="numpy"), layers.MGU)
