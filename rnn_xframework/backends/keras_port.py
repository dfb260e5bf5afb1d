"""Keras objects in, Keras objects out: the Keras side of :mod:`rnn_xframework.ports`.

:func:`describe` reads a Keras cell (``SimpleRNNCell``, ``LSTMCell``, ``GRUCell``), a
``StackedRNNCells``, a recurrent layer (``SimpleRNN``, ``LSTM``, ``GRU``, ``RNN`` over any of
those) or every recurrent layer of a model into framework-free descriptions (:class:`CellPort`,
:class:`RNNPort`) for a target backend; :func:`build` makes the native Keras layer from such a
description. :mod:`rnn_xframework.ports` turns descriptions into the library's objects and back,
so this module never imports the layers above it.

Weights need no conversion: Keras's ``[kernel, recurrent_kernel, bias]`` *is* the canonical
layout (:mod:`rnn_xframework.layouts`). What this module translates is the configuration; what
it cannot carry raises :class:`~rnn_xframework.errors.UnsupportedConfigError` naming the
setting. This module imports Keras (on whatever backend Keras runs) but not TensorFlow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from rnn_xframework import archives, cells, protocol
from rnn_xframework.errors import FrameworkMismatchError, UnsupportedConfigError, WeightsError
from rnn_xframework.weightfile import short

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


@dataclass
class CellPort:
    """One cell: ``make_cell(kind, **config)``, then ``weights`` (canonical; ``None``: unbuilt)."""

    kind: str
    config: dict[str, Any]
    weights: list[np.ndarray] | None = None
    trainable: bool = True
    source: Any = field(default=None, repr=False, compare=False)
    """The Keras cell read (``None`` for a library object's description): a cell met twice (a
    cell that is also inside a Keras ``RNN``) is ported once (:func:`rnn_xframework.from_keras`)."""


@dataclass
class RNNPort:
    """A stack (``flags`` is ``None``) or a sequence layer (``return_sequences``, ...) of cells."""

    cells: list[CellPort]
    flags: dict[str, bool] | None = field(default=None)


@dataclass
class BidirectionalPort:
    """A Keras ``Bidirectional``: its two layers as they are (the backward one has
    ``go_backwards`` the other way round) and ``merge_mode``."""

    forward: Any
    backward: Any
    merge_mode: Any


@dataclass
class LibraryObject:
    """One of the library's own TensorFlow objects met in a Keras model: converted, not read."""

    obj: Any


def _keras_cells() -> dict[str, type]:
    """Cell type -> Keras cell class, for every registered spec that names one (the built-in three)."""
    found = {}
    for name in cells.names():
        keras_class = cells.get(name).keras_class
        if keras_class is not None and hasattr(keras.layers, keras_class):
            found[name] = getattr(keras.layers, keras_class)
    return found


def _keras_layer(kind: str) -> type:
    """``keras.layers.LSTM`` for ``"LSTMCell"``: the sequence layer over one Keras cell."""
    return getattr(keras.layers, cells.get(kind).keras_class.removesuffix("Cell"))


