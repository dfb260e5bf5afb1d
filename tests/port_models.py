"""Small Keras models covering the whole-model port's vocabulary, for tests/test_models_*.py.

``MODELS[name](dtype)`` builds one, seeded, with weights drawn by Keras (and BatchNormalization
moving statistics set away from 0 / 1). Imported by tests only (Keras must already be importable).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

L = keras.layers


def _model(inputs, outputs, name):
    return keras.Model(inputs, outputs, name=name)


def _seq(name, shape, layers, dtype, input_dtype=None):
    return keras.Sequential([keras.Input(shape, dtype=input_dtype or dtype), *layers], name=name)


def dense(dtype):
    return _seq("dense", (4,), [L.Dense(3, activation="relu", dtype=dtype), L.Dense(2, dtype=dtype)], dtype)


def dense_rank3(dtype):
    return _seq(
        "dense_rank3", (5, 4), [L.Dense(3, activation="tanh", dtype=dtype), L.Activation("softmax", dtype=dtype)], dtype
    )


def sentiment(dtype):
    """The chapter's classifier: Embedding(mask_zero) -> LSTM -> Dense(sigmoid)."""
    return _seq(
        "sentiment",
        (7,),
        [
            L.Embedding(30, 6, mask_zero=True, dtype=dtype),
            L.LSTM(5, dtype=dtype),
            L.Dense(1, activation="sigmoid", dtype=dtype),
        ],
        dtype,
        "int32",
    )


def rnn_stack(dtype):
    return _seq(
        "rnn_stack",
        (5, 3),
        [
            L.SimpleRNN(4, activation="relu", return_sequences=True, dtype=dtype),
            L.GRU(4, return_sequences=True, dtype=dtype),
            L.LSTM(3, dtype=dtype),
        ],
        dtype,
    )


def rnn_library(dtype):
    """Settings without a torch.nn form: Keras dropout, go_backwards, stacked cells."""
    return _seq(
        "rnn_library",
        (5, 3),
        [
            L.LSTM(4, dropout=0.2, recurrent_dropout=0.1, return_sequences=True, dtype=dtype),
            L.GRU(4, go_backwards=True, return_sequences=True, dtype=dtype),
            L.RNN(
                L.StackedRNNCells([L.LSTMCell(3, dtype=dtype), L.SimpleRNNCell(2, dtype=dtype)], dtype=dtype),
                dtype=dtype,
            ),
        ],
        dtype,
    )


def masked_rnns(dtype):
    tokens = keras.Input((6,), dtype="int32")
    x = L.Embedding(20, 4, mask_zero=True, dtype=dtype)(tokens)
    x = L.GRU(4, return_sequences=True, dtype=dtype)(x)
    x = L.Dense(4, dtype=dtype)(x)  # passes the mask on
    x = L.SimpleRNN(3, return_sequences=True, dtype=dtype)(x)
    y, h = L.GRU(3, return_state=True, dtype=dtype)(x)
    return _model(tokens, [y, h], "masked_rnns")


def encoder_decoder(dtype):
    source, target = keras.Input((6,), dtype="int32"), keras.Input((4,), dtype="int32")
    enc = L.Embedding(20, 5, mask_zero=True, dtype=dtype)(source)
    _, h, c = L.LSTM(6, return_state=True, dtype=dtype)(enc)
    dec = L.Embedding(15, 5, dtype=dtype)(target)
    dec = L.LSTM(6, return_sequences=True, dtype=dtype)(dec, initial_state=[h, c])
    out = L.TimeDistributed(L.Dense(15, activation="softmax", dtype=dtype), dtype=dtype)(dec)
    return _model([source, target], out, "encoder_decoder")


def shapes(dtype):
    return _seq(
        "shapes",
        (4, 6),
        [
            L.Flatten(dtype=dtype),
            L.RepeatVector(3, dtype=dtype),
            L.Reshape((6, 12), dtype=dtype),
            L.Permute((2, 1), dtype=dtype),
            L.Dense(2, dtype=dtype),
        ],
        dtype,
    )


def merges(dtype):
    a, b = keras.Input((5, 3), dtype=dtype), keras.Input((5, 3), dtype=dtype)
    cat = L.Concatenate(dtype=dtype)([a, b])
    cat_time = L.Concatenate(axis=1, dtype=dtype)([a, b])
    outs = [
        cat,
        cat_time,
        L.Add(dtype=dtype)([a, b]),
        L.Multiply(dtype=dtype)([a, b]),
        L.Average(dtype=dtype)([a, b, a]),
    ]
    return _model([a, b], outs, "merges")


def masked_merges(dtype):
    a, b = keras.Input((6,), dtype="int32"), keras.Input((6, 4), dtype=dtype)
    ea = L.Embedding(20, 4, mask_zero=True, dtype=dtype)(a)
    mb = L.Masking(0.0, dtype=dtype)(b)
    x = L.Concatenate(dtype=dtype)([ea, b])  # one masked input
    y = L.Add(dtype=dtype)([ea, mb])  # both masked
    x = L.LSTM(3, dtype=dtype)(x)
    y = L.GlobalAveragePooling1D(dtype=dtype)(y)
    z = L.GlobalMaxPooling1D(dtype=dtype)(ea)
    return _model([a, b], [x, y, z], "masked_merges")


