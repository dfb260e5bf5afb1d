"""Framework objects in, framework objects out: ports from and to Keras and PyTorch.

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
from collections.abc import Mapping
from typing import Any

from rnn_xframework import config, registry
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


# --- PyTorch -------------------------------------------------------------------------------------
def from_torch(
    module: Any,
    backend: str | None = None,
    *,
    state_dict: Mapping[str, Any] | None = None,
    prefix: str = "",
    device: Any = None,
    **rnn_kwargs: Any,
) -> Any:
    """The library's object on ``backend`` with a PyTorch module's configuration and weights.

    Args:
        module: what to port, and what comes back:

            - ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` -> ``layers.RNN`` of ``num_layers`` cells
              (``SimpleRNNCell`` with ``activation = nonlinearity``, ``LSTMCell``, ``GRUCell``),
              ``return_sequences=True`` like the module, and the module's layout:
              ``batch_first=False`` (PyTorch's default) gives ``time_major=True``, so the RNN
              takes and returns ``[time, batch, ...]`` exactly as the module does;
            - ``torch.nn.RNNCell`` / ``LSTMCell`` / ``GRUCell`` -> the library's cell.
        backend: ``"torch"``, ``"tensorflow"`` (``"tf"``) or ``"numpy"``; default
            :func:`rnn_xframework.get_backend`.
        state_dict: a checkpoint to port instead of ``module``'s own weights. PyTorch
            checkpoints hold weights only, so pass a module built with the constructor
            arguments the checkpoint was saved with: ``xf.from_torch(nn.LSTM(**kwargs),
            state_dict=sd)``. It is loaded with PyTorch's strict checks into a copy of
            ``module`` (``module`` itself is never changed); a mismatch raises
            :class:`~rnn_xframework.errors.WeightsError`.
        prefix: with ``state_dict``, the key prefix of the module's entries in a whole model's
            checkpoint (``"encoder.lstm."``).
        device: the device of the new object (default: the backend's default, CPU).
        **rnn_kwargs: for modules, arguments of :func:`rnn_xframework.layers.RNN`
            (``return_sequences``, ``return_state``, ``order``; ``time_major`` to choose the
            layout yourself, e.g. ``time_major=False`` for a batch-major Keras model: the layout
            moves the time axis, not the numbers).

    Weights follow the canonical layouts: a SimpleRNN/LSTM's ``bias_ih + bias_hh`` become one
    Keras bias, a GRU's two biases its two bias rows; outputs match the module's within float
    rounding (1e-5 in float32, 1e-12 in float64).

    Raises:
        UnsupportedConfigError: ``bidirectional=True``, ``proj_size > 0``, between-layer
            ``dropout > 0``, or a setting ``backend`` cannot run; the message names it.
        FrameworkMismatchError: ``module`` is not one of the six classes above (subclasses too:
            their ``forward`` may compute something else).

    Example::

        lstm = torch.nn.LSTM(10, 32, num_layers=2)           # time-major, PyTorch's default
        rnn = xf.from_torch(lstm, backend="tensorflow")      # a Keras layer, time_major=True
        y = rnn(x_time_major)                                # == lstm(x_time_major)[0]
    """
    if not any(c.__module__.split(".")[0] == "torch" for c in type(module).__mro__):  # no torch import
        raise FrameworkMismatchError(
            f"from_torch: expected a torch.nn recurrent module or cell, got "
            f"{type(module).__module__}.{type(module).__name__}"
        )
    from rnn_xframework import layers, transfer

    registry.get("torch")
    from rnn_xframework.backends.torch import port as torch_port

    torch_port.check_module(module)
    module = torch_port.loaded(module, state_dict, prefix)
    if not torch_port.is_cell(module):
        return transfer.from_torch_fused(module, backend, device=device, **rnn_kwargs)
    if rnn_kwargs:
        raise TypeError(f"from_torch: a cell takes no RNN arguments, got {sorted(rnn_kwargs)}")
    native = torch_port.read_cell(module)
    cell = layers.make_cell(native.kind, backend=backend, device=device, **native.cell_kwargs)
    cell.build((None, native.input_size))
    cell.set_weights(native.weights)
    return cell


def to_torch(obj: Any, *, device: Any = None) -> Any:
    """A native PyTorch module with ``obj``'s configuration and weights, needing no part of this
    library to run.

    Args:
        obj: a built object of any backend: an ``RNN`` of one cell type, size and bias setting
            -> ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` (``num_layers`` = its cells,
            ``batch_first = not obj.time_major``; the module returns the whole sequence and
            the final states, as PyTorch's do: ``y[:, -1]`` is a ``return_sequences=False``
            output); a cell -> ``torch.nn.RNNCell`` / ``LSTMCell`` / ``GRUCell`` (called
            ``cell(x, h)`` / ``cell(x, (h, c))``).
        device: where the module's parameters go (default CPU).

    Raises:
        UnsupportedConfigError: what PyTorch's modules cannot compute: mixed cell types or
            sizes, ``go_backwards``, Keras dropout, activations other than PyTorch's, GRU
            ``reset_after=False``, an unbuilt object, a ``StackedRNNCells``.
    """
    registry.get("torch")
    from rnn_xframework.backends.torch import port as torch_port

    return torch_port.to_torch(obj, device=device)
