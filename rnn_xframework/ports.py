"""Framework objects in, framework objects out: ports from and to PyTorch.

A port reads the framework object's configuration as well as its weights, so the ported
object means the same thing. What cannot be carried raises
:class:`~rnn_xframework.errors.UnsupportedConfigError` naming the setting.

This module imports no framework; each function loads the one it needs when it is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rnn_xframework import registry
from rnn_xframework.errors import FrameworkMismatchError


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
    from rnn_xframework.backends import torch_port

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
    from rnn_xframework.backends import torch_port

    return torch_port.to_torch(obj, device=device)
