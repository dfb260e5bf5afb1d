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

from typing import Any

import torch
from torch import nn

from rnn_xframework import layouts, protocol
from rnn_xframework.errors import UnsupportedConfigError

FUSED = {"SimpleRNNCell": nn.RNN, "LSTMCell": nn.LSTM, "GRUCell": nn.GRU}
CELL_OF = {nn.LSTM: "LSTMCell", nn.GRU: "GRUCell", nn.RNN: "SimpleRNNCell"}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def to_fused(rnn: Any, device: Any = None) -> nn.Module:
    """A ``batch_first`` fused module with ``rnn``'s weights (any backend's ``RNN``)."""
    cells = list(rnn.cells)
    kinds = {layouts.name_of(c) for c in cells}
    if len(kinds) != 1 or len({c.units for c in cells}) != 1 or len({c.use_bias for c in cells}) != 1:
        raise UnsupportedConfigError(
            "to_torch_fused: a fused module holds layers of one cell type, one size and one bias setting; got "
            + ", ".join(f"{layouts.name_of(c)}(units={c.units}, use_bias={c.use_bias})" for c in cells)
        )
    if rnn.go_backwards:
        raise UnsupportedConfigError("to_torch_fused: go_backwards has no fused equivalent; flip the time axis")
    if any(c.dropout > 0 or c.recurrent_dropout > 0 for c in cells):
        raise UnsupportedConfigError(
            "to_torch_fused: Keras dropout (one mask per sequence, recurrent masks) has no fused equivalent; "
            "build the cells with dropout=0 to port them"
        )
    if any(c.input_dim is None for c in cells):
        raise UnsupportedConfigError("to_torch_fused: the RNN is not built yet; call build() or call it once first")
    first = cells[0]
    kwargs: dict[str, Any] = {}
    if first.cell_kind == "SimpleRNNCell":
        if first.portable_config()["activation"] not in ("tanh", "relu"):
            raise UnsupportedConfigError("to_torch_fused: nn.RNN supports activation 'tanh' or 'relu' only")
        kwargs["nonlinearity"] = first.portable_config()["activation"]
    else:
        config = first.portable_config()
        if (config["activation"], config["recurrent_activation"]) != ("tanh", "sigmoid"):
            raise UnsupportedConfigError(
                f"to_torch_fused: nn.{FUSED[first.cell_kind].__name__} supports activation 'tanh' and "
                f"recurrent_activation 'sigmoid' only, got {config['activation']!r}, {config['recurrent_activation']!r}"
            )
    fused = FUSED[first.cell_kind](
        first.input_dim,
        first.units,
        num_layers=len(cells),
        bias=first.use_bias,
        batch_first=True,
        device=device,
        dtype=DTYPES[first.dtype_name],
        **kwargs,
    )
    layout = layouts.of(first)
    with torch.no_grad():
        for i, cell in enumerate(cells):
            for name, value in layout.to_torch(cell.get_weights()).items():
                getattr(fused, f"{name}_l{i}").copy_(torch.from_numpy(value))
    return fused


def from_fused(module: nn.Module, backend: str, **rnn_kwargs: Any) -> Any:
    """An ``RNN`` of ``module.num_layers`` cells on ``backend`` with the module's weights."""
    from rnn_xframework import layers

    kind = next((k for cls, k in CELL_OF.items() if type(module) is cls), None)
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
    extra = {"activation": module.nonlinearity} if kind == "SimpleRNNCell" else {}
    cells = [
        layers.make_cell(kind, backend=backend, units=module.hidden_size, use_bias=module.bias, dtype=dtype, **extra)
        for _ in range(module.num_layers)
    ]
    rnn = layers.RNN(cells, **{"return_sequences": True, **rnn_kwargs})
    rnn.build((None, None, module.input_size))
    layout = layouts.of(cells[0])
    names = layouts.TORCH_NAMES if module.bias else layouts.TORCH_NAMES[:2]
    weights = []
    for i in range(module.num_layers):
        params = {n: getattr(module, f"{n}_l{i}").detach().cpu().numpy() for n in names}
        weights += layout.from_torch(params)
    rnn.set_weights(weights)
    return rnn
