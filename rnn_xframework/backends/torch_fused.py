"""Stacks of one cell type to and from PyTorch's fused ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``.

A fused module runs the whole stack in one call (cuDNN on a GPU). The weights go through the
same canonical layouts as every other transfer (:mod:`rnn_xframework.layouts`), so the fused
module computes exactly what the stack computes:

=====================  =================================================================
``RNN`` of cells       fused module (``batch_first=True``)
=====================  =================================================================
``n`` cells, ``units`` ``num_layers=n``, ``hidden_size=units``, ``input_size`` of cell 0
states ``[[h_l], ...]`` ``h0`` ``(n, batch, units)`` (LSTM: ``(h0, c0)``)
``weight_ih_l{i}``...  canonical weights of cell ``i`` (GRU gates reordered)
=====================  =================================================================

What a fused module cannot express raises :class:`UnsupportedConfigError`: mixed cell types or
sizes, ``go_backwards``, Keras dropout (PyTorch's fused dropout is between layers, a different
model), activations other than PyTorch's, GRU ``reset_after=False``, bidirectional modules,
``proj_size``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from rnn_xframework import cells, layouts, protocol
from rnn_xframework.errors import UnsupportedConfigError

FUSED = {"RNNCell": nn.RNN, "LSTMCell": nn.LSTM, "GRUCell": nn.GRU}
"""The fused module of each ``torch.nn`` cell a spec names (:class:`~rnn_xframework.cells.TorchForm`)."""
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _fused_class(kind: str) -> type[nn.Module] | None:
    form = cells.get(kind).torch
    return None if form is None else FUSED.get(form.module)


class FusedStack(NamedTuple):
    """What a fused module holds, framework-free: the cell type and arguments of each layer, the
    input size and the canonical weights of the whole stack, layer after layer."""

    kind: str
    cell_kwargs: dict[str, Any]
    num_layers: int
    input_size: int
    weights: list[np.ndarray]


def to_fused(rnn: Any, device: Any = None) -> nn.Module:
    """A ``batch_first`` fused module with ``rnn``'s weights (any backend's ``RNN``)."""
    cells_ = list(rnn.cells)
    if len(set(layouts.signature(cells_))) != 1:
        raise UnsupportedConfigError(
            "to_torch_fused: a fused module holds layers of one cell type, one size and one bias setting; got "
            + ", ".join(layouts.signature(cells_))
        )
    if rnn.go_backwards:
        raise UnsupportedConfigError("to_torch_fused: go_backwards has no fused equivalent; flip the time axis")
    if any(c.dropout > 0 or c.recurrent_dropout > 0 for c in cells_):
        raise UnsupportedConfigError(
            "to_torch_fused: Keras dropout (one mask per sequence, recurrent masks) has no fused equivalent; "
            "build the cells with dropout=0 to port them"
        )
    if any(c.input_dim is None for c in cells_):
        raise UnsupportedConfigError("to_torch_fused: the RNN is not built yet; call build() or call it once first")
    first = cells_[0]
    fused_class = _fused_class(first.cell_kind)
    if fused_class is None:
        raise UnsupportedConfigError(f"to_torch_fused: PyTorch has no fused module for {first.cell_kind}")
    config = first.portable_config()
    try:
        cells.get(first.cell_kind).check_torch(config)
    except UnsupportedConfigError as e:
        raise UnsupportedConfigError(f"to_torch_fused: nn.{fused_class.__name__}: {e}") from None
    kwargs: dict[str, Any] = {"nonlinearity": config["activation"]} if fused_class is nn.RNN else {}
    fused = fused_class(
        first.input_dim,
        first.units,
        num_layers=len(cells_),
        bias=first.use_bias,
        batch_first=True,
        device=device,
        dtype=DTYPES[first.dtype_name],
        **kwargs,
    )
    layout = layouts.of(first)
    with torch.no_grad():
        for i, cell in enumerate(cells_):
            for name, value in layout.to_torch(cell.get_weights()).items():
                getattr(fused, f"{name}_l{i}").copy_(torch.from_numpy(value))
    return fused


def read_fused(module: nn.Module) -> FusedStack:
    """The cell type, arguments and canonical weights of a fused ``nn.RNN`` / ``LSTM`` / ``GRU``."""
    kind = next((k for k in cells.names() if _fused_class(k) is type(module)), None)
    if kind is None:
        raise UnsupportedConfigError(
            "from_torch_fused: expected torch.nn.RNN, LSTM or GRU, got "
            f"{type(module).__module__}.{type(module).__name__}"
        )
    if module.bidirectional or getattr(module, "proj_size", 0):
        raise UnsupportedConfigError("from_torch_fused: bidirectional modules and proj_size have no cell equivalent")
    if module.dropout:
        raise UnsupportedConfigError(
            "from_torch_fused: PyTorch's between-layer dropout has no Keras-cell equivalent; set module.dropout = 0"
        )
    dtype = protocol.dtype_name(module.weight_ih_l0.dtype)
    kwargs: dict[str, Any] = {"units": module.hidden_size, "use_bias": module.bias, "dtype": dtype}
    if isinstance(module, nn.RNN):
        kwargs["activation"] = module.nonlinearity
    layout = layouts.get(kind)
    names = layouts.TORCH_NAMES if module.bias else layouts.TORCH_NAMES[:2]
    weights = []
    for i in range(module.num_layers):
        params = {n: getattr(module, f"{n}_l{i}").detach().cpu().numpy() for n in names}
        weights += layout.from_torch(params)
    return FusedStack(kind, kwargs, module.num_layers, module.input_size, weights)
