"""Unbuilt torch objects hold PyTorch lazy parameters (``torch.nn.UninitializedParameter``), so
an optimizer made before the first call trains them, and ``load_state_dict`` fills them; the
input size can also be given up front (``input_size=`` / ``input_shape=``) for eager parameters."""

import copy

import numpy as np
import pytest
from conftest import TOL
from helpers import KINDS, max_err

import rnn_xframework as xf
from rnn_xframework import layers

torch = pytest.importorskip("torch")
LAYERS = {"SimpleRNNCell": layers.SimpleRNN, "LSTMCell": layers.LSTM, "GRUCell": layers.GRU}


class Model(torch.nn.Module):
    """The issue's user code: a library RNN under a Linear head, nothing built."""

    def __init__(self, kind: str, **kw) -> None:
        super().__init__()
        self.rnn = LAYERS[kind](8, backend="torch", **kw)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.rnn(x))


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 5, 3, generator=g), torch.randn(4, 1, generator=g)


@pytest.mark.parametrize("kind", KINDS)
def test_an_optimizer_made_before_the_first_call_trains_the_rnn(kind):
    torch.manual_seed(0)
    model = Model(kind)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)  # before any call: the defect 1
    held = {id(p) for group in opt.param_groups for p in group["params"]}
    x, target = _batch()
    for step in range(5):
        loss = torch.nn.functional.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0:
            first = [w.copy() for w in model.rnn.get_weights()]
    after = model.rnn.get_weights()
    trained = [p for p in model.rnn.parameters() if p.requires_grad]
    assert trained and all(id(p) in held for p in trained)  # the optimizer holds the RNN's parameters
    assert all(max_err(a, b) > 1e-4 for a, b in zip(after, first, strict=True))  # every weight moved


@pytest.mark.parametrize("kind", KINDS)
def test_unbuilt_parameters_are_lazy_and_fill_on_the_first_call(kind):
    rnn = LAYERS[kind](6, backend="torch")
    params = list(rnn.parameters())
    assert params and all(isinstance(p, torch.nn.UninitializedParameter) for p in params)
    assert rnn.cells[0].input_dim is None
    rnn = rnn.to(torch.float64)  # device/dtype moves before the first call are kept, as for LazyLinear
    y = rnn(torch.randn(2, 3, 4, dtype=torch.float64))
    assert y.dtype == torch.float64 and rnn.cells[0].input_dim == 4
    assert [id(p) for p in rnn.parameters()] == [id(p) for p in params]  # the same objects, filled
    assert not any(isinstance(p, torch.nn.UninitializedParameter) for p in rnn.parameters())
    assert type(rnn.cells[0].cell) in (torch.nn.RNNCell, torch.nn.LSTMCell, torch.nn.GRUCell)


@pytest.mark.parametrize("kind", KINDS)
def test_load_state_dict_into_an_unbuilt_object(kind, rng):
    x = torch.from_numpy(rng.normal(size=(2, 5, 3)).astype("float32"))
    src = LAYERS[kind](6, backend="torch")
    src(x)  # built by a call
    dst = LAYERS[kind](6, backend="torch")  # unbuilt: the "Unexpected key(s)"
    result = dst.load_state_dict(src.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    assert dst.cells[0].input_dim == 3
    assert max_err(dst(x).detach(), src(x).detach()) == 0.0
    # and a whole model's checkpoint, into an unbuilt model with an unbuilt RNN
    model = Model(kind)
    trained = Model(kind)
    trained(x)
    model.load_state_dict(trained.state_dict())
    assert max_err(model(x).detach(), trained(x).detach()) == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_input_size_up_front_gives_eager_parameters(kind):
    for kw in ({"input_size": 3}, {"input_shape": (None, 3)}):
        cell = getattr(layers, kind)(5, backend="torch", **kw)
        assert cell.input_dim == 3 and cell.get_weights()[0].shape == (3, cell.gates * 5)
        assert not any(isinstance(p, torch.nn.UninitializedParameter) for p in cell.parameters())
    rnn = LAYERS[kind](5, backend="torch", input_shape=(7, 3))  # Keras: (time, features), no batch
    assert rnn.cells[0].input_dim == 3
    stack = layers.RNN([getattr(layers, kind)(5, backend="torch") for _ in range(2)], input_size=3)
    assert [c.input_dim for c in stack.cells] == [3, 5]
    with pytest.raises(ValueError, match="input_size"):
        getattr(layers, kind)(5, backend="torch", input_size=3, input_shape=(None, 4))


@pytest.mark.parametrize("kind", KINDS)
def test_input_size_on_every_backend(backend, kind):
    cell = getattr(layers, kind)(5, backend=backend, input_size=3)
    assert cell.input_dim == 3


@pytest.mark.parametrize("kind", KINDS)
def test_lazy_objects_work_with_state_dict_copy_convert_and_dropout(kind, rng):
    rnn = LAYERS[kind](6, backend="torch", dropout=0.5, recurrent_dropout=0.25, seed=1)
    assert set(rnn.state_dict()) == {f"cell.cells.0.cell.{n}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    twin = copy.deepcopy(rnn)
    with pytest.raises(xf.NotBuiltError):  # as for any unbuilt object: no weights to carry over
        xf.convert(rnn, backend="numpy")
    x = torch.from_numpy(rng.normal(size=(2, 5, 3)).astype("float32"))
    y = rnn(x, training=True)
    assert y.shape == (2, 6) and twin.cells[0].input_dim is None
    rnn.eval()  # training=None follows the module's mode: inference from here on
    ref = xf.convert(rnn, backend="numpy")
    assert max_err(ref(x.numpy()), rnn(x).detach()) <= TOL["float32"]
    fast = xf.compile(xf.convert(rnn, backend="torch").eval(), "torchscript")
    assert max_err(fast(x).detach(), rnn(x).detach()) <= TOL["float32"]
    target = LAYERS[kind](6, backend="torch", dropout=0.5, recurrent_dropout=0.25).eval()  # unbuilt
    params = list(target.parameters())
    xf.transfer_weights(ref, target)  # fills the lazy parameters in place
    assert [id(p) for p in target.parameters()] == [id(p) for p in params]
    assert max_err(target(x).detach(), rnn(x).detach()) <= TOL["float32"]


def test_an_unbuilt_cell_gives_a_typed_error_for_bad_input():
    cell = layers.LSTMCell(4, backend="torch")
    with pytest.raises(xf.InputShapeError):
        cell(torch.zeros(2, 3, 4), cell.get_initial_state(2))
    assert cell.input_dim is None
    np.testing.assert_equal(len(list(cell.parameters())), 4)
