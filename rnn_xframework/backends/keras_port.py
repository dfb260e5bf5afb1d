"""Keras objects in, Keras objects out: the Keras side of :mod:`rnn_xframework.ports`.

``from_keras`` reads a Keras cell (``SimpleRNNCell``, ``LSTMCell``, ``GRUCell``), a
``StackedRNNCells``, a recurrent layer (``SimpleRNN``, ``LSTM``, ``GRU``, ``RNN`` over any of
those) or every recurrent layer of a model, with its configuration and weights, and builds the
library's object on any backend. ``to_keras`` builds the native Keras layer for a library object.

Weights need no conversion: Keras's ``[kernel, recurrent_kernel, bias]`` *is* the canonical
layout (:mod:`rnn_xframework.layouts`). What this module translates is the configuration; what
it cannot carry raises :class:`~rnn_xframework.errors.UnsupportedConfigError` naming the
setting. This module imports Keras (on whatever backend Keras runs) but not TensorFlow.
"""

from __future__ import annotations

import os
from typing import Any

import keras

from rnn_xframework import layers, protocol, transfer
from rnn_xframework.errors import FrameworkMismatchError, UnsupportedConfigError, WeightsError

KINDS = ("SimpleRNNCell", "LSTMCell", "GRUCell")
_KERAS_CELLS = {kind: getattr(keras.layers, kind) for kind in KINDS}
_KERAS_LAYERS = {"SimpleRNNCell": keras.layers.SimpleRNN, "LSTMCell": keras.layers.LSTM, "GRUCell": keras.layers.GRU}
_DEFAULT_INITIALIZERS = {
    "kernel_initializer": "glorot_uniform",
    "recurrent_initializer": "orthogonal",
    "bias_initializer": "zeros",
}
# Settings that only change training (not the forward pass), and that only Keras layers hold.
_TRAINING_ONLY = (
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
)


def _kind(cell: Any) -> str:
    for kind, cls in _KERAS_CELLS.items():
        if isinstance(cell, cls):
            return kind
    raise UnsupportedConfigError(
        f"from_keras: cell {type(cell).__module__}.{type(cell).__name__} is not a Keras SimpleRNNCell, "
        f"LSTMCell or GRUCell (nor a subclass); only those can be ported"
    )


def _activation(cell: Any, attr: str, backend: str) -> Any:
    fn = getattr(cell, attr)
    name = keras.activations.serialize(fn)
    if isinstance(name, str):
        return name
    if backend == "tensorflow":
        return fn  # a custom callable: Keras's own cell takes it as it is
    raise UnsupportedConfigError(
        f"from_keras: {cell.name}.{attr} is the custom function {fn!r}, which backend {backend!r} cannot "
        "run; use backend='tensorflow', or a built-in activation"
    )


def _cell_kwargs(cell: Any, backend: str, ignore_training_settings: bool, layer: Any) -> dict[str, Any]:
    """Library ``make_cell`` arguments that rebuild Keras ``cell`` on ``backend``."""
    kind = _kind(cell)
    policy = cell.dtype_policy
    if policy.compute_dtype != policy.variable_dtype or policy.compute_dtype not in protocol.DTYPES:
        raise UnsupportedConfigError(
            f"from_keras: {cell.name}.dtype is the policy {policy.name!r}; the library computes in "
            f"float32 or float64 only; build the Keras layer with dtype='float32' or 'float64'"
        )
    kw: dict[str, Any] = {
        "units": int(cell.units),
        "activation": _activation(cell, "activation", backend),
        "use_bias": bool(cell.use_bias),
        "dropout": float(cell.dropout),
        "recurrent_dropout": float(cell.recurrent_dropout),
        "dtype": policy.compute_dtype,
    }
    if kind != "SimpleRNNCell":
        kw["recurrent_activation"] = _activation(cell, "recurrent_activation", backend)
    if kind == "LSTMCell":
        kw["unit_forget_bias"] = bool(cell.unit_forget_bias)
    if kind == "GRUCell":
        kw["reset_after"] = bool(cell.reset_after)

    extras: dict[str, Any] = {}
    for attr in _TRAINING_ONLY:
        value = getattr(cell, attr, None)
        if value is None:
            continue
        if backend == "tensorflow":
            extras[attr] = value  # the library's TF cell is Keras's: it takes the setting as it is
        elif not ignore_training_settings:
            raise UnsupportedConfigError(_training_only_message(cell, attr, value, backend))
    regularizer = None if layer is None else layer.activity_regularizer
    if regularizer is not None and not ignore_training_settings:  # the library's RNN has no such setting
        raise UnsupportedConfigError(_training_only_message(layer, "activity_regularizer", regularizer, backend))
    if not cell.built:  # the initializers still matter: the weights do not exist yet
        for attr, default in _DEFAULT_INITIALIZERS.items():
            value = getattr(cell, attr)
            serial = keras.initializers.serialize(value)
            if serial == keras.initializers.serialize(keras.initializers.get(default)):
                continue
            if backend == "tensorflow":
                extras[attr] = value
            else:
                raise UnsupportedConfigError(
                    f"from_keras: the unbuilt {cell.name} has {attr}={serial!r}; backend {backend!r} "
                    f"initializes like Keras's defaults only; build the Keras layer first (its weights are "
                    "then copied), or use backend='tensorflow'"
                )
    return {**kw, **extras}


