"""Everything the torch backend knows per cell type, in one table: :data:`KINDS`.

A cell type's math, layout and defaults live in its spec (:mod:`rnn_xframework.cells`); what
PyTorch has for it lives here, once, and every torch path reads it: the eager cell
(:mod:`~rnn_xframework.backends.torch`), the ports to and from ``torch.nn``
(:mod:`~rnn_xframework.backends.torch.port`, :mod:`~rnn_xframework.backends.torch.nn_modules`), the
compiled loops (:mod:`~rnn_xframework.backends.torch.compile.script_loops`), the Triton host code
(:mod:`~rnn_xframework.backends.torch.compile.triton`) and the whole-model emitter
(:mod:`rnn_xframework.models`).

- ``SimpleRNNCell``: ``nn.RNNCell`` / ``nn.RNN``, ATen ``rnn_tanh_cell`` / ``rnn_relu_cell``,
  scripted ``SimpleRNNLayer`` (masked: ``MaskedSimpleRNN``; both, for ``torch.jit.script``:
  ``ScriptedSimpleRNNLayer``), Triton code 0, C recurrence ``"rnn"``;
- ``LSTMCell``: ``nn.LSTMCell`` / ``nn.LSTM``, ATen ``lstm_cell``, ``LSTMLayer`` (``MaskedLSTM``,
  ``ScriptedLSTMLayer``), code 1, ``"lstm"``;
- ``GRUCell``: ``nn.GRUCell`` / ``nn.GRU``, ATen ``gru_cell``, ``GRULayer`` (``MaskedGRU``,
  ``ScriptedGRULayer``), code 2, ``"gru"``.

A registered type with no row (the tests' ``MGUCell``) runs the spec's step everywhere on torch:
eager (:class:`~rnn_xframework.backends.torch.params.SpecParameters`) and compiled
(:class:`~rnn_xframework.backends.torch.compile.script_loops.SpecLayer`). A type with a row is
a new line here, plus its layer class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rnn_xframework import cells
from rnn_xframework.errors import UnsupportedConfigError

Step = Callable[[nn.Module, torch.Tensor, list[torch.Tensor]], tuple[torch.Tensor, list[torch.Tensor]]]


def rnn_step(c: Any, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``nn.RNNCell.forward``'s ATen kernel on checked arguments."""
    kernel = torch.rnn_tanh_cell if c.nonlinearity == "tanh" else torch.rnn_relu_cell
    h = kernel(x, states[0], c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)
    return h, [h]


