"""PyTorch backend: cells are ``torch.nn.Module``\\ s wrapping the fused ``torch.nn.RNNCell``.

Every object here is a real module, so ``.to(device)``, ``.parameters()``, ``state_dict()``
and optimizers work as usual. Weights are created at ``build(input_shape)`` or on the first call
(build before you create an optimizer), initialized like Keras's (glorot-uniform kernel,
orthogonal recurrent kernel, zero bias).

``nn.RNNCell`` has two biases; Keras has one. By default ``bias_hh`` stays at zero and is frozen
(``requires_grad=False``), so the cell trains exactly like the Keras cell with the same weights;
``train_recurrent_bias=True`` trains it as PyTorch does (canonical ``bias`` is then the sum).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from rnn_xframework import backends, layouts, loops, protocol
from rnn_xframework.errors import InputShapeError, UnsupportedConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class SimpleRNNCell(nn.Module):
    """``h = activation(x W_ih^T + b_ih + h_prev W_hh^T + b_hh)``: ``torch.nn.RNNCell`` inside.

    Attributes (after build):
        cell: the ``torch.nn.RNNCell``; ``cell.weight_ih`` ``(units, input_dim)``,
            ``cell.weight_hh`` ``(units, units)``, ``cell.bias_ih`` / ``cell.bias_hh`` ``(units,)``.
    """

    backend = "torch"
    cell_kind = "SimpleRNNCell"

    def __init__(
        self,
        units: int,
        activation: str | None = "tanh",
        use_bias: bool = True,
        *,
        dtype: Any = None,
        device: Any = None,
        train_recurrent_bias: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(units, int) or units <= 0:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        if activation not in ("tanh", "relu"):
            raise UnsupportedConfigError(
                f"torch.nn.RNNCell supports activation 'tanh' or 'relu', got {activation!r}; "
                "use backend='tensorflow' or 'numpy' for other activations"
            )
        self.units = units
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.train_recurrent_bias = bool(train_recurrent_bias)
        self.state_sizes = [units]
        self._dtype = DTYPES[protocol.dtype_name(dtype)]
        self._device = None if device is None else torch.device(device)
        self.cell: nn.RNNCell | None = None

    # --- Keras-style attributes --------------------------------------------------------------
    @property
    def state_size(self) -> int:
        return self.units

    @property
    def input_dim(self) -> int | None:
        return None if self.cell is None else self.cell.input_size

    @property
    def dtype_name(self) -> str:
        return protocol.dtype_name(self.cell.weight_ih.dtype if self.cell is not None else self._dtype)

    @property
    def device(self) -> torch.device:
        return self.cell.weight_ih.device if self.cell is not None else (self._device or torch.device("cpu"))

    @property
    def trainable_variables(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def portable_config(self) -> dict[str, Any]:
        return {"units": self.units, "activation": self.activation, "use_bias": self.use_bias}

    def build(self, input_shape: Sequence[int | None]) -> None:
        dim = input_shape[-1]
        if self.cell is not None:
            if dim != self.cell.input_size:
                raise InputShapeError(f"SimpleRNNCell[torch] is built for {self.cell.input_size} features, got {dim}")
            return
        cell = nn.RNNCell(
            int(dim),
            self.units,
            bias=self.use_bias,
            nonlinearity=self.activation,
            device=self._device,
            dtype=self._dtype,
        )
        with torch.no_grad():
            nn.init.xavier_uniform_(cell.weight_ih)
            nn.init.orthogonal_(cell.weight_hh)
            if self.use_bias:
                cell.bias_ih.zero_()
                cell.bias_hh.zero_()
                cell.bias_hh.requires_grad_(self.train_recurrent_bias)
        self.cell = cell

    def get_initial_state(self, batch_size: int) -> list[torch.Tensor]:
        """``[zeros(batch_size, units)]`` on the cell's device and dtype."""
        return [torch.zeros(batch_size, self.units, dtype=DTYPES[self.dtype_name], device=self.device)]

    def get_weights(self) -> list[np.ndarray]:
        """Canonical (Keras) layout: ``[kernel (in, units), recurrent_kernel, bias]``."""
        if self.cell is None:
            return []
        params = {n: p.detach().cpu().numpy() for n, p in self.cell.named_parameters()}
        return layouts.get(self.cell_kind).from_torch(params)

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Set from the canonical layout (bias into ``bias_ih``, ``bias_hh`` zeroed); checked first."""
        dim = self.input_dim if self.input_dim is not None else layouts.input_dim_of(self.cell_kind, weights)
        arrays = layouts.check(self.cell_kind, weights, dim, self.units, self.use_bias)
        self.build((None, dim))
        assert self.cell is not None
        values = layouts.get(self.cell_kind).to_torch(arrays)
        params = dict(self.cell.named_parameters())
        with torch.no_grad():
            for name, value in values.items():
                params[name].copy_(torch.from_numpy(np.asarray(value)))

    def forward(
        self, inputs: torch.Tensor, states: Any, training: bool | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``inputs`` ``[batch, input_dim]``, ``states`` ``[h]`` -> ``(h_new, [h_new])``."""
        if self.cell is None and isinstance(inputs, torch.Tensor) and inputs.dim() == 2:
            self.build(inputs.shape)
        (h,) = protocol.check_step(self, OPS, inputs, states)
        h = self.cell(inputs, h)  # type: ignore[misc]
        return h, [h]


class StackedRNNCells(loops.StackMixin, nn.Module):
    backend = "torch"

    def __init__(self, cells: Sequence[nn.Module]) -> None:
        nn.Module.__init__(self)
        self.cells = nn.ModuleList(cells)
        self._ops = OPS

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.build_cells(input_shape)

    def forward(self, inputs: torch.Tensor, states: Any, training: bool | None = None) -> tuple[Any, list[Any]]:
        return self.step(inputs, states, training)


class RNN(loops.RNNMixin, nn.Module):
    backend = "torch"

    def __init__(
        self, cell: StackedRNNCells, *, return_sequences: bool, return_state: bool, go_backwards: bool, order: str
    ) -> None:
        nn.Module.__init__(self)
        self.cell = cell
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.order = order
        self._ops = OPS

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.cell.build_cells(input_shape)

    def forward(self, inputs: torch.Tensor, initial_state: Any = None, training: bool | None = None) -> Any:
        return self.run(inputs, initial_state, training)


class TorchBackend(backends.Backend, name="torch"):
    cells = {"SimpleRNNCell": SimpleRNNCell}
    stack_class = StackedRNNCells
    rnn_class = RNN

    def is_native(self, x: Any) -> bool:
        return isinstance(x, torch.Tensor)

    def dtype_name(self, x: Any) -> str:
        return str(x.dtype).rsplit(".", 1)[-1]

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    def from_numpy(self, a: Any, device: Any = None) -> torch.Tensor:
        return torch.from_numpy(np.array(a)).to(device or "cpu")

    def unstack(self, x: Any) -> list[Any]:
        return list(x.unbind(1))

    def stack(self, xs: list[Any]) -> Any:
        return torch.stack(xs, 1)


OPS = backends.get("torch")
