"""Stacks of one cell type to and from PyTorch's fused ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``.

A fused module runs the whole stack in one call (cuDNN on a GPU). The weights go through the
same canonical layouts as every other transfer (:mod:`rnn_xframework.layouts`), so the fused
module computes exactly what the stack computes:

=====================  =================================================================
``RNN`` of cells       fused module (``batch_first = not time_major``)
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
    input size, the canonical weights of the whole stack, layer after layer, and the layout
    (``batch_first``; ``False`` is PyTorch's default, time-major)."""

    kind: str
    cell_kwargs: dict[str, Any]
    num_layers: int
    input_size: int
    weights: list[np.ndarray]
    batch_first: bool


def native_kwargs(cell: Any, where: str) -> dict[str, Any]:
    """What a ``torch.nn`` module needs beyond sizes to compute ``cell``'s step (``nonlinearity``
    for ``nn.RNN`` / ``nn.RNNCell``); :class:`UnsupportedConfigError` for what PyTorch cannot
    express: a configuration its cell lacks (activations, GRU ``reset_after=False``), Keras
    dropout, a cell type without a PyTorch cell, an unbuilt cell."""
    if cell.input_dim is None:
        raise UnsupportedConfigError(f"{where}: the object is not built yet; call build() or call it once first")
    spec = cells.get(cell.cell_kind)
    config = cell.portable_config()
    try:
        spec.check_torch(config)
    except UnsupportedConfigError as e:
        raise UnsupportedConfigError(f"{where}: {e}") from None
    if spec.torch is None:
        raise UnsupportedConfigError(f"{where}: PyTorch has no module for {cell.cell_kind}")
    if config.get("dropout", 0) > 0 or config.get("recurrent_dropout", 0) > 0:
        raise UnsupportedConfigError(
            f"{where}: Keras dropout (one mask per sequence, recurrent masks) has no torch.nn equivalent; "
            "build the cells with dropout=0 and recurrent_dropout=0 to port them"
        )
    return {"nonlinearity": config["activation"]} if spec.torch.module == "RNNCell" else {}


def to_fused(rnn: Any, device: Any = None) -> nn.Module:
    """A fused module with ``rnn``'s weights (any backend's ``RNN``); ``batch_first`` unless
    ``rnn.time_major``."""
    cells_ = list(rnn.cells)
    if len(set(layouts.signature(cells_))) != 1:
        raise UnsupportedConfigError(
            "to_torch_fused: a fused module holds layers of one cell type, one size and one bias setting; got "
            + ", ".join(layouts.signature(cells_))
        )
    if rnn.go_backwards:
        raise UnsupportedConfigError("to_torch_fused: go_backwards has no fused equivalent; flip the time axis")
    kwargs = [native_kwargs(c, "to_torch_fused") for c in cells_]
    if any(k != kwargs[0] for k in kwargs):
        raise UnsupportedConfigError(f"to_torch_fused: a fused module has one nonlinearity, got {kwargs}")
    first = cells_[0]
    fused_class = _fused_class(first.cell_kind)
    if fused_class is None:
        raise UnsupportedConfigError(f"to_torch_fused: PyTorch has no fused module for {first.cell_kind}")
    fused = fused_class(
        first.input_dim,
        first.units,
        num_layers=len(cells_),
        bias=first.use_bias,
        batch_first=not rnn.time_major,
        device=device,
        dtype=DTYPES[first.dtype_name],
        **kwargs[0],
    )
    layout = layouts.of(first)
    with torch.no_grad():
        for i, cell in enumerate(cells_):
            for name, value in layout.to_torch(cell.get_weights()).items():
                getattr(fused, f"{name}_l{i}").copy_(torch.from_numpy(value))
    return fused


def read_fused(module: nn.Module) -> FusedStack:
    """The cell type, arguments, canonical weights and layout of a fused ``nn.RNN`` / ``LSTM`` /
    ``GRU``."""
    kind = next((k for k in cells.names() if _fused_class(k) is type(module)), None)
    if kind is None:
        raise UnsupportedConfigError(
            "from_torch_fused: expected torch.nn.RNN, LSTM or GRU, got "
            f"{type(module).__module__}.{type(module).__name__}"
        )
    if module.bidirectional:
        raise UnsupportedConfigError(
            "from_torch: bidirectional=True has no equivalent here (one direction per RNN); port the module "
            "with bidirectional=False, or run two RNNs, one with go_backwards=True"
        )
    if getattr(module, "proj_size", 0):
        raise UnsupportedConfigError(
            f"from_torch: proj_size={module.proj_size} (LSTM projections) has no cell equivalent"
        )
    if module.dropout:
        raise UnsupportedConfigError(
            f"from_torch: dropout={module.dropout} (PyTorch's dropout between layers) has no Keras-cell equivalent; "
            "set module.dropout = 0 to port the weights (dropout changes training only)"
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
    return FusedStack(kind, kwargs, module.num_layers, module.input_size, weights, bool(module.batch_first))
