"""PyTorch's rule on every torch object of the library: without ``training=``, dropout follows
``module.train()`` / ``module.eval()``; an explicit ``training=`` wins; compiled RNNs apply
dropout in training mode; scripted RNNs, which have no dropout, refuse such a call rather than
skip it."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import KINDS

import rnn_xframework as xf
from rnn_xframework import layers

torch = pytest.importorskip("torch")

FEATURES, UNITS = 3, 4


def sequence_objects(kind):
    """Each torch object of the library that runs a whole sequence, with dropout."""
    cell = getattr(layers, kind)
    rnn = layers.RNN([cell(UNITS, dropout=0.5, recurrent_dropout=0.5, backend="torch", input_size=FEATURES)])
    bi = layers.Bidirectional(
        layers.RNN([cell(UNITS, dropout=0.5, backend="torch")], return_sequences=True), input_size=FEATURES
    )
    return {"rnn": rnn, "bidirectional": bi}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("what", ["rnn", "bidirectional"])
def test_dropout_follows_train_and_eval(kind, what):
    obj = sequence_objects(kind)[what].double()
    x = torch.randn(2, 5, FEATURES, dtype=torch.float64)
    assert obj.training  # a new module trains, as every nn.Module
    a, b = obj(x), obj(x)
    assert not torch.equal(a, b)  # dropout on: new masks per call
    obj.eval()
    plain = obj(x)
    assert torch.equal(plain, obj(x)) and torch.equal(plain, obj(x, training=False))
    assert not torch.equal(plain, obj(x, training=True))  # an explicit training=True wins over eval()
    obj.train()
    assert torch.equal(plain, obj(x, training=False))  # and an explicit False over train()


@pytest.mark.parametrize("kind", KINDS)
def test_cells_and_stacks_follow_train_and_eval(kind):
    cells = [getattr(layers, kind)(UNITS, dropout=0.5, backend="torch", input_size=n) for n in (FEATURES, UNITS)]
    stack = layers.StackedRNNCells(cells).double()
    x = torch.randn(2, FEATURES, dtype=torch.float64)
    for obj, state in ((cells[0], cells[0].get_initial_state(2)), (stack, stack.get_initial_state(2))):
        trained = obj(x, state)[0]
        obj.eval()
        plain = obj(x, state)[0]
        assert not torch.equal(trained, plain) and torch.equal(plain, obj(x, state, training=False)[0])
        assert torch.equal(trained, obj(x, state, training=True)[0])  # the cell's cached masks (Keras)
        obj.train()
        for cell in cells:
            cell.reset_dropout_mask()


def test_compiled_and_scripted_rnns_follow_the_mode():
    rnn = layers.LSTM(UNITS, dropout=0.5, backend="torch", input_size=FEATURES)
    x = torch.randn(2, 5, FEATURES)
    fast = xf.compile(rnn, "torchscript")
    torch.manual_seed(0)
    trained = fast(x)  # training mode: the compiled loop applies the cells' dropout masks (issue 20)
    torch.manual_seed(0)
    assert torch.allclose(trained, rnn(x), atol=1e-6)  # the same draws as the uncompiled RNN's
    assert not torch.allclose(trained, fast(x, training=False))
    fast.eval()
    assert np.allclose(fast(x).detach().numpy(), rnn.eval()(x).detach().numpy(), atol=1e-6)
    assert not xf.compile(rnn, "torchscript").training  # compiled from an RNN in eval mode: eval mode
    rnn.train()
    scripted = torch.jit.script(rnn)
    with pytest.raises(torch.jit.Error, match="no dropout"):
        scripted(x)
    scripted.eval()
    assert torch.equal(scripted(x), scripted(x, training=False))
