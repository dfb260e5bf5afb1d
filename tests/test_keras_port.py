"""Keras objects in and out: ``xf.from_keras`` carries configuration and weights (issue 12,
defect 2), ``xf.to_keras`` gives native Keras layers, and unsupported settings raise by name.

Every comparison is against Keras itself running the same object, at the stated tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKENDS, TOL, require
from helpers import KINDS, max_err, native, numpy, random_cell_weights

import rnn_xframework as xf
from rnn_xframework import layers

pytest.importorskip("tensorflow", reason="from_keras/to_keras need Keras (on TensorFlow)")
import keras

LAYER = {"SimpleRNNCell": "SimpleRNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}
# Settings that change a layer's meaning; each is carried by from_keras and to_keras. The first
# two are defect 2's cases (relu SimpleRNN, backwards LSTM), run for every cell type.
SETTINGS = {
    "relu": {"activation": "relu"},
    "go_backwards": {"go_backwards": True, "return_sequences": True},
    "last_step": {},
    "no_bias": {"use_bias": False, "return_sequences": True},
    "reset_before": {"reset_after": False, "go_backwards": True},
    "sigmoid_gates_linear": {"activation": "linear"},
}


CASES = [(kind, s) for kind in KINDS for s in SETTINGS if kind == "GRUCell" or "reset_after" not in SETTINGS[s]]


def unsupported(kind: str, setting: str, backend: str) -> str | None:
    """Why ``setting`` cannot run on ``backend`` (None: it runs)."""
    kw = SETTINGS[setting]
    if kw.get("activation") not in (None, "tanh") and backend == "torch" and kind != "SimpleRNNCell":
        return "torch's gated cells are tanh only"
    if kw.get("activation") == "linear" and backend == "torch":
        return "torch.nn.RNNCell is tanh/relu"
    return None


def keras_layer(kind: str, units: int, dim: int, rng: np.random.Generator, dtype: str = "float32", **kw):
    """A built Keras layer with random non-zero weights."""
    layer = getattr(keras.layers, LAYER[kind])(units, dtype=dtype, **kw)
    layer.build((None, None, dim))
    weights = random_cell_weights(rng, kind, [dim], units, dtype, kw.get("reset_after", True))
    layer.set_weights(weights if kw.get("use_bias", True) else weights[:2])
    return layer


def run_keras(layer, x):
    out = layer(x)
    return (
        [keras.ops.convert_to_numpy(o) for o in out]
        if isinstance(out, (list, tuple))
        else keras.ops.convert_to_numpy(out)
    )


def run_lib(rnn, backend, x, **kw):
    out = rnn(native(backend, x), **kw)
    if isinstance(out, tuple):
        y, states = out
        return numpy(backend, y), [[numpy(backend, s) for s in layer] for layer in states]
    return numpy(backend, out)


@pytest.mark.parametrize("kind,setting", CASES)
def test_keras_layer_ports_with_its_settings(backend, kind, setting, rng):
    """Keras layer -> library RNN on every backend: same outputs, same settings (defect 2)."""
    why = unsupported(kind, setting, backend)
    kw = SETTINGS[setting]
    k = keras_layer(kind, 5, 4, rng, **kw)
    if why is not None:
        with pytest.raises(xf.UnsupportedConfigError):
            xf.from_keras(k, backend=backend)
        return
    rnn = xf.from_keras(k, backend=backend)
    assert isinstance(rnn, getattr(layers, LAYER[kind]))
    assert rnn.go_backwards == bool(kw.get("go_backwards"))
    assert rnn.return_sequences == bool(kw.get("return_sequences"))
    assert rnn.cells[0].use_bias == kw.get("use_bias", True)
    x = rng.normal(size=(3, 6, 4)).astype("float32")
    assert max_err(run_lib(rnn, backend, x), run_keras(k, x)) <= TOL["float32"]
    back = xf.to_keras(rnn)
    assert type(back) is type(k)
    assert max_err(run_keras(back, x), run_keras(k, x)) <= TOL["float32"]
    for name in ("return_sequences", "go_backwards", "return_state"):
        assert getattr(back, name) == getattr(k, name)
    for name in ("activation", "use_bias", "reset_after", "recurrent_activation"):
        if hasattr(k.cell, name):
            assert keras.saving.serialize_keras_object(getattr(back.cell, name)) == (
                keras.saving.serialize_keras_object(getattr(k.cell, name))
            )


def test_defect2_settings_no_longer_lost(rng):
    """Issue 12, defect 2 as reported: SimpleRNN(activation="relu") and LSTM(go_backwards=True)
    moved to torch used to differ from Keras by 0.95 and 0.21 (weights only, settings lost)."""
    require("torch")
    x = rng.normal(size=(4, 7, 3)).astype("float32")
    for k in (
        keras_layer("SimpleRNNCell", 8, 3, rng, activation="relu"),
        keras_layer("LSTMCell", 8, 3, rng, go_backwards=True),
    ):
        assert max_err(run_lib(xf.from_keras(k, backend="torch"), "torch", x), run_keras(k, x)) <= TOL["float32"]


@pytest.mark.parametrize("kind", KINDS)
def test_float64_and_dropout_config(backend, kind, rng):
    k = keras_layer(kind, 3, 2, rng, dtype="float64", dropout=0.25, recurrent_dropout=0.5, return_sequences=True)
    rnn = xf.from_keras(k, backend=backend)
    cell = rnn.cells[0]
    assert (cell.dropout, cell.recurrent_dropout, cell.dtype_name) == (0.25, 0.5, "float64")
    x = rng.normal(size=(2, 5, 2))
    assert max_err(run_lib(rnn, backend, x, training=False), run_keras(k, x)) <= TOL["float64"]
    back = xf.to_keras(rnn)
    assert (back.cell.dropout, back.cell.recurrent_dropout, back.dtype_policy.name) == (0.25, 0.5, "float64")


@pytest.mark.parametrize("kind", KINDS)
def test_return_state_is_one_list_per_layer(backend, kind, rng):
    k = keras_layer(kind, 4, 3, rng, return_state=True, return_sequences=True)
    rnn = xf.from_keras(k, backend=backend)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    y, states = run_lib(rnn, backend, x)
    ky, *kstates = run_keras(k, x)
    assert max_err(y, ky) <= TOL["float32"]
    assert len(states) == 1 and len(states[0]) == len(kstates)
    for s, ks in zip(states[0], kstates, strict=True):
        assert max_err(s, ks) <= TOL["float32"]


def test_stacked_cells_rnn_and_cells(backend, rng):
    """Keras RNN over a list of different cells, a StackedRNNCells, and a single cell."""
    cells = [keras.layers.LSTMCell(4), keras.layers.GRUCell(3), keras.layers.SimpleRNNCell(5, activation="relu")]
    k = keras.layers.RNN(cells, return_sequences=True, go_backwards=True)
    k.build((None, None, 2))
    dims = [2, 4, 3]
    for cell, kind, dim in zip(cells, ["LSTMCell", "GRUCell", "SimpleRNNCell"], dims, strict=True):
        cell.set_weights(random_cell_weights(rng, kind, [dim], cell.units, "float32"))
    rnn = xf.from_keras(k, backend=backend)
    assert [c.cell_kind for c in rnn.cells] == ["LSTMCell", "GRUCell", "SimpleRNNCell"]
    x = rng.normal(size=(3, 4, 2)).astype("float32")
    assert max_err(run_lib(rnn, backend, x), run_keras(k, x)) <= TOL["float32"]
    back = xf.to_keras(rnn)
    assert isinstance(back, keras.layers.RNN) and isinstance(back.cell, keras.layers.StackedRNNCells)
    assert max_err(run_keras(back, x), run_keras(k, x)) <= TOL["float32"]

    stack = xf.from_keras(k.cell, backend=backend)
    assert isinstance(stack, layers.StackedRNNCells) and len(stack.cells) == 3
    assert isinstance(xf.to_keras(stack), keras.layers.StackedRNNCells)

    cell = xf.from_keras(cells[0], backend=backend)
    assert isinstance(cell, layers.LSTMCell)
    xt = rng.normal(size=(3, 2)).astype("float32")
    h = [rng.normal(size=(3, 4)).astype("float32") for _ in range(2)]
    out, new = cell(native(backend, xt), [native(backend, s) for s in h])
    kout, knew = cells[0](xt, h)
    assert max_err(numpy(backend, out), keras.ops.convert_to_numpy(kout)) <= TOL["float32"]
    assert max_err(numpy(backend, new[1]), keras.ops.convert_to_numpy(knew[1])) <= TOL["float32"]
    kcell = xf.to_keras(cell)
    assert type(kcell) is keras.layers.LSTMCell
    assert all(np.array_equal(a, b) for a, b in zip(kcell.get_weights(), cells[0].get_weights(), strict=True))


@pytest.mark.parametrize("go_backwards", [False, True])
def test_masked_sequences_match_keras(backend, go_backwards, rng):
    """Embedding(mask_zero=True) -> LSTM: the library RNN with the same mask gives Keras's numbers."""
    emb = keras.layers.Embedding(10, 3, mask_zero=True)
    lstm = keras_layer("LSTMCell", 4, 3, rng, return_sequences=True, go_backwards=go_backwards)
    tokens = np.array([[1, 2, 0, 0, 3], [4, 5, 6, 7, 8]])
    e = emb(tokens)
    expected = keras.ops.convert_to_numpy(lstm(e, mask=emb.compute_mask(tokens)))
    rnn = xf.from_keras(lstm, backend=backend)
    got = run_lib(rnn, backend, keras.ops.convert_to_numpy(e), mask=tokens != 0)
    assert max_err(got, expected) <= TOL["float32"]