def _kind(cell: Any) -> str:
    for kind, cls in _keras_cells().items():  # subclasses too: the library's TF cells, users' cells
        if isinstance(cell, cls):
            return kind
    raise UnsupportedConfigError(
        f"from_keras: cell {type(cell).__module__}.{type(cell).__name__} is not a Keras "
        f"{' / '.join(_keras_cells())} (nor a subclass); only those can be ported"
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
    spec = cells.get(kind)  # the cell type's settings, named as Keras names them
    kw: dict[str, Any] = {key: getattr(cell, key) for key in spec.config_keys if key not in spec.activations}
    kw.update({key: _activation(cell, key, backend) for key in spec.activations})
    kw["dtype"] = policy.compute_dtype

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


def describe_cells(cells: list[Any], backend: str, ignore: bool, layer: Any) -> list[CellPort]:
    """One :class:`CellPort` per Keras cell of a stack, every setting checked for ``backend``
    (``ignore``: drop training-only settings instead of refusing them); ``layer`` is the Keras
    layer holding the cells (its ``trainable`` freezes them), or ``None``. Shared by
    :func:`describe` and the whole-model reader (:mod:`rnn_xframework.models.keras_reader`)."""
    built = [c.built for c in cells]
    if any(built) and not all(built):
        raise WeightsError(
            "from_keras: some cells of the stack are built and some are not; call the Keras layer once first"
        )
    frozen = layer is not None and not layer.trainable
    return [
        CellPort(
            kind=_kind(c),
            config=_cell_kwargs(c, backend, ignore, layer),
            weights=[np.asarray(w) for w in c.get_weights()] if c.built else None,
            trainable=bool(c.trainable) and not frozen,
            source=c,
        )
        for c in cells
    ]


def _check_layer(layer: Any) -> None:
    if getattr(layer, "stateful", False):
        raise UnsupportedConfigError(
            f"from_keras: {layer.name} has stateful=True (states carried between batches); the library's "
            "RNN takes initial_state= on each call instead; rebuild the Keras layer with stateful=False"
        )
    # unroll=True changes how Keras builds its loop, not the numbers: nothing to carry.


def _cells_of_keras(cell: Any) -> list[Any]:
    if isinstance(cell, keras.layers.StackedRNNCells):
        return list(cell.cells)
    return [cell]


def describe(obj: Any, backend: str, ignore_training_settings: bool = False) -> Any:
    """One Keras cell, stack or recurrent layer -> :class:`CellPort` / :class:`RNNPort`; a model
    or a ``.keras`` path -> ``dict[str, RNNPort | LibraryObject]`` (see
    :func:`rnn_xframework.ports.from_keras`). Every setting is checked here."""
    if isinstance(obj, (str, os.PathLike)):
        model = load(obj)
        try:
            return describe(model, backend, ignore_training_settings)
        except (FrameworkMismatchError, UnsupportedConfigError) as e:  # say which file
            raise type(e)(f"{os.fspath(obj)!r}: {e}") from e
    if _is_library(obj):  # before the Keras checks: the library's TF cells subclass Keras's
        return LibraryObject(obj)
    if isinstance(obj, keras.layers.Bidirectional):
        return _describe_bidirectional(obj, backend, ignore_training_settings)
    if isinstance(obj, keras.Model):
        return _describe_model(obj, backend, ignore_training_settings)
    if isinstance(obj, keras.layers.RNN):
        _check_layer(obj)
        flags = {name: bool(getattr(obj, name)) for name in RNN_FLAGS}
        return RNNPort(describe_cells(_cells_of_keras(obj.cell), backend, ignore_training_settings, obj), flags)
    if isinstance(obj, keras.layers.StackedRNNCells):
        return RNNPort(describe_cells(list(obj.cells), backend, ignore_training_settings, None))
    if isinstance(obj, tuple(_keras_cells().values())):
        return describe_cells([obj], backend, ignore_training_settings, None)[0]
    raise FrameworkMismatchError(
        f"from_keras: expected a Keras SimpleRNNCell/LSTMCell/GRUCell, StackedRNNCells, recurrent layer "
        f"(SimpleRNN, LSTM, GRU, RNN), a Model or a .keras path; got {type(obj).__module__}.{type(obj).__name__}"
    )


RNN_FLAGS = ("return_sequences", "return_state", "go_backwards", "zero_output_for_mask")
"""The settings of a Keras recurrent layer that the library's ``RNN`` takes under the same names."""


def _describe_bidirectional(obj: Any, backend: str, ignore_training_settings: bool) -> BidirectionalPort:
    parts = []
    for layer in (obj.forward_layer, obj.backward_layer):
        if not (isinstance(layer, keras.layers.RNN) or _is_library(layer)):
            raise UnsupportedConfigError(
                f"from_keras: {obj.name} wraps {type(layer).__module__}.{type(layer).__name__}; the library's "
                "Bidirectional runs recurrent layers only (SimpleRNN, LSTM, GRU, RNN)"
            )
        parts.append(describe(layer, backend, ignore_training_settings))
    inner = obj.forward_layer.dtype_policy.compute_dtype
    if obj.dtype_policy.compute_dtype != inner:
        raise UnsupportedConfigError(
            f"from_keras: {obj.name} computes in {obj.dtype_policy.compute_dtype} around layers computing in "
            f"{inner} (Keras casts their outputs); build the Bidirectional with dtype={inner!r}"
        )
    return BidirectionalPort(parts[0], parts[1], obj.merge_mode)


def _is_library(obj: Any) -> bool:
    return type(obj).__module__.startswith("rnn_xframework.") and isinstance(getattr(obj, "backend", None), str)


def _walk(layer: Any) -> Any:
    for sub in getattr(layer, "layers", []):
        yield sub
        if isinstance(sub, keras.Model):
            yield from _walk(sub)


def _describe_model(model: Any, backend: str, ignore_training_settings: bool) -> dict[str, Any]:
    """Every recurrent layer of ``model`` (nested models included), in the model's order, by
    layer name; all are checked before any is returned."""
    found: dict[str, Any] = {}
    for layer in _walk(model):
        if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)) or _is_library(layer):
            found[layer.name] = describe(layer, backend, ignore_training_settings)
    if not found:
        raise FrameworkMismatchError(
            f"from_keras: model {model.name!r} has no recurrent layer (SimpleRNN, LSTM, GRU, RNN); "
            f"its layers are {[type(la).__name__ for la in _walk(model)]}"
        )
    return found


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

    def fail(problem: str) -> WeightsError:
        return WeightsError(f"from_keras: {path!r} {problem}")

    archives.check_keras_archive(path, fail)
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as e:  # the file is untrusted: whatever Keras raises on it, say which file
        detail = short(f"{type(e).__name__}: {e}", 400)
        if "safe_mode" in str(e) or "Lambda" in str(e):
            raise fail(
                f"holds code (a Lambda layer or a pickled function) that Keras's safe mode refused to run: "
                f"{detail}. If you trust it, load it with keras.saving.load_model(path, safe_mode=False) and "
                "pass the model"
            ) from e
        raise fail(f"cannot be loaded as a Keras model ({detail})") from e


