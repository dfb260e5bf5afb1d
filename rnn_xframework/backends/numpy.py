"""The NumPy reference: forward only, written to be read, the oracle of every test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnn_xframework import backends, layouts, loops, protocol
from rnn_xframework.backends import Backend
from rnn_xframework.errors import UnsupportedConfigError

ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "linear": lambda x: x,
    None: lambda x: x,
}


def glorot_uniform(rng: np.random.Generator, shape: tuple[int, int], dtype: str) -> np.ndarray:
    limit = np.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-limit, limit, shape).astype(dtype)


def orthogonal(rng: np.random.Generator, shape: tuple[int, int], dtype: str) -> np.ndarray:
    rows, cols = shape
    a = rng.normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    return (q if rows >= cols else q.T).astype(dtype)


class SimpleRNNCell:
    """``h = activation(x @ kernel + bias + h_prev @ recurrent_kernel)`` in NumPy.

    Weights are initialized like Keras's (glorot-uniform kernel, orthogonal recurrent kernel,
    zero bias) from ``seed``.
    """

    backend = "numpy"
    cell_kind = "SimpleRNNCell"

    def __init__(
        self,
        units: int,
        activation: str | None = "tanh",
        use_bias: bool = True,
        *,
        dtype: Any = None,
        device: Any = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(units, int) or units <= 0:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        if activation not in ACTIVATIONS:
            raise UnsupportedConfigError(
                f"numpy backend: activation must be one of {list(ACTIVATIONS)}, got {activation!r}"
            )
        if device not in (None, "cpu"):
            raise UnsupportedConfigError(f"numpy backend runs on 'cpu' only, got device={device!r}")
        self.units = units
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.dtype_name = protocol.dtype_name(dtype)
        self.state_sizes = [units]
        self.input_dim: int | None = None
        self.weights: list[np.ndarray] = []
        self._rng = np.random.default_rng(seed)

    @property
    def state_size(self) -> int:
        return self.units

    @property
    def trainable_variables(self) -> list[np.ndarray]:
        return list(self.weights)

    def portable_config(self) -> dict[str, Any]:
        return {"units": self.units, "activation": self.activation, "use_bias": self.use_bias}

    def build(self, input_shape: Sequence[int | None]) -> None:
        dim = int(input_shape[-1])  # type: ignore[arg-type]
        self.weights = [
            glorot_uniform(self._rng, (dim, self.units), self.dtype_name),
            orthogonal(self._rng, (self.units, self.units), self.dtype_name),
        ]
        if self.use_bias:
            self.weights.append(np.zeros(self.units, self.dtype_name))
        self.input_dim = dim

    def get_initial_state(self, batch_size: int) -> list[np.ndarray]:
        return [np.zeros((batch_size, self.units), self.dtype_name)]

    def get_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: Sequence[Any]) -> None:
        dim = self.input_dim if self.input_dim is not None else layouts.input_dim_of(self.cell_kind, weights)
        arrays = layouts.check(self.cell_kind, weights, dim, self.units, self.use_bias)
        self.weights = [a.astype(self.dtype_name, copy=True) for a in arrays]
        self.input_dim = dim

    def __call__(self, inputs: Any, states: Any, training: bool | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        if self.input_dim is None and isinstance(inputs, np.ndarray) and inputs.ndim == 2:
            self.build(inputs.shape)
        (h,) = protocol.check_step(self, OPS, inputs, states)
        z = inputs @ self.weights[0] + h @ self.weights[1]
        if self.use_bias:
            z = z + self.weights[2]
        out = ACTIVATIONS[self.activation](z).astype(self.dtype_name, copy=False)
        return out, [out]


class StackedRNNCells(loops.StackMixin):
    backend = "numpy"

    def __init__(self, cells: Sequence[Any]) -> None:
        self.cells = list(cells)
        self._ops = OPS

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.build_cells(input_shape)

    def __call__(self, inputs: Any, states: Any, training: bool | None = None) -> tuple[Any, list[list[Any]]]:
        return self.step(inputs, states, training)


class RNN(loops.RNNMixin):
    backend = "numpy"

    def __init__(
        self, cell: Any, *, return_sequences: bool, return_state: bool, go_backwards: bool, order: str
    ) -> None:
        self.cell = cell
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.order = order
        self._ops = OPS

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.cell.build_cells(input_shape)

    def __call__(self, inputs: Any, initial_state: Any = None, training: bool | None = None) -> Any:
        return self.run(inputs, initial_state, training)


class NumpyBackend(Backend, name="numpy"):
    cells = {"SimpleRNNCell": SimpleRNNCell}
    stack_class = StackedRNNCells
    rnn_class = RNN

    def is_native(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def dtype_name(self, x: Any) -> str:
        return x.dtype.name

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def from_numpy(self, a: Any, device: Any = None) -> np.ndarray:
        return np.array(a)

    def unstack(self, x: Any) -> list[Any]:
        return [x[:, t] for t in range(x.shape[1])]

    def stack(self, xs: list[Any]) -> Any:
        return np.stack(xs, axis=1)

    # --- gradients and training: none (the forward reference only) ---------------------------
    def loss_and_grads(self, model: Any, x: Any, states: Any, loss_weights: Any, device: Any = None) -> Any:
        raise UnsupportedConfigError(NO_GRADIENTS)

    def train_step(
        self, model: Any, x: Any, states: Any, loss_weights: Any, optimizer: Any, device: Any = None
    ) -> float:
        raise UnsupportedConfigError(NO_GRADIENTS)


NO_GRADIENTS = "numpy has no gradients (the forward reference only)"
OPS = backends.get("numpy")
