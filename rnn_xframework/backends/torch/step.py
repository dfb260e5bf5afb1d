"""One step of a :class:`~rnn_xframework.backends.torch.TorchCell`: the ATen kernel a native
``torch.nn`` cell runs (:func:`native_step`), or the spec's formula on :data:`STEP_OPS`, the
:class:`~rnn_xframework.cells.StepOps` in PyTorch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rnn_xframework.errors import UnsupportedConfigError


def native_step(c: Any, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[Any, list[Any]]:
    """The ATen kernel that ``c.forward`` calls (``c`` a ``torch.nn.*Cell``), on checked arguments."""
    if isinstance(c, nn.LSTMCell):
        h, cs = torch.lstm_cell(x, states, c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)
        return h, [h, cs]
    if isinstance(c, nn.GRUCell):
        h = torch.gru_cell(x, states[0], c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)
        return h, [h]
    kernel = torch.rnn_tanh_cell if c.nonlinearity == "tanh" else torch.rnn_relu_cell
    h = kernel(x, states[0], c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)
    return h, [h]


class TorchOps:
    """:class:`~rnn_xframework.cells.StepOps` in PyTorch."""

    ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu, "linear": None, None: None}

    def split(self, x: torch.Tensor, n: int) -> list[torch.Tensor]:
        return list(x.chunk(n, -1))

    def activation(self, name: Any) -> Any:
        if callable(name):
            return name
        if name not in self.ACTIVATIONS:
            raise UnsupportedConfigError(
                f"torch backend: activation must be one of {list(self.ACTIVATIONS)}, got {name!r}"
            )
        return self.ACTIVATIONS[name] or (lambda x: x)

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b

    def concat(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(xs), -1)


STEP_OPS = TorchOps()
