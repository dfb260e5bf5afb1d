"""Framework objects in, framework objects out: ports from and to Keras (and PyTorch).

Unlike :func:`rnn_xframework.transfer_weights`, which copies arrays between two objects the
user has already built alike, a port reads the framework object's *configuration* too
(activations, ``go_backwards``, ``reset_after``, dropout, ...), so the ported object means the
same thing. What cannot be carried raises :class:`~rnn_xframework.errors.UnsupportedConfigError`
naming the setting; nothing is dropped silently.

This module imports no framework; each function loads the one it needs when it is called.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from rnn_xframework import config
from rnn_xframework.errors import BackendUnavailableError, FrameworkMismatchError, UnsupportedConfigError


# --- Keras ---------------------------------------------------------------------------------------
def from_keras(obj: Any, backend: str | None = None, *, ignore_training_settings: bool = False) -> Any:
    """The library's object on ``backend`` with a Keras object's configuration and weights.

    Args:
        obj: what to port, and what comes back:

            - a Keras ``SimpleRNNCell`` / ``LSTMCell`` / ``GRUCell`` -> the library's cell
              (``layers.SimpleRNNCell``, ...);
            - a Keras ``StackedRNNCells`` -> ``layers.StackedRNNCells``;
            - a Keras recurrent layer (``SimpleRNN``, ``LSTM``, ``GRU``, or ``RNN`` over a cell,
              a list of cells or a ``StackedRNNCells``) -> ``layers.RNN`` with the same
              ``return_sequences``, ``return_state``, ``go_backwards``;
            - a Keras ``Model`` (or the path of a ``.keras`` file, loaded in Keras's safe mode)
              -> ``dict[str, RNN]``: every recurrent layer of the model, nested models included,
              keyed by layer name in the model's order. Other layers (``Embedding``, ``Dense``)
              are not ported; they have direct equivalents in each framework.
        backend: ``"torch"``, ``"tensorflow"`` (``"tf"``) or ``"numpy"``; default
            :func:`rnn_xframework.get_backend`.
        ignore_training_settings: port layers that carry regularizers or constraints to a
            backend without them (they change training only; without this flag they raise).

    Carried: ``units``, ``activation``, ``recurrent_activation``, ``use_bias``, ``dropout``,
    ``recurrent_dropout``, ``unit_forget_bias``, ``reset_after``, the dtype (``float32`` /
    ``float64``), ``trainable=False`` (frozen parameters), the weights (Keras's layout is the
    canonical one), and on ``backend="tensorflow"`` also regularizers, constraints and custom
    activations. An unbuilt Keras object gives an unbuilt library object (built on first call,
    initialized as Keras's defaults; other initializers raise except on TensorFlow).
    ``unroll`` is accepted (it changes Keras's loop, not the numbers).

    Raises:
        UnsupportedConfigError: ``stateful=True``, ``zero_output_for_mask=True``, a
            ``Bidirectional`` wrapper, a mixed-precision dtype policy, an activation or
            ``reset_after=False`` that ``backend`` cannot run, a custom cell class; the message
            names the setting.
        FrameworkMismatchError: ``obj`` is not one of the above (or a model has no recurrent layer).
        WeightsError: a path that is not a ``.keras`` model file (``.weights.h5`` holds no
            configuration: load it into the Keras model first).

    Shape:
        as the Keras object, except ``return_state=True``: the library returns ``(y, states)``
        with one list per layer (``[[h, c]]`` for one LSTM), where Keras returns
        ``[y, h, c]``.

    Example::

        model = keras.Sequential([keras.Input((None,)), keras.layers.Embedding(100, 8),
                                  keras.layers.LSTM(16, go_backwards=True)])
        rnns = xf.from_keras(model, backend="torch")   # {"lstm": <torch RNN>}
        y = rnns["lstm"](torch.randn(4, 7, 8))          # == model.layers[1](...) to 1e-5
    """
    backend = config.resolve(backend)
    if not isinstance(obj, (str, os.PathLike)) and "keras" not in sys.modules:
        # A Keras object cannot exist without Keras loaded; do not import it just to say no.
        raise FrameworkMismatchError(
            f"from_keras: expected a Keras layer, cell, model or a .keras path, got "
            f"{type(obj).__module__}.{type(obj).__name__}"
        )
    from rnn_xframework.backends import keras_port

    return _from_port(keras_port.describe(obj, backend, ignore_training_settings), backend)


def _from_port(port: Any, backend: str) -> Any:
    """The library's object for a description made by ``keras_port.describe``."""
    from rnn_xframework import layers, transfer
    from rnn_xframework.backends import keras_port

    if isinstance(port, dict):
        return {name: _from_port(p, backend) for name, p in port.items()}
    if isinstance(port, keras_port.LibraryObject):
        return transfer.convert(port.obj, backend)
    ports = [port] if isinstance(port, keras_port.CellPort) else port.cells
    cells = [layers.make_cell(p.kind, backend=backend, **p.config) for p in ports]
    if isinstance(port, keras_port.CellPort):
        new = cells[0]
    elif port.flags is None:
        new = layers.StackedRNNCells(cells)
    else:
        new = layers.RNN(cells, backend=backend, **port.flags)
    if ports[0].weights is not None:
        new.set_weights([w for p in ports for w in p.weights or []])  # checked, all-or-nothing
    for cell, p in zip(cells, ports, strict=True):
        if not p.trainable:
            _freeze(cell)
    return new


def _freeze(cell: Any) -> None:
    """Keras's ``trainable=False``: a torch module's parameters stop requiring gradients, a Keras
    layer becomes untrainable; NumPy cells do not train."""
    if hasattr(cell, "requires_grad_"):
        cell.requires_grad_(False)
    elif hasattr(cell, "trainable"):
        cell.trainable = False


def to_keras(obj: Any) -> Any:
    """A native Keras layer with a library object's configuration and weights (any backend).

    A cell gives ``keras.layers.SimpleRNNCell`` / ``LSTMCell`` / ``GRUCell``; a stack
    ``keras.layers.StackedRNNCells``; an ``RNN`` of one cell ``keras.layers.SimpleRNN`` /
    ``LSTM`` / ``GRU``, and of several ``keras.layers.RNN(keras.layers.StackedRNNCells(...))``,
    with ``return_sequences``, ``return_state`` and ``go_backwards``. ``order`` has no Keras
    counterpart and is not needed (both orders give the same numbers). The result needs only
    Keras at inference time; a built object gives a built layer with the same weights, an
    unbuilt one an unbuilt layer (Keras initializes it on its first call).

    Raises:
        FrameworkMismatchError: ``obj`` is not a cell, stack or RNN made by this library.
        BackendUnavailableError: Keras is not installed.

    Shape: as the library object, except ``return_state=True``: the Keras layer returns Keras's
    flat ``[y, h, c]``, the library ``(y, [[h, c]])``.

    Example::

        rnn = layers.LSTM(32, return_sequences=True, backend="torch")  # trained in PyTorch
        keras_model = keras.Sequential([keras.Input((None, 8)), xf.to_keras(rnn)])
    """
    from rnn_xframework import protocol

    structure = protocol.structure_of(obj)  # the type check, before Keras is imported
    if getattr(obj, "time_major", False):
        raise UnsupportedConfigError(
            "to_keras: the RNN has time_major=True ([time, batch, ...] inputs); Keras 3's recurrent layers "
            "take [batch, time, ...] only: rebuild the RNN with time_major=False and transpose the inputs"
        )
    if importlib.util.find_spec("keras") is None:
        raise BackendUnavailableError(
            "to_keras needs the 'keras' package, which is not installed; install it with: "
            'pip install "rnn_xframework[tensorflow]"'
        )
    from rnn_xframework.backends import keras_port

    cells = protocol.cells_of(obj)
    ports = [
        keras_port.CellPort(
            kind=c.cell_kind,
            config={**c.portable_config(), "dtype": c.dtype_name},
            weights=c.get_weights() if c.input_dim is not None else None,
        )
        for c in cells
    ]
    if structure == "cell":
        return keras_port.build(ports[0], cells[0].input_dim, structure)
    flags = None
    if structure == "rnn":
        flags = {name: bool(getattr(obj, name)) for name in ("return_sequences", "return_state", "go_backwards")}
    return keras_port.build(keras_port.RNNPort(ports, flags), cells[0].input_dim, structure)
