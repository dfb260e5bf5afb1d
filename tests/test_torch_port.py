"""``xf.from_torch`` / ``xf.to_torch``: PyTorch's recurrent modules and cells (and checkpoints)
to the library on every backend and back, configuration and layout included."""

import numpy as np
import pytest
from conftest import BACKENDS, TOL, require
from helpers import KINDS, N_STATES, max_err, native, numpy

import rnn_xframework as xf
from rnn_xframework import layers

torch = pytest.importorskip("torch")
MODULES = {"SimpleRNNCell": torch.nn.RNN, "LSTMCell": torch.nn.LSTM, "GRUCell": torch.nn.GRU}
CELLS = {"SimpleRNNCell": torch.nn.RNNCell, "LSTMCell": torch.nn.LSTMCell, "GRUCell": torch.nn.GRUCell}
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) - 0.5)  # both biases non-zero
    return module


def module_states(kind, layers_states):
    """Per-layer library states ``[[h], ...]`` / ``[[h, c], ...]`` as the module's ``h0`` / ``(h0, c0)``."""
    h = torch.from_numpy(np.stack([s[0] for s in layers_states]))
    return (h, torch.from_numpy(np.stack([s[1] for s in layers_states]))) if kind == "LSTMCell" else h


def states_for(rng, kind, n_layers, batch, units, dtype):
    return [[rng.uniform(-1, 1, (batch, units)).astype(dtype) for _ in range(N_STATES[kind])] for _ in range(n_layers)]


def make_module(kind, dtype, batch_first, **kw):
    extra = {"nonlinearity": "relu"} if kind == "SimpleRNNCell" else {}
    m = MODULES[kind](5, 6, num_layers=2, batch_first=batch_first, dtype=TORCH_DTYPES[dtype], **{**extra, **kw})
    return randomize(m)


@pytest.mark.parametrize("kind", KINDS)
def test_from_torch_fused_keeps_the_time_major_layout(kind, rng):
    """Defect 6: a batch_first=False module (PyTorch's default) fed its own time-major input."""
    module = randomize(MODULES[kind](5, 6, num_layers=2, dtype=torch.float64))
    x = torch.from_numpy(rng.normal(size=(7, 3, 5)))  # [time, batch, features]
    want, _ = module(x)
    rnn = xf.from_torch_fused(module, backend="numpy")
    assert max_err(rnn(x.numpy()), want.detach()) <= TOL["float64"]
    assert rnn.time_major
    batch_major = xf.from_torch(module, backend="numpy", time_major=False)  # asked for explicitly
    assert max_err(batch_major(x.numpy().swapaxes(0, 1)), want.detach().transpose(0, 1)) <= TOL["float64"]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dst", BACKENDS)
def test_module_round_trip(dst, dtype, kind, batch_first, rng):
    require(dst)
    module = make_module(kind, dtype, batch_first)
    shape = (3, 7, 5) if batch_first else (7, 3, 5)
    x = rng.normal(size=shape).astype(dtype)
    states = states_for(rng, kind, 2, 3, 6, dtype)
    want, want_final = module(torch.from_numpy(x), module_states(kind, states))
    rnn = xf.from_torch(module, backend=dst, return_state=True)
    assert isinstance(rnn, layers.RNN) and rnn.time_major == (not batch_first) and len(rnn.cells) == 2
    y, final = rnn(native(dst, x), [[native(dst, s) for s in layer] for layer in states])
    assert max_err(numpy(dst, y), want.detach()) <= TOL[dtype]
    h_n = want_final[0] if kind == "LSTMCell" else want_final
    assert max_err(np.stack([numpy(dst, layer[0]) for layer in final]), h_n.detach()) <= TOL[dtype]
    back = xf.to_torch(rnn)
    assert type(back) is MODULES[kind] and back.batch_first == batch_first and back.num_layers == 2
    assert back.nonlinearity == module.nonlinearity if kind == "SimpleRNNCell" else True
    y2, _ = back(torch.from_numpy(x), module_states(kind, states))
    assert max_err(y2.detach(), want.detach()) <= TOL[dtype]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dst", BACKENDS)
