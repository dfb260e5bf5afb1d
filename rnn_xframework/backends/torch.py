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

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from rnn_xframework import backends, layouts, loops, protocol, transfer
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

    # --- gradients and training (rnn_xframework.parity) --------------------------------------
    def devices(self) -> list[str]:
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]

    @contextmanager
    def strict_numerics(self) -> Iterator[list[str]]:
        """TF32 off for CUDA matmuls and cuDNN (true float32), restored on exit."""
        flags = [
            ("torch.backends.cuda.matmul.allow_tf32", torch.backends.cuda.matmul),
            ("torch.backends.cudnn.allow_tf32", torch.backends.cudnn),
        ]
        old = [owner.allow_tf32 for _, owner in flags]
        for _, owner in flags:
            owner.allow_tf32 = False
        try:
            yield [f"{name}: {was} -> False (restored after)" for (name, _), was in zip(flags, old, strict=True)]
        finally:
            for (_, owner), was in zip(flags, old, strict=True):
                owner.allow_tf32 = was

    def _loss(self, model: Any, x: Any, states: Any, loss_weights: Any, device: Any) -> tuple[Any, Any, Any]:
        xt = self.from_numpy(x, device).requires_grad_()
        st = [[self.from_numpy(s, device).requires_grad_() for s in layer] for layer in states]
        y, final = model(xt, st)
        w_y, w_states = loss_weights
        loss = (y * self.from_numpy(w_y, device)).sum()
        for layer, weights in zip(final, w_states, strict=True):
            for s, w in zip(layer, weights, strict=True):
                loss = loss + (s * self.from_numpy(w, device)).sum()
        return loss, xt, st

    def loss_and_grads(self, model: Any, x: Any, states: Any, loss_weights: Any, device: Any = None) -> Any:
        """``torch.autograd``; weight gradients mapped to the canonical layout by the cell's layout.

        Each trainable torch parameter is one canonical weight rearranged (``weight_ih`` is
        ``kernel.T``, ``bias_ih`` is ``bias``), so the canonical gradient is the same rearrangement
        of the parameter gradients; the frozen ``bias_hh`` counts as zero. Cells built with
        ``train_recurrent_bias=True`` have two trainable biases for one canonical bias and are refused.
        """
        cells = transfer.cells_of(model)
        if any(getattr(c, "train_recurrent_bias", False) for c in cells):
            raise UnsupportedConfigError(
                "canonical gradients need bias_hh frozen (train_recurrent_bias=False): with both biases "
                "trainable, one canonical bias has two torch parameters"
            )
        named = [(i, name, p) for i, c in enumerate(cells) for name, p in c.cell.named_parameters()]
        trainable = [p for _, _, p in named if p.requires_grad]
        loss, xt, st = self._loss(model, x, states, loss_weights, device)
        flat_states = [s for layer in st for s in layer]
        grads = iter(torch.autograd.grad(loss, [xt, *flat_states, *trainable], allow_unused=True))
        grad_x = self.to_numpy(next(grads))
        grad_states = [[self.to_numpy(next(grads)) for _ in layer] for layer in st]
        per_cell: list[dict[str, np.ndarray]] = [{} for _ in cells]
        for i, name, p in named:
            g = next(grads) if p.requires_grad else None
            per_cell[i][name] = self.to_numpy(g) if g is not None else np.zeros(tuple(p.shape), self.dtype_name(p))
        weights = [w for c, g in zip(cells, per_cell, strict=True) for w in layouts.get(c.cell_kind).from_torch(g)]
        return backends.Gradients(float(loss.detach()), grad_x, grad_states, weights)

    def train_step(
        self, model: Any, x: Any, states: Any, loss_weights: Any, optimizer: Any, device: Any = None
    ) -> float:
        """One step of ``torch.optim.SGD`` / ``torch.optim.Adam`` set up as Keras's.

        Keras's Adam adds ``epsilon`` to ``sqrt(v)``, torch's to ``sqrt(v / (1 - beta_2**t))``;
        for the first step they agree exactly with ``eps_torch = epsilon / sqrt(1 - beta_2)``.
        """
        params = [p for p in model.parameters() if p.requires_grad]
        if optimizer.name == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=optimizer.learning_rate, momentum=0.0)
        elif optimizer.name == "adam":
            eps = optimizer.epsilon / math.sqrt(1.0 - optimizer.beta_2)
            betas = (optimizer.beta_1, optimizer.beta_2)
            opt = torch.optim.Adam(params, lr=optimizer.learning_rate, betas=betas, eps=eps)
        else:
            raise UnsupportedConfigError(f"optimizer must be 'sgd' or 'adam', got {optimizer.name!r}")
        opt.zero_grad(set_to_none=True)
        loss, _, _ = self._loss(model, x, states, loss_weights, device)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def frozen_parameters(self, model: Any) -> dict[str, np.ndarray]:
        """``bias_hh`` of each cell (unless ``train_recurrent_bias=True``), by parameter name."""
        return {name: self.to_numpy(p) for name, p in model.named_parameters() if not p.requires_grad}


OPS = backends.get("torch")