def _training_only_message(owner: Any, attr: str, value: Any, backend: str) -> str:
    return (
        f"from_keras: {owner.name}.{attr}={value!r} changes training, and the library's {backend!r} "
        "objects have no such setting; pass ignore_training_settings=True to port without it "
        "(inference is unaffected)" + ("" if attr == "activity_regularizer" else ", or use backend='tensorflow'")
    )


def _port_cells(cells: list[Any], backend: str, ignore: bool, layer: Any) -> list[Any]:
    new = []
    for cell in cells:
        kw = _cell_kwargs(cell, backend, ignore, layer)
        new.append(layers.make_cell(_kind(cell), backend=backend, **kw))
    # The cells' weights, checked all together before any is written.
    if all(c.built for c in cells):
        transfer.set_cells_weights(new, [c.get_weights() for c in cells], where="from_keras")
    elif any(c.built for c in cells):
        raise WeightsError(
            "from_keras: some cells of the stack are built and some are not; call the Keras layer once first"
        )
    if not all(c.trainable for c in cells) or (layer is not None and not layer.trainable):
        _freeze(new, backend, ignore)
    return new


def _freeze(cells: list[Any], backend: str, ignore: bool) -> None:
    """``trainable=False`` in Keras: frozen parameters on torch and TensorFlow."""
    if backend == "torch":
        for cell in cells:
            cell.requires_grad_(False)
    elif backend == "tensorflow":
        for cell in cells:
            cell.trainable = False
    # NumPy has no training: nothing to freeze.


def _check_layer(layer: Any) -> None:
    if getattr(layer, "stateful", False):
        raise UnsupportedConfigError(
            f"from_keras: {layer.name} has stateful=True (states carried between batches); the library's "
            "RNN takes initial_state= on each call instead; rebuild the Keras layer with stateful=False"
        )
    if getattr(layer, "zero_output_for_mask", False):
        raise UnsupportedConfigError(
            f"from_keras: {layer.name} has zero_output_for_mask=True; the library repeats the previous "
            "output at a masked step (Keras's default, zero_output_for_mask=False)"
        )
    # unroll=True changes how Keras builds its loop, not the numbers: nothing to carry.


def _cells_of_keras(cell: Any) -> list[Any]:
    if isinstance(cell, keras.layers.StackedRNNCells):
        return list(cell.cells)
    return [cell]


def port(obj: Any, backend: str, ignore_training_settings: bool = False) -> Any:
    """One Keras cell, stack, recurrent layer or model -> the library's object (see
    :func:`rnn_xframework.ports.from_keras`)."""
    if isinstance(obj, (str, os.PathLike)):
        return port(load(obj), backend, ignore_training_settings)
    if _is_library(obj):  # before the Keras checks: the library's TF cells subclass Keras's
        from rnn_xframework.transfer import convert

        return convert(obj, backend)
    if isinstance(obj, keras.layers.Bidirectional):
        raise UnsupportedConfigError(
            f"from_keras: {obj.name} is a Bidirectional wrapper, which the library has no form of; port its "
            f"forward_layer and backward_layer separately (the backward one has go_backwards=True) and "
            "concatenate their outputs"
        )
    if isinstance(obj, keras.Model):
        return port_model(obj, backend, ignore_training_settings)
    if isinstance(obj, keras.layers.RNN):
        _check_layer(obj)
        cells = _port_cells(_cells_of_keras(obj.cell), backend, ignore_training_settings, obj)
        return layers.RNN(
            cells,
            return_sequences=bool(obj.return_sequences),
            return_state=bool(obj.return_state),
            go_backwards=bool(obj.go_backwards),
            backend=backend,
        )
    if isinstance(obj, keras.layers.StackedRNNCells):
        return layers.StackedRNNCells(_port_cells(list(obj.cells), backend, ignore_training_settings, None))
    if isinstance(obj, tuple(_KERAS_CELLS.values())):
        return _port_cells([obj], backend, ignore_training_settings, None)[0]
    raise FrameworkMismatchError(
        f"from_keras: expected a Keras SimpleRNNCell/LSTMCell/GRUCell, StackedRNNCells, recurrent layer "
        f"(SimpleRNN, LSTM, GRU, RNN), a Model or a .keras path; got {type(obj).__module__}.{type(obj).__name__}"
    )