def normalization(dtype):
    model = _seq(
        "normalization",
        (5, 3),
        [
            L.BatchNormalization(momentum=0.9, epsilon=1e-3, dtype=dtype),
            L.LSTM(4, return_sequences=True, dtype=dtype),
            L.LayerNormalization(dtype=dtype),
            L.BatchNormalization(center=False, dtype=dtype),
            L.GlobalAveragePooling1D(dtype=dtype),
            L.Dense(2, dtype=dtype),
        ],
        dtype,
    )
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape).astype(dtype))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape).astype(dtype))
            if layer.gamma is not None:
                layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype(dtype))
    return model


def dropouts(dtype):
    return _seq(
        "dropouts",
        (6, 4),
        [
            L.SpatialDropout1D(0.3, dtype=dtype),
            L.Dropout(0.2, dtype=dtype),
            L.GRU(3, dtype=dtype),
            L.Dense(1, dtype=dtype),
        ],
        dtype,
    )


def convolution(dtype):
    return _seq(
        "convolution",
        (9, 3),
        [
            L.Conv1D(4, 3, activation="relu", dtype=dtype),
            L.Conv1D(4, 2, padding="same", strides=2, dtype=dtype),
            L.Conv1D(3, 2, padding="causal", dilation_rate=2, dtype=dtype),
            L.MaxPooling1D(2, padding="same", dtype=dtype),
            L.MaxPooling1D(1, dtype=dtype),
            L.LSTM(2, dtype=dtype),
        ],
        dtype,
    )


def nested(dtype):
    inner = _seq("inner", (5, 3), [L.Dense(4, activation="tanh", dtype=dtype), L.LSTM(3, dtype=dtype)], dtype)
    x = keras.Input((5, 3), dtype=dtype)
    return _model(x, L.Dense(2, dtype=dtype)(inner(x)), "nested")


def shared(dtype):
    """One Dense and one LSTM, each used on two inputs: one module each."""
    a, b = keras.Input((5, 3), dtype=dtype), keras.Input((5, 3), dtype=dtype)
    dense_, lstm = L.Dense(4, dtype=dtype), L.LSTM(3, dtype=dtype)
    ya, yb = lstm(dense_(a)), lstm(dense_(b))
    return _model([a, b], L.Add(dtype=dtype)([ya, yb]), "shared")


def bidirectional(dtype):
    tokens = keras.Input((6,), dtype="int32")
    x = L.Embedding(20, 4, dtype=dtype)(tokens)
    s = L.Bidirectional(L.LSTM(3, return_sequences=True, dtype=dtype), dtype=dtype)(x)
    t = L.Bidirectional(L.GRU(3, dtype=dtype), merge_mode="sum", dtype=dtype)(s)
    u = L.Bidirectional(L.SimpleRNN(2, return_sequences=True, dtype=dtype), merge_mode="ave", dtype=dtype)(x)
    v = L.Bidirectional(L.LSTM(2, return_sequences=True, dtype=dtype), merge_mode="mul", dtype=dtype)(x)
    w = L.Bidirectional(L.LSTM(2, dtype=dtype), merge_mode=None, dtype=dtype)(x)
    return _model(tokens, [t, u, v, *w], "bidirectional")


def bidirectional_masked(dtype):
    tokens = keras.Input((6,), dtype="int32")
    x = L.Embedding(20, 4, mask_zero=True, dtype=dtype)(tokens)
    x = L.Bidirectional(L.LSTM(3, return_sequences=True, dtype=dtype), dtype=dtype)(x)
    y, *states = L.Bidirectional(L.GRU(2, return_state=True, dtype=dtype), dtype=dtype)(x)
    return _model(tokens, [y, *states], "bidirectional_masked")


def bidirectional_library(dtype):
    """Bidirectional layers nn.LSTM(bidirectional=True) cannot hold: Keras dropout, a backward layer of its own."""
    tokens = keras.Input((6,), dtype="int32")
    x = L.Embedding(20, 4, mask_zero=True, dtype=dtype)(tokens)
    lstm = L.LSTM(3, dropout=0.2, return_sequences=True, return_state=True, dtype=dtype)
    x, *states = L.Bidirectional(lstm, dtype=dtype)(x)
    backward = L.GRU(2, go_backwards=True, dtype=dtype)
    y = L.Bidirectional(L.LSTM(2, dtype=dtype), backward_layer=backward, merge_mode="sum", dtype=dtype)(x)
    return _model(tokens, [y, *states], "bidirectional_library")


def activations(dtype):
    x = keras.Input((4,), dtype=dtype)
    names = ["relu", "sigmoid", "tanh", "softmax", "log_softmax", "elu", "selu", "silu", "exponential"]
    names += ["gelu"] if dtype == "float32" else []  # float64: TensorFlow's erf is off by 5e-9
    names += ["relu6", "leaky_relu", "hard_sigmoid", "softsign", "mish", "linear"]
    return _model(x, [L.Dense(3, activation=n, dtype=dtype)(x) for n in names], "activations")


MODELS: dict[str, Callable[[str], keras.Model]] = {
    f.__name__: f
    for f in (
        dense,
        dense_rank3,
        sentiment,
        rnn_stack,
        rnn_library,
        masked_rnns,
        encoder_decoder,
        shapes,
        merges,
        masked_merges,
        normalization,
        dropouts,
        convolution,
        nested,
        shared,
        bidirectional,
        bidirectional_masked,
        bidirectional_library,
        activations,
    )
}


def build(name: str, dtype: str = "float32") -> keras.Model:
    keras.backend.clear_session()  # layer names start afresh: "lstm", not "lstm_7"
    keras.utils.set_random_seed(0)
    return MODELS[name](dtype)
