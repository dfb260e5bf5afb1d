"""Issue 12's directions from PyTorch into Keras, end to end: a torch module, a torch cell and a
torch checkpoint (``state_dict`` + constructor arguments) become native Keras layers through
``xf.from_torch(..., backend="tensorflow")`` and ``xf.to_keras``, and compute what the torch
object computes (float32, 1e-5), for every cell type. The Keras -> PyTorch directions are in
tests/test_keras_port.py (layer, model and ``.keras`` file)."""

import numpy as np
import pytest
from conftest import TOL, require
from helpers import KINDS, max_err

import rnn_xframework as xf

torch = pytest.importorskip("torch")
require("tensorflow")
keras = pytest.importorskip("keras")

MODULES = {"SimpleRNNCell": torch.nn.RNN, "LSTMCell": torch.nn.LSTM, "GRUCell": torch.nn.GRU}
CELLS = {"SimpleRNNCell": torch.nn.RNNCell, "LSTMCell": torch.nn.LSTMCell, "GRUCell": torch.nn.GRUCell}
KERAS_LAYERS = {"SimpleRNNCell": "SimpleRNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}
FEATURES, UNITS, BATCH, STEPS = 5, 6, 3, 7


def randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=g) - 0.5)  # both torch biases non-zero
    return module


def keras_sequence(layer, x):
    """A Keras recurrent layer's whole output sequence, whatever its return_* settings."""
    out = layer(x)
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_torch_module_to_native_keras(kind, num_layers, rng):
    module = randomize(MODULES[kind](FEATURES, UNITS, num_layers=num_layers, batch_first=True))
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    want, _ = module(torch.from_numpy(x))
    layer = xf.to_keras(xf.from_torch(module, backend="tensorflow"))
    assert layer.__class__.__module__.startswith("keras.")  # native Keras, not the library's class
    if num_layers == 1:
        assert type(layer).__name__ == KERAS_LAYERS[kind]
    assert max_err(keras_sequence(layer, x), want.detach().numpy()) <= TOL["float32"]


@pytest.mark.parametrize("kind", KINDS)
def test_torch_cell_to_native_keras(kind, rng):
    cell = randomize(CELLS[kind](FEATURES, UNITS))
    x = rng.normal(size=(BATCH, FEATURES)).astype("float32")
    states = [rng.uniform(-1, 1, (BATCH, UNITS)).astype("float32") for _ in range(2 if kind == "LSTMCell" else 1)]
    torch_states = tuple(torch.from_numpy(s) for s in states)
    got_torch = cell(torch.from_numpy(x), torch_states if kind == "LSTMCell" else torch_states[0])
    want = (got_torch[0] if kind == "LSTMCell" else got_torch).detach().numpy()
    kcell = xf.to_keras(xf.from_torch(cell, backend="tensorflow"))
    assert type(kcell).__name__ == kind and kcell.__class__.__module__.startswith("keras.")
    out, new_states = kcell(x, states)
    assert max_err(np.asarray(out), want) <= TOL["float32"]
    if kind == "LSTMCell":
        assert max_err(np.asarray(new_states[1]), got_torch[1].detach().numpy()) <= TOL["float32"]


@pytest.mark.parametrize("kind", KINDS)
def test_torch_checkpoint_to_native_keras(kind, rng, tmp_path):
    """Only the file and the constructor arguments, as a user who gets a checkpoint has."""
    args = {"input_size": FEATURES, "hidden_size": UNITS, "num_layers": 2, "batch_first": True}
    trained = randomize(MODULES[kind](**args), seed=3)
    path = tmp_path / "ckpt.pt"
    torch.save({"rnn." + k: v for k, v in trained.state_dict().items()}, path)
    state_dict = torch.load(path, weights_only=True)
    ported = xf.from_torch(MODULES[kind](**args), backend="tensorflow", state_dict=state_dict, prefix="rnn.")
    layer = xf.to_keras(ported)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
    want, _ = trained(torch.from_numpy(x))
    assert max_err(keras_sequence(layer, x), want.detach().numpy()) <= TOL["float32"]
