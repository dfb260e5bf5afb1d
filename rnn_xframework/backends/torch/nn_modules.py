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
model), activations other than PyTorch's, GRU ``reset_after=False``, ``proj_size``.

A one-layer ``bidirectional=True`` module is a ``Bidirectional`` with ``merge_mode="concat"``
(PyTorch concatenates the forward outputs and the backward outputs in time order, as Keras
does): ``weight_ih_l0_reverse``, ... are the backward layer's weights.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from rnn_xframework import layouts, protocol
from rnn_xframework.backends.torch import kinds
from rnn_xframework.errors import UnsupportedConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


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
    bidirectional: bool = False
    """``weights`` then holds the forward layer's weights, then the backward layer's."""


def native_kwargs(cell: Any, where: str) -> dict[str, Any]:
    """What a ``torch.nn`` module needs beyond sizes to compute ``cell``'s step (``nonlinearity``
    for ``nn.RNN`` / ``nn.RNNCell``); :class:`UnsupportedConfigError` for what PyTorch cannot
    express: a configuration its cell lacks (activations, GRU ``reset_after=False``), Keras
    dropout, a cell type without a PyTorch cell, an unbuilt cell."""
    if cell.input_dim is None:
        raise UnsupportedConfigError(f"{where}: the object is not built yet; call build() or call it once first")
    config = cell.portable_config()
    try:
        kinds.check(cell.cell_kind, config)
    except UnsupportedConfigError as e:
        raise UnsupportedConfigError(f"{where}: {e}") from None
    row = kinds.get(cell.cell_kind)
    if row is None:
        raise UnsupportedConfigError(f"{where}: PyTorch has no module for {cell.cell_kind}")
    if config.get("dropout", 0) > 0 or config.get("recurrent_dropout", 0) > 0:
        raise UnsupportedConfigError(
            f"{where}: Keras dropout (one mask per sequence, recurrent masks) has no torch.nn equivalent; "
            "build the cells with dropout=0 and recurrent_dropout=0 to port them"
        )
    return row.kwargs(config)


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
    fused = kinds.get(first.cell_kind).module(  # native_kwargs refused a type without a row
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
    kind = kinds.of_module_class(type(module))
    if kind is None:
        raise UnsupportedConfigError(
            "from_torch_fused: expected torch.nn.RNN, LSTM or GRU, got "
            f"{type(module).__module__}.{type(module).__name__}"
        )
    if module.bidirectional and module.num_layers > 1:
        raise UnsupportedConfigError(
            f"from_torch: bidirectional=True with num_layers={module.num_layers}: each layer of it reads both "
            "directions' outputs of the layer below, a stack of Bidirectional layers; port one "
            "nn.LSTM(bidirectional=True) per layer (-> layers.Bidirectional each)"
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
    if kinds.get(kind).nonlinearity:
        kwargs["activation"] = module.nonlinearity
    layout = layouts.get(kind)
    names = layouts.TORCH_NAMES if module.bias else layouts.TORCH_NAMES[:2]
    weights = []
    suffixes = [f"_l{i}" for i in range(module.num_layers)] + (["_l0_reverse"] if module.bidirectional else [])
    for suffix in suffixes:
        params = {n: getattr(module, f"{n}{suffix}").detach().cpu().numpy() for n in names}
        weights += layout.from_torch(params)
    return FusedStack(
        kind, kwargs, module.num_layers, module.input_size, weights, bool(module.batch_first), module.bidirectional
    )


def to_fused_bidirectional(bi: Any, device: Any = None) -> nn.Module:
    """``nn.RNN`` / ``LSTM`` / ``GRU`` with ``bidirectional=True`` for a ``Bidirectional`` of two
    one-cell RNNs alike (forward forwards, ``merge_mode="concat"``); it returns the whole sequence
    and the final states, as PyTorch's modules do."""
    forward, backward = bi.forward_layer, bi.backward_layer
    if bi.merge_mode != "concat":
        raise UnsupportedConfigError(
            f"to_torch: merge_mode={bi.merge_mode!r}; PyTorch's bidirectional modules concatenate (merge_mode='concat')"
        )
    if len(forward.cells) != 1 or len(backward.cells) != 1:
        raise UnsupportedConfigError(
            "to_torch: a Bidirectional of stacked RNNs has no torch.nn form (nn.LSTM(bidirectional=True) feeds both "
            "directions into each next layer); use one cell per direction"
        )
    if forward.go_backwards or not backward.go_backwards:
        raise UnsupportedConfigError(
            "to_torch: the forward layer goes backwards; PyTorch's bidirectional modules run it forwards"
        )
    if layouts.signature(forward.cells) != layouts.signature(backward.cells) or native_kwargs(
        forward.cells[0], "to_torch"
    ) != native_kwargs(backward.cells[0], "to_torch"):
        raise UnsupportedConfigError(
            "to_torch: PyTorch's bidirectional modules need both directions alike (cell type, units, bias, "
            f"activation), got {layouts.signature(forward.cells)} and {layouts.signature(backward.cells)}"
        )
    fused = to_fused(forward, device=device)
    both = type(fused)(
        fused.input_size,
        fused.hidden_size,
        bias=fused.bias,
        batch_first=fused.batch_first,
        bidirectional=True,
        device=device,
        dtype=fused.weight_ih_l0.dtype,
        **native_kwargs(forward.cells[0], "to_torch"),
    )
    layout = layouts.of(backward.cells[0])
    with torch.no_grad():
        for name, value in fused.named_parameters():
            getattr(both, name).copy_(value)
        for name, value in layout.to_torch(backward.cells[0].get_weights()).items():
            getattr(both, f"{name}_l0_reverse").copy_(torch.from_numpy(value))
    return both
