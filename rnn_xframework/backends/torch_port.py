"""PyTorch's own recurrent modules to and from this library's objects (``xf.from_torch`` /
``xf.to_torch``), configuration and weights together.

=============================================  ==============================================
PyTorch                                        rnn_xframework
=============================================  ==============================================
``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``           ``layers.RNN`` of ``num_layers`` cells (see
                                               :mod:`~rnn_xframework.backends.torch_fused`);
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
from typing import Any

import torch
from torch import nn

from rnn_xframework import layouts, protocol, transfer
from rnn_xframework.backends import torch_fused
from rnn_xframework.errors import FrameworkMismatchError, UnsupportedConfigError, WeightsError

CELLS = {nn.RNNCell: "SimpleRNNCell", nn.LSTMCell: "LSTMCell", nn.GRUCell: "GRUCell"}
NATIVE_CELL = {kind: cls for cls, kind in CELLS.items()}


def _loaded(module: nn.Module, state_dict: Mapping[str, Any] | None, prefix: str) -> nn.Module:
    """``module`` itself, or a copy of it with ``state_dict``'s entries under ``prefix`` loaded."""
    if state_dict is None:
        if prefix:
            raise WeightsError("from_torch: prefix= selects entries of a state_dict; pass state_dict= too")
        return module
    entries = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not entries:
        keys = sorted(state_dict)[:6]
        raise WeightsError(f"from_torch: no key of the state_dict starts with prefix {prefix!r}; its keys start {keys}")
    module = copy.deepcopy(module)
    try:
        module.load_state_dict(entries)
    except RuntimeError as e:
        raise WeightsError(
            f"from_torch: the state_dict does not fit {type(module).__name__}({module.extra_repr()}) "
            f"(give the constructor arguments it was saved with): {e}"
        ) from e
    return module


def from_torch(
    module: Any,
    backend: str,
    *,
    state_dict: Mapping[str, Any] | None = None,
    prefix: str = "",
    device: Any = None,
    **rnn_kwargs: Any,
) -> Any:
    """The library object for a ``torch.nn`` recurrent module or cell (see the module docstring)."""
    from rnn_xframework import layers

    if type(module) in CELLS:
        if rnn_kwargs:
            raise TypeError(f"from_torch: a cell takes no RNN arguments, got {sorted(rnn_kwargs)}")
        module = _loaded(module, state_dict, prefix)
        kind = CELLS[type(module)]
        extra = {"activation": module.nonlinearity} if kind == "SimpleRNNCell" else {}
        dtype = protocol.dtype_name(module.weight_ih.dtype)
        cell = layers.make_cell(
            kind, backend=backend, units=module.hidden_size, use_bias=module.bias, dtype=dtype, device=device, **extra
        )
        names = layouts.TORCH_NAMES if module.bias else layouts.TORCH_NAMES[:2]
        params = {n: getattr(module, n).detach().cpu().numpy() for n in names}
        cell.set_weights(layouts.of(cell).from_torch(params))
        return cell
    if type(module) in torch_fused.CELL_OF:
        module = _loaded(module, state_dict, prefix)
        return torch_fused.from_fused(module, backend, device=device, **rnn_kwargs)
    known = (*CELLS, *torch_fused.CELL_OF)
    base = next((c.__name__ for c in known if isinstance(module, c)), None)
    why = f", a subclass of nn.{base}: its forward may compute something else" if base else ""
    raise FrameworkMismatchError(
        "from_torch: expected torch.nn.RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell (the class itself), got "
        f"{type(module).__module__}.{type(module).__name__}{why}; port an instance of the class with its weights"
    )


def to_torch(obj: Any, device: Any = None) -> nn.Module:
    """A ``torch.nn`` module computing what ``obj`` computes, with its weights: an ``RNN`` gives
    ``nn.RNN``/``LSTM``/``GRU`` (``batch_first = not time_major``), a cell ``nn.*Cell``."""
    kind = transfer.structure_of(obj)
    if kind == "rnn":
        return torch_fused.to_fused(obj, device=device)
    if kind == "stack":
        raise UnsupportedConfigError(
            "to_torch: a StackedRNNCells has no torch.nn equivalent; port layers.RNN(stack) (-> nn.RNN/LSTM/GRU) "
            "or each cell (-> nn.*Cell)"
        )
    extra = torch_fused.native_kwargs(obj, "to_torch")
    native = NATIVE_CELL[obj.cell_kind](
        obj.input_dim, obj.units, bias=obj.use_bias, device=device, dtype=torch_fused.DTYPES[obj.dtype_name], **extra
    )
    with torch.no_grad():
        for name, value in layouts.of(obj).to_torch(obj.get_weights()).items():
            getattr(native, name).copy_(torch.from_numpy(value))
    return native
