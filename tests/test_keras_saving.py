"""The library's TensorFlow classes in ``.keras`` files (issue 12, defect 3): registered Keras
serializables with ``get_config``/``from_config``, so ``model.save`` and
``keras.saving.load_model`` round-trip with identical outputs and no ``custom_objects``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import KINDS, random_cell_weights

import rnn_xframework as xf
from rnn_xframework import layers

pytest.importorskip("tensorflow", reason="Keras saving needs TensorFlow")
import keras


def save_and_load(model, path):
    model.save(path)
    assert path.stat().st_size > 0
    return keras.saving.load_model(path)  # safe mode, no custom_objects


def outputs(model, x):
    out = model(x)
    return [np.asarray(o) for o in keras.tree.flatten(out)]


@pytest.mark.parametrize("kind", KINDS)
def test_model_holding_a_library_layer_saves_and_loads(kind, tmp_path, rng):
    """Defect 3 as reported: ``layers.LSTM(..., backend="tf")`` in a model raised
    NotImplementedError on save and left a 0-byte file."""
    inp = keras.Input((6, 3))
    lib = getattr(layers, {"SimpleRNNCell": "SimpleRNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}[kind])(
        4, return_sequences=True, go_backwards=True, dropout=0.1, backend="tf"
    )
    model = keras.Model(inp, keras.layers.Dense(2)(lib(inp)))
    lib.set_weights(random_cell_weights(rng, kind, [3], 4, "float32"))
    loaded = save_and_load(model, tmp_path / "m.keras")
    x = rng.normal(size=(2, 6, 3)).astype("float32")
    for a, b in zip(outputs(loaded, x), outputs(model, x), strict=True):
        np.testing.assert_array_equal(a, b)
    again = loaded.layers[1]
    assert isinstance(again, layers.RNN) and type(again) is type(lib)
    assert (again.go_backwards, again.return_sequences, again.order) == (True, True, "timestep")
    assert again.cells[0].dropout == 0.1 and again.cells[0].cell_kind == kind


def test_library_stack_with_every_setting_round_trips(tmp_path, rng):
    cells = [
        layers.LSTMCell(4, backend="tf", dtype="float64"),
        layers.GRUCell(3, reset_after=False, backend="tf", dtype="float64"),
        layers.SimpleRNNCell(2, activation="relu", use_bias=False, backend="tf", dtype="float64"),
    ]
    rnn = layers.RNN(cells, return_sequences=True, return_state=True, order="layer")
    inp = keras.Input((5, 3), dtype="float64")
    y, states = rnn(inp)
    model = keras.Model(inp, [y, states])
    weights = random_cell_weights(rng, "LSTMCell", [3], 4, "float64")
    weights += random_cell_weights(rng, "GRUCell", [4], 3, "float64", reset_after=False)
    weights += random_cell_weights(rng, "SimpleRNNCell", [3], 2, "float64")[:2]
    rnn.set_weights(weights)
    loaded = save_and_load(model, tmp_path / "stack.keras")
    x = rng.normal(size=(2, 5, 3))
    for a, b in zip(outputs(loaded, x), outputs(model, x), strict=True):
        np.testing.assert_array_equal(a, b)
    again = loaded.layers[1]
    assert again.order == "layer" and again.return_state
    assert [c.dtype_name for c in again.cells] == ["float64"] * 3
    assert again.cells[1].reset_after is False and again.cells[2].use_bias is False


@pytest.mark.parametrize("kind", KINDS)
def test_library_cell_inside_keras_rnn_loads_without_custom_objects(kind, tmp_path, rng):
    """Defect 3, second half: a library cell in ``keras.layers.RNN`` saved, but did not load."""
    inp = keras.Input((5, 3))
    cell = getattr(layers, kind)(4, backend="tf")
    model = keras.Model(inp, keras.layers.RNN(cell, return_sequences=True)(inp))
    cell.set_weights(random_cell_weights(rng, kind, [3], 4, "float32"))
    loaded = save_and_load(model, tmp_path / "cell.keras")
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    np.testing.assert_array_equal(outputs(loaded, x)[0], outputs(model, x)[0])
    assert isinstance(loaded.layers[1].cell, getattr(layers, kind))


def test_config_round_trip_keeps_the_device_and_registered_names():
    cell = layers.GRUCell(3, backend="tf", device="/CPU:0", recurrent_dropout=0.2)
    config = cell.get_config()
    assert config["device"] == "/CPU:0"
    assert keras.saving.get_registered_name(type(cell)) == "rnn_xframework>GRUCell"
    clone = type(cell).from_config(config)
    assert (clone.device, clone.recurrent_dropout, clone.units) == ("/CPU:0", 0.2, 3)
    rnn = layers.RNN([layers.LSTMCell(2, backend="tf")], go_backwards=True)
    assert keras.saving.get_registered_name(type(rnn)) == "rnn_xframework>RNN"
    assert keras.saving.get_registered_name(type(rnn.cell)) == "rnn_xframework>StackedRNNCells"
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(rnn))
    assert clone.go_backwards and clone.cells[0].cell_kind == "LSTMCell"


def test_saved_library_model_ports_to_torch(tmp_path, rng):
    """A ``.keras`` file holding the library's TF layers -> torch, through ``from_keras``."""
    pytest.importorskip("torch")
    inp = keras.Input((5, 3))
    lib = layers.LSTM(4, go_backwards=True, backend="tf")
    model = keras.Model(inp, lib(inp))
    lib.set_weights(random_cell_weights(rng, "LSTMCell", [3], 4, "float32"))
    model.save(tmp_path / "lib.keras")
    (torch_rnn,) = xf.from_keras(tmp_path / "lib.keras", backend="torch").values()
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    import torch

    got = torch_rnn(torch.from_numpy(x)).detach().numpy()
    assert np.max(np.abs(got - outputs(model, x)[0])) <= 1e-5


def test_to_keras_layers_save_as_plain_keras(tmp_path, rng):
    """``xf.to_keras`` output holds no library class: the saved config names only Keras's."""
    pytest.importorskip("torch")
    rnn = layers.RNN([layers.LSTMCell(4, backend="torch"), layers.GRUCell(3, backend="torch")], return_sequences=True)
    rnn.build((None, None, 2))
    weights = random_cell_weights(rng, "LSTMCell", [2], 4, "float32")
    rnn.set_weights(weights + random_cell_weights(rng, "GRUCell", [4], 3, "float32"))
    model = keras.Sequential([keras.Input((None, 2)), xf.to_keras(rnn)])
    loaded = save_and_load(model, tmp_path / "plain.keras")
    assert "rnn_xframework" not in json.dumps(loaded.get_config())
    x = rng.normal(size=(2, 5, 2)).astype("float32")
    np.testing.assert_array_equal(outputs(loaded, x)[0], outputs(model, x)[0])


def test_custom_cell_type_saves_and_loads(tmp_path, rng, mgu):
    """A cell type registered through ``rnn_xframework.cells.register`` (Keras has no class for it,
    the ``mgu`` fixture registers it) saves and loads by its registered name while its spec is registered."""
    inp = keras.Input((5, 3))
    rnn = layers.RNN(layers.make_cell("MGUCell", units=4, backend="tf"), return_sequences=True)
    model = keras.Model(inp, rnn(inp))
    rnn.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in rnn.get_weights()])
    loaded = save_and_load(model, tmp_path / "mgu.keras")
    assert "rnn_xframework>MGUCell" in json.dumps(loaded.get_config())
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    np.testing.assert_array_equal(outputs(loaded, x)[0], outputs(model, x)[0])
    assert loaded.layers[1].cells[0].cell_kind == "MGUCell"
