"""Dropout (``training=True``) on the torch compiled methods (issue 20): the same masks as the
uncompiled RNN's cells (drawn from the same generators, or set with ``set_dropout_masks``), the
same outputs and gradients, with and without ``mask=``; TensorFlow's graphs and ``triton`` still
refuse it, typed."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL, require
from helpers import KINDS, make_cells, max_err, random_cell_weights
from test_compile_masks import GENERAL
from test_compile_methods import BATCH, FEATURES, STEPS, UNITS

import rnn_xframework as xf
from rnn_xframework import layers

RATES = [(0.3, 0.0), (0.0, 0.4), (0.3, 0.4)]  # dropout, recurrent_dropout: one mask, one per gate


def seeded_pair(kind, rates, **kw):
    """Two torch RNNs with the same weights and the same dropout seeds per cell."""
    require("torch")
    rng = np.random.default_rng(2)
    weights = random_cell_weights(rng, kind, [FEATURES, UNITS], UNITS, "float64")
    pair = []
    for _ in range(2):
        cells = [  # seed=: the cells' own generators
            getattr(layers, kind)(
                UNITS, backend="torch", dtype="float64", dropout=rates[0], recurrent_dropout=rates[1], seed=10 + i
            )
            for i in range(2)
        ]
        rnn = layers.RNN(cells, return_sequences=True, return_state=True, **kw)
        rnn.build((None, None, FEATURES))
        rnn.set_weights(weights)
        pair.append(rnn)
    return pair


def run_and_grads(model, x, mask):
    import torch

    y, states = model(x, mask=mask, training=True)
    loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum() + sum(
        (s * 0.5).sum() for layer in states for s in layer
    )
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [x, *params])
    return y.detach(), [s.detach() for layer in states for s in layer], grads


@pytest.mark.parametrize("method", ["torchscript", "cudagraph-stand-in"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rates", RATES)
@pytest.mark.parametrize("masked", [False, True])
def test_compiled_dropout_matches_uncompiled(method, kind, rates, masked):
    """Before issue 20 this raised "the torchscript loop has no dropout". Two calls: each draws
    new masks, the same as the uncompiled RNN's second call."""
    import torch

    from rnn_xframework.backends.torch.compile import cudagraph

    eager, source = seeded_pair(kind, rates)
    if method == "torchscript":
        fast = xf.compile(source, "torchscript")
    else:  # cudagraph's masked / training calls, on the CPU stand-in capture
        fast = cudagraph.compile_rnn(source, capture_class=cudagraph.EagerCapture)
    mask = GENERAL if masked else None
    x = torch.tensor(np.random.default_rng(4).normal(size=(BATCH, STEPS, FEATURES)), requires_grad=True)
    for _ in range(2):
        y, states, grads = run_and_grads(fast, x, mask)
        y_want, states_want, grads_want = run_and_grads(eager, x, mask)
        assert max_err(y, y_want) <= TOL["float64"]
        assert all(max_err(s, w) <= TOL["float64"] for s, w in zip(states, states_want, strict=True))
        assert all(max_err(g, w) <= TOL["float64"] for g, w in zip(grads, grads_want, strict=True))
    with torch.no_grad():  # new masks per call
        assert not torch.equal(fast(x, training=True)[0], fast(x, training=True)[0])


@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell"])
def test_compiled_dropout_uses_masks_set_by_hand(kind):
    """``set_dropout_masks`` (per gate here) is used by the next compiled call and reset after it."""
    import torch

    eager, source = seeded_pair(kind, (0.3, 0.4))
    fast = xf.compile(source, "torchscript")
    g = 4 if kind == "LSTMCell" else 3
    gen = torch.Generator().manual_seed(0)
    x = torch.tensor(np.random.default_rng(5).normal(size=(BATCH, STEPS, FEATURES)))
    for a, b in zip(eager.cells, source.cells, strict=True):
        dim = a.input_dim
        inputs = [(torch.rand(BATCH, dim, generator=gen, dtype=torch.float64) > 0.3) / 0.7 for _ in range(g)]
        recurrent = [(torch.rand(BATCH, UNITS, generator=gen, dtype=torch.float64) > 0.4) / 0.6 for _ in range(g)]
        a.set_dropout_masks(inputs=inputs, recurrent=recurrent)
        b.set_dropout_masks(inputs=inputs, recurrent=recurrent)
    got, want = fast(x, training=True)[0].detach(), eager(x, training=True)[0].detach()
    assert max_err(got, want) <= TOL["float64"]
    assert all(c.get_dropout_masks() == (None, None) for c in source.cells)  # reset after the call


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


@pytest.mark.parametrize("method", ["tf.function", "xla"])
def test_tensorflow_graphs_still_refuse_dropout(method):
    require("tensorflow")
    rnn = layers.RNN(make_cells("tensorflow", "LSTMCell", 1, UNITS, "float32", dropout=0.5))
    rnn.build((None, None, FEATURES))
    with pytest.raises(xf.UnsupportedConfigError, match="no dropout; train with the uncompiled RNN"):
        xf.compile(rnn, method)(np.zeros((BATCH, STEPS, FEATURES), "float32"), training=True)


def test_triton_still_refuses_dropout():
    require("torch")
    pytest.importorskip("triton", reason="xf.compile(rnn, 'triton') needs triton")
    import torch

    rnn = layers.RNN(make_cells("torch", "GRUCell", 1, UNITS, "float32", dropout=0.5))
    rnn.build((None, None, FEATURES))
    with pytest.raises(xf.UnsupportedConfigError, match=r"no dropout.*'torchscript' or 'inductor'"):
        xf.compile(rnn, "triton")(torch.zeros(BATCH, STEPS, FEATURES), training=True)