def _model(rng):
    inp = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(20, 6)(inp)
    x = keras.layers.SimpleRNN(7, activation="relu", return_sequences=True, name="simple")(x)
    x = keras.layers.LSTM(8, return_sequences=True, go_backwards=True, name="lstm")(x)
    x = keras.layers.GRU(5, name="gru")(x)
    model = keras.Model(inp, keras.layers.Dense(2)(x))
    for name, kind, dim in (("simple", "SimpleRNNCell", 6), ("lstm", "LSTMCell", 7), ("gru", "GRUCell", 8)):
        layer = model.get_layer(name)
        layer.set_weights(random_cell_weights(rng, kind, [dim], layer.cell.units, "float32"))
    return model


def _model_check(model, rnns, backend, rng):
    """The ported recurrent layers replace the model's: same logits to 1e-5."""
    assert list(rnns) == ["simple", "lstm", "gru"]
    tokens = rng.integers(0, 20, size=(3, 7))
    h = keras.ops.convert_to_numpy(model.layers[1](tokens))
    for name in rnns:
        h = run_lib(rnns[name], backend, h)
    dense = model.layers[-1]
    logits = h @ keras.ops.convert_to_numpy(dense.kernel) + keras.ops.convert_to_numpy(dense.bias)
    assert max_err(logits, keras.ops.convert_to_numpy(model(tokens))) <= TOL["float32"]


