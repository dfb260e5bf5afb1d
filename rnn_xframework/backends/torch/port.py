"""PyTorch's own recurrent modules to and from this library's objects (``xf.from_torch`` /
``xf.to_torch``), configuration and weights together.

=============================================  ==============================================
PyTorch                                        rnn_xframework
=============================================  ==============================================
``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``           ``layers.RNN`` of ``num_layers`` cells (see
                                               :mod:`~rnn_xframework.backends.torch.nn_modules`);
                                               ``batch_first=False`` -> ``time_major=True``
``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell``  ``layers.SimpleRNNCell`` / ``LSTMCell`` / ``GRUCell``
``nonlinearity``                               ``activation`` (``"tanh"`` / ``"relu"``)
``hidden_size``, ``bias``, ``input_size``       ``units``, ``use_bias``, the built input size
=============================================  ==============================================

Weights go through the canonical layouts (:mod:`rnn_xframework.layouts`): a SimpleRNN or LSTM's
two PyTorch biases become one Keras bias (their sum), a GRU's two biases its two bias rows. What
has no counterpart raises :class:`UnsupportedConfigError` naming the setting: ``bidirectional``,
``proj_size``, PyTorch's between-layer ``dropout`` (Keras dropout is a different model), and on
the way back Keras dropout, activations PyTorch lacks, GRU ``reset_after=False``.

A checkpoint is a ``state_dict`` plus the module's constructor arguments: build the module from
its arguments and pass the ``state_dict`` (``prefix`` picks one module's entries out of a whole
model's checkpoint); it is loaded with PyTorch's own strict checks into a copy, so the module
given is never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from rnn_xframework import layouts, protocol
from rnn_xframework.backends.torch import kinds, nn_modules
from rnn_xframework.errors import FrameworkMismatchError, UnsupportedConfigError, WeightsError


class NativeCell(NamedTuple):
    """What a ``torch.nn`` cell holds, framework-free: the cell type and arguments, the input
    size and the canonical weights."""

    kind: str
    cell_kwargs: dict[str, Any]
    input_size: int
    weights: list[np.ndarray]


def loaded(module: nn.Module, state_dict: Mapping[str, Any] | None, prefix: str) -> nn.Module:
    """``module`` itself, or a copy of it with ``state_dict``'s entries under ``prefix`` loaded
    (PyTorch's strict checks; ``module`` is never changed)."""
    if state_dict is None:
        if prefix:
            raise WeightsError("from_torch: prefix= selects entries of a state_dict; pass state_dict= too")
        return module
    if not isinstance(state_dict, Mapping):
        raise WeightsError(
            f"from_torch: state_dict= must be a mapping of names to tensors (module.state_dict(), or what "
            f"torch.load returns), got {type(state_dict).__name__}"
        )
    if not all(isinstance(k, str) for k in state_dict):
        bad = next(k for k in state_dict if not isinstance(k, str))
        raise WeightsError(f"from_torch: state_dict keys must be str (parameter names), got {bad!r}")
    entries = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not entries:
        keys = sorted(state_dict)[:6]
        raise WeightsError(f"from_torch: no key of the state_dict starts with prefix {prefix!r}; its keys start {keys}")
    for key, value in entries.items():
        if isinstance(value, torch.Tensor):
            layouts.check_floating(value.dtype, f"from_torch: state_dict entry {prefix + key!r}")
    module = copy.deepcopy(module)
    try:
        module.load_state_dict(entries)
    except RuntimeError as e:
        raise WeightsError(
            f"from_torch: the state_dict does not fit {type(module).__name__}({module.extra_repr()}) "
            f"(give the constructor arguments it was saved with): {e}"
        ) from e
    return module


def is_cell(module: Any) -> bool:
    """Whether ``module`` is a ``torch.nn`` cell (``RNNCell`` / ``LSTMCell`` / ``GRUCell``)."""
    return kinds.of_cell_class(type(module)) is not None


def check_module(module: Any) -> None:
    """:class:`FrameworkMismatchError` unless ``module`` is one of PyTorch's six recurrent classes."""
    if is_cell(module) or kinds.of_module_class(type(module)) is not None:
        return
    known = [c for row in kinds.KINDS.values() for c in (row.cell, row.module)]
    base = next((c.__name__ for c in known if isinstance(module, c)), None)
    why = f", a subclass of nn.{base}: its forward may compute something else" if base else ""
    raise FrameworkMismatchError(
        "from_torch: expected torch.nn.RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell (the class itself), got "
        f"{type(module).__module__}.{type(module).__name__}{why}; port an instance of the class with its weights"
    )


def read_cell(module: nn.Module) -> NativeCell:
    """The cell type, arguments, input size and canonical weights of a ``torch.nn`` cell."""
    kind = kinds.of_cell_class(type(module))
    if kind is None:
        check_module(module)
        raise FrameworkMismatchError(f"from_torch: not a cell: {type(module).__name__}")
    kwargs: dict[str, Any] = {
        "units": module.hidden_size,
        "use_bias": module.bias,
        "dtype": protocol.dtype_name(module.weight_ih.dtype),
    }
    if kinds.get(kind).nonlinearity:
        kwargs["activation"] = module.nonlinearity
    names = layouts.TORCH_NAMES if module.bias else layouts.TORCH_NAMES[:2]
    params = {n: getattr(module, n).detach().cpu().numpy() for n in names}
    return NativeCell(kind, kwargs, module.input_size, layouts.get(kind).from_torch(params))


def to_torch(obj: Any, device: Any = None) -> nn.Module:
    """A ``torch.nn`` module computing what ``obj`` computes, with its weights: an ``RNN`` gives
    ``nn.RNN``/``LSTM``/``GRU`` (``batch_first = not time_major``), a cell ``nn.*Cell``."""
    kind = protocol.structure_of(obj)
    if kind == "rnn":
        return nn_modules.to_fused(obj, device=device)
    if kind == "bidirectional":
        return nn_modules.to_fused_bidirectional(obj, device=device)
    if kind == "stack":
        raise UnsupportedConfigError(
            "to_torch: a StackedRNNCells has no torch.nn equivalent; port layers.RNN(stack) (-> nn.RNN/LSTM/GRU) "
            "or each cell (-> nn.*Cell)"
        )
    extra = nn_modules.native_kwargs(obj, "to_torch")
    native = kinds.get(obj.cell_kind).cell(  # native_kwargs refused a type without a row
        obj.input_dim, obj.units, bias=obj.use_bias, device=device, dtype=nn_modules.DTYPES[obj.dtype_name], **extra
    )
    with torch.no_grad():
        for name, value in layouts.of(obj).to_torch(obj.get_weights()).items():
            getattr(native, name).copy_(torch.from_numpy(value))
    return native