# --- library -> Keras -----------------------------------------------------------------------------
def _keras_cell(cell: CellPort, input_dim: int | None) -> Any:
    new = _keras_cells()[cell.kind](**cell.config)
    if input_dim is not None and cell.weights is not None:
        new.build((None, input_dim))
        new.set_weights(cell.weights)
    return new


def build_bidirectional(
    forward: Any, backward: Any, merge_mode: Any, input_dim: int | None, weights: list[np.ndarray]
) -> Any:
    """``keras.layers.Bidirectional`` over two Keras layers (made by :func:`build`), with
    ``weights`` (forward's then backward's) when ``input_dim`` is known. Keras makes its forward
    layer anew from ``forward``'s config, so the weights are set after it is built."""
    layer = keras.layers.Bidirectional(
        forward, merge_mode=merge_mode, backward_layer=backward, dtype=forward.dtype_policy.name
    )
    if input_dim is not None:
        layer.build((None, None, input_dim))
        layer.set_weights(weights)
    return layer


def build(port: CellPort | RNNPort, input_dim: int | None, structure: str) -> Any:
    """The native Keras object for a description of a library object (``structure``: ``"cell"``,
    ``"stack"`` or ``"rnn"``; ``input_dim`` ``None`` for an unbuilt one); see
    :func:`rnn_xframework.ports.to_keras`."""
    if isinstance(port, CellPort):
        return _keras_cell(port, input_dim)
    dims = [input_dim] + [c.config["units"] for c in port.cells[:-1]]
    if structure == "stack":
        stack = keras.layers.StackedRNNCells([_keras_cell(c, d) for c, d in zip(port.cells, dims, strict=True)])
        if input_dim is not None:
            stack.build((None, input_dim))
        return stack
    flags = {**(port.flags or {}), "dtype": port.cells[0].config["dtype"]}
    if len(port.cells) == 1:  # keras.layers.LSTM(...), as a Keras user writes it
        config = {k: v for k, v in port.cells[0].config.items() if k != "dtype"}
        layer = _keras_layer(port.cells[0].kind)(**config, **flags)
    else:
        layer = keras.layers.RNN(keras.layers.StackedRNNCells([_keras_cell(c, None) for c in port.cells]), **flags)
    if input_dim is not None:
        layer.build((None, None, input_dim))
        layer.set_weights([w for c in port.cells for w in c.weights or []])
    return layer