def test_cell_round_trip(dst, dtype, kind, rng):
    require(dst)
    extra = {"nonlinearity": "relu"} if kind == "SimpleRNNCell" else {}
    module = randomize(CELLS[kind](5, 6, dtype=TORCH_DTYPES[dtype], **extra))
    x = rng.normal(size=(3, 5)).astype(dtype)
    states = states_for(rng, kind, 1, 3, 6, dtype)[0]
    hx = tuple(torch.from_numpy(s) for s in states) if kind == "LSTMCell" else torch.from_numpy(states[0])
    want = module(torch.from_numpy(x), hx)
    want_h = want[0] if kind == "LSTMCell" else want
    cell = xf.from_torch(module, backend=dst)
    assert isinstance(cell, getattr(layers, kind)) and cell.input_dim == 5 and cell.dtype_name == dtype
    out, new = cell(native(dst, x), [native(dst, s) for s in states])
    assert max_err(numpy(dst, out), want_h.detach()) <= TOL[dtype]
    if kind == "LSTMCell":
        assert max_err(numpy(dst, new[1]), want[1].detach()) <= TOL[dtype]
    back = xf.to_torch(cell)
    assert type(back) is CELLS[kind] and back.input_size == 5 and back.hidden_size == 6
    got = back(torch.from_numpy(x), hx)
    assert max_err((got[0] if kind == "LSTMCell" else got).detach(), want_h.detach()) <= TOL[dtype]


class Checkpointed(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.rnn = MODULES[kind](5, 6, num_layers=2, batch_first=True)
        self.cell = CELLS[kind](6, 4)
        self.head = torch.nn.Linear(4, 1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dst", BACKENDS)
def test_checkpoint_round_trip(dst, kind, tmp_path, rng):
    """A whole model's state_dict saved to disk, ported from the constructor arguments alone."""
    require(dst)
    trained = Checkpointed(kind)
    randomize(trained)
    path = tmp_path / "model.pt"
    torch.save(trained.state_dict(), path)
    sd = torch.load(path, weights_only=True)
    fresh = MODULES[kind](5, 6, num_layers=2, batch_first=True)
    before = [p.detach().clone() for p in fresh.parameters()]
    rnn = xf.from_torch(fresh, state_dict=sd, prefix="rnn.", backend=dst)
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters(), strict=True))  # untouched
    cell = xf.from_torch(CELLS[kind](6, 4), state_dict=sd, prefix="cell.", backend=dst)
    x = rng.normal(size=(2, 7, 5)).astype("float32")
    want, _ = trained.rnn(torch.from_numpy(x))
    assert max_err(numpy(dst, rnn(native(dst, x))), want.detach()) <= TOL["float32"]
    back = xf.to_torch(rnn)
    y, _ = back(torch.from_numpy(x))
    assert max_err(y.detach(), want.detach()) <= TOL["float32"]
    h = rng.normal(size=(2, 6)).astype("float32")
    zeros = cell.get_initial_state(2)
    want_c = trained.cell(torch.from_numpy(h))
    want_c = want_c[0] if kind == "LSTMCell" else want_c
    assert max_err(numpy(dst, cell(native(dst, h), zeros)[0]), want_c.detach()) <= TOL["float32"]
    with pytest.raises(xf.WeightsError, match="constructor arguments"):
        xf.from_torch(MODULES[kind](5, 7, num_layers=2), state_dict=sd, prefix="rnn.", backend=dst)
    with pytest.raises(xf.WeightsError, match="prefix"):
        xf.from_torch(fresh, state_dict=sd, prefix="encoder.", backend=dst)


@pytest.mark.parametrize("kind", KINDS)
def test_time_major_on_every_backend_and_compiled(backend, kind, rng):
    cells = [getattr(layers, kind)(6, backend=backend, dtype="float64") for _ in range(2)]
    rnn = layers.RNN(cells, return_sequences=True, time_major=True)
    x = rng.normal(size=(7, 3, 5))
    y = numpy(backend, rnn(native(backend, x)))
    ref = xf.convert(rnn, backend="numpy")
    ref.time_major = False
    assert y.shape == (7, 3, 6)
    assert max_err(y, ref(np.swapaxes(x, 0, 1)).swapaxes(0, 1)) <= TOL["float64"]
    method = {"torch": "torchscript", "tensorflow": "tf.function"}.get(backend)
    if method is not None:
        fast = xf.compile(rnn, method)
        assert max_err(numpy(backend, fast(native(backend, x))), y) <= 1e-10
    last = layers.RNN(list(xf.convert(rnn, backend=backend).cells), time_major=True)
    assert max_err(numpy(backend, last(native(backend, x))), y[-1]) <= TOL["float64"]


