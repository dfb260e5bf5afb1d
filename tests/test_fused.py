"""PyTorch's fused nn.RNN/LSTM/GRU to and from stacks, and TorchScript for every cell type."""

import numpy as np
import pytest
from conftest import BACKENDS, TOL, require
from helpers import KINDS, make_cells, max_err, native, numpy, random_cell_states, random_cell_weights

import rnn_xframework as xf
from rnn_xframework import layers

torch = pytest.importorskip("torch")
FUSED = {"SimpleRNNCell": torch.nn.RNN, "LSTMCell": torch.nn.LSTM, "GRUCell": torch.nn.GRU}


def fused_state(kind, states):
    h = torch.from_numpy(np.stack([layer[0] for layer in states]))
    return (h, torch.from_numpy(np.stack([layer[1] for layer in states]))) if kind == "LSTMCell" else h


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("src", BACKENDS)
def test_to_torch_fused_matches_the_stack(src, dtype, rng, kind):
    require(src)
    x = rng.normal(size=(4, 80, 100)).astype(dtype)
    weights = random_cell_weights(rng, kind, [100, 64], 64, dtype)
    states = random_cell_states(rng, kind, 2, 4, 64, dtype)
    rnn = layers.RNN(make_cells(src, kind, 2, 64, dtype), return_sequences=True)
    rnn.build((None, None, 100))
    rnn.set_weights(weights)
    want = numpy(src, rnn(native(src, x), [[native(src, s) for s in layer] for layer in states]))
    fused = xf.to_torch_fused(rnn)
    assert type(fused) is FUSED[kind] and fused.batch_first and fused.num_layers == 2
    y, _ = fused(torch.from_numpy(x), fused_state(kind, states))
    assert max_err(y.detach(), want) <= TOL[dtype]
    back = xf.from_torch_fused(fused, backend=src)
    for a, b in zip(back.get_weights(), rnn.get_weights(), strict=True):
        assert max_err(a, b) <= TOL[dtype] / 10


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dst", BACKENDS)
def test_from_torch_fused_matches_the_module(dst, rng, kind):
    require(dst)
    fused = FUSED[kind](5, 6, num_layers=3, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for p in fused.parameters():
            p.uniform_(-0.5, 0.5)  # bias_hh included: LSTM/SimpleRNN sum it, GRU keeps it
    x = rng.normal(size=(2, 7, 5))
    states = random_cell_states(rng, kind, 3, 2, 6, "float64")
    want, _ = fused(torch.from_numpy(x), fused_state(kind, states))
    rnn = xf.from_torch_fused(fused, backend=dst)
    assert isinstance(rnn, layers.RNN) and rnn.return_sequences and len(rnn.cells) == 3
    y = rnn(native(dst, x), [[native(dst, s) for s in layer] for layer in states])
    assert max_err(numpy(dst, y), want.detach()) <= TOL["float64"]


def test_fused_refuses_what_it_cannot_express():
    mixed = layers.RNN([layers.LSTMCell(4, backend="numpy"), layers.GRUCell(4, backend="numpy")])
    mixed.build((None, None, 3))
    with pytest.raises(xf.UnsupportedConfigError, match="one cell type"):
        xf.to_torch_fused(mixed)
    for kw in ({"dropout": 0.1}, {"recurrent_dropout": 0.1}):
        rnn = layers.RNN([layers.LSTMCell(4, backend="numpy", **kw)])
        rnn.build((None, None, 3))
        with pytest.raises(xf.UnsupportedConfigError, match="dropout"):
            xf.to_torch_fused(rnn)
    back = layers.RNN([layers.GRUCell(4, backend="numpy")], go_backwards=True)
    back.build((None, None, 3))
    with pytest.raises(xf.UnsupportedConfigError, match="go_backwards"):
        xf.to_torch_fused(back)
    reset_before = layers.RNN([layers.GRUCell(4, backend="numpy", reset_after=False)])
    reset_before.build((None, None, 3))
    with pytest.raises(xf.UnsupportedConfigError, match="reset_after"):
        xf.to_torch_fused(reset_before)
    with pytest.raises(xf.UnsupportedConfigError, match="bidirectional"):
        xf.from_torch_fused(torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True))
    with pytest.raises(xf.UnsupportedConfigError, match=r"expected torch\.nn\.RNN"):
        xf.from_torch_fused(torch.nn.Linear(3, 4))


@pytest.mark.parametrize("order", ["timestep", "layer"])
@pytest.mark.parametrize("kinds", [["LSTMCell", "LSTMCell"], ["GRUCell"], ["LSTMCell", "GRUCell", "SimpleRNNCell"]])
def test_torchscript_compiles_any_mix_of_cells(rng, dtype, order, kinds):
    cells = [getattr(layers, k)(6, backend="torch", dtype=dtype) for k in kinds]
    rnn = layers.RNN(cells, return_sequences=True, return_state=True, go_backwards=True, order=order)
    rnn.build((None, None, 5))
    dims = [5] + [6] * (len(kinds) - 1)
    rnn.set_weights([w for k, d in zip(kinds, dims, strict=True) for w in random_cell_weights(rng, k, [d], 6, dtype)])
    x = torch.from_numpy(rng.normal(size=(3, 7, 5)).astype(dtype))
    init = [[torch.from_numpy(s) for s in random_cell_states(rng, k, 1, 3, 6, dtype)[0]] for k in kinds]
    fast = xf.compile(rnn, "torchscript")
    (gy, gs), (wy, ws) = fast(x, init), rnn(x, init)
    assert max_err(gy.detach(), wy.detach()) <= TOL[dtype]
    assert [len(s) for s in gs] == [len(s) for s in ws]
    for g, w in zip(gs, ws, strict=True):
        assert all(max_err(a.detach(), b.detach()) <= TOL[dtype] for a, b in zip(g, w, strict=True))


def test_compiled_applies_dropout_in_training_as_the_uncompiled():
    """A compiled RNN in training mode (PyTorch's default for a new module) applies the cells'
    Keras dropout, drawn as the uncompiled RNN draws it; ``eval()`` turns it off and an explicit
    ``training=True`` wins over ``eval()``, as on the uncompiled RNN (it refused dropout before)."""

    def make():
        rnn = layers.RNN([layers.LSTMCell(4, backend="torch", dropout=0.5, seed=3)], return_sequences=True)
        rnn.build((None, None, 3))
        return rnn

    eager, source = make(), make()
    source.set_weights(eager.get_weights())
    fast = xf.compile(source)
    x = torch.randn(2, 5, 3)
    assert torch.allclose(fast(x), eager(x), atol=1e-6)
    fast.eval()
    eager.eval()
    assert torch.allclose(fast(x), eager(x), atol=1e-6)
    dropped = fast(x, training=True)
    assert torch.allclose(dropped, eager(x, training=True), atol=1e-6)
    assert not torch.allclose(dropped, fast(x), atol=1e-3)  # the masks did apply