def test_model_gives_every_recurrent_layer_by_name(backend, rng):
    model = _model(rng)
    _model_check(model, xf.from_keras(model, backend=backend), backend, rng)
    nested = keras.Sequential([keras.Input((None,), dtype="int32"), model])
    assert list(xf.from_keras(nested, backend=backend)) == ["simple", "lstm", "gru"]


def test_keras_file_ports_to_torch(tmp_path, rng):
    require("torch")
    model = _model(rng)
    path = tmp_path / "m.keras"
    model.save(path)
    _model_check(model, xf.from_keras(path, backend="torch"), "torch", rng)
    _model_check(model, xf.from_keras(str(path), backend="torch"), "torch", rng)


def test_library_tf_objects_in_a_model_are_converted(rng):
    inp = keras.Input((5, 3))  # the library's RNN unrolls: a fixed length in a functional model
    lib = layers.GRU(4, return_sequences=True, backend="tf")
    model = keras.Model(inp, lib(inp))
    ported = xf.from_keras(model, backend="numpy")
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    assert max_err(run_lib(ported[lib.name], "numpy", x), keras.ops.convert_to_numpy(model(x))) <= TOL["float32"]


def test_trainable_false_freezes(backend, rng):
    k = keras_layer("GRUCell", 3, 2, rng)
    k.trainable = False
    rnn = xf.from_keras(k, backend=backend)
    if backend == "torch":
        assert rnn.cells[0].cell is not None
        assert not any(p.requires_grad for p in rnn.parameters())
    elif backend == "tensorflow":
        assert rnn.cells[0].trainable_weights == []


def test_unbuilt_layer_gives_unbuilt_object(backend):
    rnn = xf.from_keras(keras.layers.LSTM(4, go_backwards=True), backend=backend)
    assert rnn.cells[0].input_dim is None and rnn.go_backwards
    back = xf.to_keras(rnn)
    assert not back.built and back.go_backwards