def lstm_step(c: Any, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``nn.LSTMCell.forward``'s ATen kernel on checked arguments."""
    h, cs = torch.lstm_cell(x, states, c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)
    return h, [h, cs]


def gru_step(c: Any, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``nn.GRUCell.forward``'s ATen kernel on checked arguments."""
    h = torch.gru_cell(x, states[0], c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)
    return h, [h]


@dataclass(frozen=True)
class TorchKind:
    """What PyTorch has for one cell type.

    Attributes:
        cell: the ``torch.nn`` cell computing it (``nn.LSTMCell``).
        module: PyTorch's multi-layer module of that cell (``nn.LSTM``).
        supports: the option values those classes can express (``{"activation": ("tanh",)}``);
            a cell asking for another value is refused on torch (:func:`check`).
        step: the ATen kernel ``cell.forward`` calls, ``(cell, x, states) -> (out, states)``.
        layer: the scripted whole-sequence layer, ``"module:Class"`` under
            :mod:`rnn_xframework.backends.torch.compile` (imported when a stack is compiled).
        triton: the Triton kernels' ``CELL`` code (:mod:`rnn_xframework.kernels.triton.common`).
        nonlinearity: whether the classes take the activation as ``nonlinearity=`` (``nn.RNN``).
        cpu: the recurrence of ``xf.compile(rnn, "cpu")``'s C kernel computing the type
            (``"rnn"``, ``"lstm"``, ``"gru"``; :mod:`~rnn_xframework.backends.torch.compile.cpu`), or ``None``.
        masked: the scripted masked layer (``mask=``, dropout in training), as :attr:`layer`.
        scripted: the layer of a ``torch.jit.script``-ed RNN, as :attr:`layer`: :attr:`layer`'s
            class and :attr:`masked`'s in one (:mod:`~rnn_xframework.backends.torch.compile.script_masked`).
    """

    cell: type[nn.Module]
    module: type[nn.Module]
    supports: Mapping[str, tuple[Any, ...]]
    step: Step
    layer: str
    triton: int
    nonlinearity: bool = False
    cpu: str | None = None
    masked: str = ""
    scripted: str = ""

    def kwargs(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor arguments of :attr:`cell` / :attr:`module` beyond sizes and bias."""
        return {"nonlinearity": config["activation"]} if self.nonlinearity else {}

    def layer_class(self, which: str = "layer") -> type[nn.Module]:
        """The class :attr:`layer` (or :attr:`masked` / :attr:`scripted`, ``which="masked"`` / ``"scripted"``) names."""
        module, name = getattr(self, which).split(":")
        return getattr(importlib.import_module(f"rnn_xframework.backends.torch.compile.{module}"), name)


GATED = {"activation": ("tanh",), "recurrent_activation": ("sigmoid",)}
KINDS: dict[str, TorchKind] = {
    "SimpleRNNCell": TorchKind(
        nn.RNNCell,
        nn.RNN,
        {"activation": ("tanh", "relu")},
        rnn_step,
        "script_loops:SimpleRNNLayer",
        0,
        True,
        cpu="rnn",
        masked="masked_loops:MaskedSimpleRNN",
        scripted="script_masked:ScriptedSimpleRNNLayer",
    ),
    "LSTMCell": TorchKind(
        nn.LSTMCell,
        nn.LSTM,
        GATED,
        lstm_step,
        "script_loops:LSTMLayer",
        1,
        cpu="lstm",
        masked="masked_loops:MaskedLSTM",
        scripted="script_masked:ScriptedLSTMLayer",
    ),
    "GRUCell": TorchKind(
        nn.GRUCell,
        nn.GRU,
        GATED,
        gru_step,
        "script_loops:GRULayer",
        2,
        cpu="gru",
        masked="masked_loops:MaskedGRU",
        scripted="script_masked:ScriptedGRULayer",
    ),
}
"""PyTorch's classes, kernels and our compiled layers, by the spec's name."""


def get(kind: str) -> TorchKind | None:
    """The row of cell type ``kind`` (``"LSTMCell"``), or ``None``: PyTorch has no cell for it."""
    return KINDS.get(kind)


def of_cell_class(cls: type) -> str | None:
    """The cell type whose ``torch.nn`` cell is exactly ``cls`` (not a subclass)."""
    return next((k for k, row in KINDS.items() if row.cell is cls and k in cells.names()), None)


def of_module_class(cls: type) -> str | None:
    """The cell type whose multi-layer ``torch.nn`` module is exactly ``cls``."""
    return next((k for k, row in KINDS.items() if row.module is cls and k in cells.names()), None)


def check(kind: str, config: Mapping[str, Any], own: bool = False) -> None:
    """Raise :class:`UnsupportedConfigError` unless torch can hold ``config`` of cell type ``kind``:
    its weight layout has a PyTorch form, and PyTorch's cell (where it has one) expresses it. With
    ``own`` (this library's torch cells, which hold a layout ``torch.nn`` lacks in their own
    parameters and run the spec's step on it: GRU ``reset_after=False``) only the option values
    PyTorch's cell supports are required."""
    spec = cells.get(kind)
    layout = spec.layout(config)
    if layout.torch_problem is not None and not own:
        raise UnsupportedConfigError(f"{layout.name} has no PyTorch equivalent: {layout.torch_problem}")
    row = get(kind)
    if row is None:
        return
    for key, allowed in row.supports.items():
        if config[key] not in allowed:
            raise UnsupportedConfigError(
                f"torch.nn.{row.cell.__name__} supports {key} {' or '.join(repr(a) for a in allowed)}, got "
                f"{config[key]!r}; use backend='tensorflow' or 'numpy' for other configurations"
            )