def _is_library(obj: Any) -> bool:
    try:
        transfer.structure_of(obj)
    except FrameworkMismatchError:
        return False
    return True


def _walk(layer: Any) -> Any:
    for sub in getattr(layer, "layers", []):
        yield sub
        if isinstance(sub, keras.Model):
            yield from _walk(sub)


def port_model(model: Any, backend: str, ignore_training_settings: bool) -> dict[str, Any]:
    """Every recurrent layer of ``model`` (nested models included), in the model's order, by
    layer name; all are checked before any is returned."""
    ported: dict[str, Any] = {}
    for layer in _walk(model):
        if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)) or _is_library(layer):
            ported[layer.name] = port(layer, backend, ignore_training_settings)
    if not ported:
        raise FrameworkMismatchError(
            f"from_keras: model {model.name!r} has no recurrent layer (SimpleRNN, LSTM, GRU, RNN); "
            f"its layers are {[type(la).__name__ for la in _walk(model)]}"
        )
    return ported


def load(path: str | os.PathLike[str]) -> Any:
    """A Keras model from a ``.keras`` file (Keras's safe mode: no arbitrary code)."""
    path = os.fspath(path)
    if path.endswith(".weights.h5"):
        raise WeightsError(
            f"from_keras: {path!r} is a Keras weights file: it holds arrays without the layers' "
            "configuration. Build the Keras model, call model.load_weights(path), then from_keras(model)"
        )
    if not path.endswith(".keras"):
        raise WeightsError(f"from_keras: expected a Keras model file ending in '.keras', got {path!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return keras.saving.load_model(path)


# --- library -> Keras -----------------------------------------------------------------------------
def _keras_cell(cell: Any) -> Any:
    kw = dict(cell.portable_config())
    new = _KERAS_CELLS[cell.cell_kind](dtype=cell.dtype_name, **kw)
    if cell.input_dim is not None:
        new.build((None, cell.input_dim))
        new.set_weights(cell.get_weights())
    return new


def to_keras(obj: Any) -> Any:
    """The native Keras layer for a library cell, stack or RNN (see
    :func:`rnn_xframework.ports.to_keras`)."""
    kind = transfer.structure_of(obj)
    src = transfer.cells_of(obj)
    dim = src[0].input_dim
    if kind == "cell":
        return _keras_cell(src[0])
    if kind == "stack":
        stack = keras.layers.StackedRNNCells([_keras_cell(c) for c in src])
        if dim is not None:
            stack.build((None, dim))
        return stack
    if getattr(obj, "time_major", False):
        raise UnsupportedConfigError(
            "to_keras: the RNN has time_major=True ([time, batch, ...] inputs); Keras 3's recurrent layers "
            "take [batch, time, ...] only: rebuild the RNN with time_major=False and transpose the inputs"
        )
    flags = {
        "return_sequences": bool(obj.return_sequences),
        "return_state": bool(obj.return_state),
        "go_backwards": bool(obj.go_backwards),
        "dtype": src[0].dtype_name,
    }
    if len(src) == 1:  # keras.layers.LSTM(...), as a Keras user writes it
        layer = _KERAS_LAYERS[src[0].cell_kind](**src[0].portable_config(), **flags)
    else:
        layer = keras.layers.RNN(keras.layers.StackedRNNCells([_keras_cell(c) for c in src]), **flags)
    if dim is not None:
        layer.build((None, None, dim))
        layer.set_weights([w for c in src for w in c.get_weights()])
    return layer