@pytest.mark.parametrize(
    "make,setting",
    [
        (lambda: keras.layers.LSTM(3, stateful=True), "stateful"),
        (lambda: keras.layers.Bidirectional(keras.layers.SimpleRNN(3, activation="softplus")), "activation"),
        (lambda: keras.layers.SimpleRNN(3, dtype="mixed_float16"), "dtype"),
        (lambda: keras.layers.SimpleRNN(3, activation="softplus"), "activation"),
        (lambda: keras.layers.LSTM(3, recurrent_activation="hard_sigmoid"), "recurrent_activation"),
        (lambda: keras.layers.GRU(3, kernel_regularizer="l2"), "kernel_regularizer"),
        (lambda: keras.layers.GRU(3, recurrent_constraint="non_neg"), "recurrent_constraint"),
        (lambda: keras.layers.LSTM(3, activity_regularizer="l1"), "activity_regularizer"),
        (lambda: keras.layers.SimpleRNN(3, kernel_initializer="ones"), "kernel_initializer"),
    ],
)
def test_settings_that_cannot_be_carried_raise_by_name(make, setting):
    require("torch")
    with pytest.raises(xf.UnsupportedConfigError, match=setting):
        xf.from_keras(make(), backend="torch")


def test_training_settings_can_be_ignored_or_kept_on_tensorflow(rng):
    require("torch")
    k = keras_layer("GRUCell", 3, 2, rng, kernel_regularizer="l2", bias_constraint="non_neg")
    rnn = xf.from_keras(k, backend="torch", ignore_training_settings=True)
    x = rng.normal(size=(2, 4, 2)).astype("float32")
    assert max_err(run_lib(rnn, "torch", x), run_keras(k, x)) <= TOL["float32"]
    tf_rnn = xf.from_keras(k, backend="tensorflow")
    assert isinstance(tf_rnn.cells[0].kernel_regularizer, keras.regularizers.L2)
    assert isinstance(tf_rnn.cells[0].bias_constraint, keras.constraints.NonNeg)


def half_tanh(z):
    return 0.5 * keras.ops.tanh(z)


def test_custom_activation_stays_on_tensorflow(rng):
    k = keras_layer("SimpleRNNCell", 3, 2, rng, activation=half_tanh)
    rnn = xf.from_keras(k, backend="tensorflow")
    x = rng.normal(size=(2, 4, 2)).astype("float32")
    assert max_err(run_lib(rnn, "tensorflow", x), run_keras(k, x)) <= TOL["float32"]
    with pytest.raises(xf.UnsupportedConfigError, match="activation"):
        xf.from_keras(k, backend="numpy")


def test_wrong_inputs_are_refused(tmp_path):
    with pytest.raises(xf.FrameworkMismatchError):
        xf.from_keras(object(), backend="numpy")
    with pytest.raises(xf.FrameworkMismatchError, match="no recurrent layer"):
        xf.from_keras(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), backend="numpy")
    with pytest.raises(xf.WeightsError, match="load_weights"):
        xf.from_keras(tmp_path / "m.weights.h5", backend="numpy")
    with pytest.raises(xf.FrameworkMismatchError):
        xf.to_keras(keras.layers.LSTM(3))


@pytest.mark.parametrize("src", BACKENDS)
def test_library_objects_to_keras_and_back(src, rng):
    """Any backend's stack -> native Keras -> library: same weights, same outputs."""
    require(src)
    cells = [
        layers.LSTMCell(4, backend=src),
        layers.GRUCell(3, backend=src),
        layers.SimpleRNNCell(2, activation="relu", backend=src),
    ]
    rnn = layers.RNN(cells, return_sequences=True, go_backwards=True, order="layer")
    rnn.build((None, None, 5))
    weights = []
    for kind, dim, units in (("LSTMCell", 5, 4), ("GRUCell", 4, 3), ("SimpleRNNCell", 3, 2)):
        weights += random_cell_weights(rng, kind, [dim], units, "float32")
    rnn.set_weights(weights)
    k = xf.to_keras(rnn)
    x = rng.normal(size=(3, 6, 5)).astype("float32")
    assert max_err(run_keras(k, x), run_lib(rnn, src, x)) <= TOL["float32"]
    again = xf.from_keras(k, backend=src)
    assert all(np.array_equal(a, b) for a, b in zip(again.get_weights(), weights, strict=True))


def test_library_cell_inside_keras_rnn_ports(backend, rng):
    """``keras.layers.RNN`` over the library's TF cell (a Keras cell subclass) ports like Keras's own."""
    cell = layers.GRUCell(3, backend="tf")
    k = keras.layers.RNN(cell, return_sequences=True, go_backwards=True)
    k.build((None, None, 2))
    cell.set_weights(random_cell_weights(rng, "GRUCell", [2], 3, "float32"))
    rnn = xf.from_keras(k, backend=backend)
    x = rng.normal(size=(2, 4, 2)).astype("float32")
    assert rnn.go_backwards and max_err(run_lib(rnn, backend, x), run_keras(k, x)) <= TOL["float32"]
