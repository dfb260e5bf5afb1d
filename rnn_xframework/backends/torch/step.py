"""The spec's formula on torch: :data:`STEP_OPS`, the :class:`~rnn_xframework.cells.StepOps` in
PyTorch (a type with a ``torch.nn`` cell runs that cell's ATen kernel instead, named by its row of
:data:`~rnn_xframework.backends.torch.kinds.KINDS`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rnn_xframework.errors import UnsupportedConfigError


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
