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

from typing import Any

import torch
from torch import nn

from rnn_xframework import layouts, protocol
from rnn_xframework.errors import UnsupportedConfigError

FUSED = {"SimpleRNNCell": nn.RNN, "LSTMCell": nn.LSTM, "GRUCell": nn.GRU}
CELL_OF = {nn.LSTM: "LSTMCell", nn.GRU: "GRUCell", nn.RNN: "SimpleRNNCell"}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def native_kwargs(cell: Any, where: str) -> dict[str, Any]:
    """What a PyTorch module needs beyond sizes to compute ``cell``'s step (``nonlinearity`` for
    ``nn.RNN``/``nn.RNNCell``); :class:`UnsupportedConfigError` for what PyTorch cannot express:
    activations other than PyTorch's, Keras dropout, GRU ``reset_after=False``, an unbuilt cell."""
    config = cell.portable_config()
    kind = cell.cell_kind
    layout = layouts.of(cell)
    if layout.torch_problem is not None:
        raise UnsupportedConfigError(f"{where}: {layout.name} has no PyTorch equivalent: {layout.torch_problem}")
    if cell.input_dim is None:
        raise UnsupportedConfigError(f"{where}: the object is not built yet; call build() or call it once first")
    if config.get("dropout", 0) > 0 or config.get("recurrent_dropout", 0) > 0:
        raise UnsupportedConfigError(
            f"{where}: Keras dropout (one mask per sequence, recurrent masks) has no torch.nn equivalent; "
            "build the cells with dropout=0 and recurrent_dropout=0 to port them"
        )
    if kind == "SimpleRNNCell":
        if config["activation"] not in ("tanh", "relu"):
            raise UnsupportedConfigError(
                f"{where}: nn.RNN supports activation 'tanh' or 'relu' only, got {config['activation']!r}"
            )
        return {"nonlinearity": config["activation"]}
    if (config["activation"], config["recurrent_activation"]) != ("tanh", "sigmoid"):
        raise UnsupportedConfigError(
            f"{where}: nn.{FUSED[kind].__name__} supports activation 'tanh' and recurrent_activation 'sigmoid' "
            f"only, got {config['activation']!r}, {config['recurrent_activation']!r}"
        )
    return {}


def to_fused(rnn: Any, device: Any = None) -> nn.Module:
    """A fused module with ``rnn``'s weights (any backend's ``RNN``); ``batch_first`` unless
    ``rnn.time_major``."""
    cells = list(rnn.cells)
    kinds = {layouts.name_of(c) for c in cells}
    if len(kinds) != 1 or len({c.units for c in cells}) != 1 or len({c.use_bias for c in cells}) != 1:
        raise UnsupportedConfigError(
            "to_torch_fused: a fused module holds layers of one cell type, one size and one bias setting; got "
            + ", ".join(f"{layouts.name_of(c)}(units={c.units}, use_bias={c.use_bias})" for c in cells)
        )
    if rnn.go_backwards:
        raise UnsupportedConfigError("to_torch_fused: go_backwards has no fused equivalent; flip the time axis")
    kwargs = [native_kwargs(c, "to_torch_fused") for c in cells]
    if any(k != kwargs[0] for k in kwargs):
        raise UnsupportedConfigError(f"to_torch_fused: a fused module has one nonlinearity, got {kwargs}")
    first = cells[0]
    fused = FUSED[first.cell_kind](
        first.input_dim,
        first.units,
        num_layers=len(cells),
        bias=first.use_bias,
        batch_first=not rnn.time_major,
        device=device,
        dtype=DTYPES[first.dtype_name],
        **kwargs[0],
    )
    layout = layouts.of(first)
    with torch.no_grad():
        for i, cell in enumerate(cells):
            for name, value in layout.to_torch(cell.get_weights()).items():
                getattr(fused, f"{name}_l{i}").copy_(torch.from_numpy(value))
    return fused


def from_fused(module: nn.Module, backend: str, device: Any = None, **rnn_kwargs: Any) -> Any:
    """An ``RNN`` of ``module.num_layers`` cells on ``backend`` with the module's weights and
    layout: ``time_major=not module.batch_first`` (PyTorch's default is time-major)."""
    from rnn_xframework import layers

    kind = next((k for cls, k in CELL_OF.items() if type(module) is cls), None)
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
    extra = {"activation": module.nonlinearity} if kind == "SimpleRNNCell" else {}
    cells = [
        layers.make_cell(
            kind, backend=backend, units=module.hidden_size, use_bias=module.bias, dtype=dtype, device=device, **extra
        )
        for _ in range(module.num_layers)
    ]
    rnn = layers.RNN(cells, **{"return_sequences": True, "time_major": not module.batch_first, **rnn_kwargs})
    rnn.build((None, None, module.input_size))
    layout = layouts.of(cells[0])
    names = layouts.TORCH_NAMES if module.bias else layouts.TORCH_NAMES[:2]
    weights = []
    for i in range(module.num_layers):
        params = {n: getattr(module, f"{n}_l{i}").detach().cpu().numpy() for n in names}
        weights += layout.from_torch(params)
    rnn.set_weights(weights)
    return rnn