def test_what_has_no_counterpart_is_refused():
    with pytest.raises(xf.UnsupportedConfigError, match="bidirectional"):
        xf.from_torch(torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True), backend="numpy")
    with pytest.raises(xf.UnsupportedConfigError, match="proj_size"):
        xf.from_torch(torch.nn.LSTM(3, 4, proj_size=2), backend="numpy")
    with pytest.raises(xf.UnsupportedConfigError, match=r"dropout=0\.5"):
        xf.from_torch(torch.nn.GRU(3, 4, num_layers=2, dropout=0.5), backend="numpy")

    class MyLSTM(torch.nn.LSTM):
        pass

    with pytest.raises(xf.FrameworkMismatchError, match="subclass"):
        xf.from_torch(MyLSTM(3, 4), backend="numpy")
    with pytest.raises(xf.FrameworkMismatchError, match=r"torch\.nn"):
        xf.from_torch(layers.LSTMCell(4, backend="numpy"), backend="numpy")
    stack = layers.StackedRNNCells([layers.GRUCell(4, backend="numpy", input_size=3)])
    with pytest.raises(xf.UnsupportedConfigError, match="StackedRNNCells"):
        xf.to_torch(stack)
    with pytest.raises(xf.UnsupportedConfigError, match="reset_after"):
        xf.to_torch(layers.GRUCell(4, backend="numpy", reset_after=False, input_size=3))
    with pytest.raises(xf.UnsupportedConfigError, match="dropout"):
        xf.to_torch(layers.LSTMCell(4, backend="numpy", dropout=0.1, input_size=3))
    with pytest.raises(xf.UnsupportedConfigError, match="not built"):
        xf.to_torch(layers.LSTMCell(4, backend="numpy"))
    with pytest.raises(xf.UnsupportedConfigError, match="relu"):
        xf.to_torch(layers.SimpleRNNCell(4, activation="sigmoid", backend="numpy", input_size=3))


def test_a_time_major_keras_layer_keeps_its_layout_through_its_config():
    """A .keras file stores the layer's config: time_major must be in it, or the layout is lost."""
    require("tensorflow")
    rnn = xf.from_torch(torch.nn.GRU(3, 4, dtype=torch.float64), backend="tensorflow")
    assert rnn.time_major
    again = type(rnn).from_config(rnn.get_config())
    assert again.time_major and again.return_sequences


@pytest.mark.parametrize("dtype", ["int32", "int64", "bool", "complex64"])
@pytest.mark.parametrize("target", ["module", "cell"])
def test_a_checkpoint_of_non_float_weights_is_refused(dtype, target):
    """Issue 18: int32 weights loaded truncated and complex ones without their imaginary part,
    where ``set_weights`` refuses the same arrays; now both refuse through one check."""
    source = randomize(torch.nn.LSTM(3, 4) if target == "module" else torch.nn.LSTMCell(3, 4))
    before = {k: v.clone() for k, v in source.state_dict().items()}
    sd = {k: (v * 3).to(getattr(torch, dtype)) for k, v in source.state_dict().items()}
    with pytest.raises(xf.WeightsError, match=rf"state_dict entry '\w+' must be floating point, got dtype {dtype}"):
        xf.from_torch(source, "numpy", state_dict=sd)
    cell = layers.LSTMCell(4, backend="torch")
    cell.build((None, 3))
    with pytest.raises(xf.WeightsError, match=f"must be floating point, got dtype {dtype}"):
        cell.set_weights([torch.zeros(w.shape, dtype=getattr(torch, dtype)) for w in cell.get_weights()])
    assert all(torch.equal(v, before[k]) for k, v in source.state_dict().items())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_a_checkpoint_of_other_floats_loads_as_set_weights_does(dtype):
    """float16, bfloat16 and float64 checkpoints load into the module's dtype, giving the weights
    ``set_weights`` gives from the same tensors (bfloat16 included, which NumPy lacks)."""
    source = randomize(torch.nn.GRUCell(3, 4))
    sd = {k: v.to(getattr(torch, dtype)) for k, v in source.state_dict().items()}
    ported = xf.from_torch(source, "numpy", state_dict=sd)
    rounded = torch.nn.GRUCell(3, 4)
    rounded.load_state_dict({k: v.float() for k, v in sd.items()})  # the checkpoint's values, in float32
    want = xf.from_torch(rounded, "numpy").get_weights()
    direct = layers.GRUCell(4, backend="torch")
    direct.build((None, 3))
    direct.set_weights([torch.from_numpy(w).to(getattr(torch, dtype)) for w in want])
    for a, b, w in zip(ported.get_weights(), direct.get_weights(), want, strict=True):
        assert a.dtype == np.float32 and np.array_equal(a, w) and np.array_equal(b, w)


@pytest.mark.parametrize("bad", [[1, 2], "sd.pt", 3, {1: 2}])
def test_a_state_dict_that_is_not_a_mapping_of_names_is_refused(bad):
    with pytest.raises(xf.WeightsError, match="state_dict"):
        xf.from_torch(torch.nn.RNN(3, 4), "numpy", state_dict=bad)
