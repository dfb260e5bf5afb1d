"""The NumPy reference: forward only, written to be read, the oracle of every test.

One cell class serves every cell type: it holds the canonical weights and runs the spec's
``step`` (:func:`rnn_xframework.cells.run_step`). Weights are initialized like Keras's
(glorot-uniform kernel, orthogonal recurrent kernel, the spec's initial bias) from ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnn_xframework import bidirectional, cells, layouts, orderings, protocol, registry
from rnn_xframework.cells.base import SpecCell
from rnn_xframework.dropout import DropoutMixin
from rnn_xframework.errors import UnsupportedConfigError


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": sigmoid,
    "linear": lambda x: x,
    None: lambda x: x,
}


class NumpyOps:
    """:class:`~rnn_xframework.cells.StepOps` in NumPy."""

    @staticmethod
    def split(x: np.ndarray, n: int) -> list[np.ndarray]:
        return np.split(x, n, axis=-1)

    @staticmethod
    def activation(name: Any) -> Any:
        if callable(name):
            return name
        if name not in ACTIVATIONS:
            raise UnsupportedConfigError(f"numpy backend: activation must be one of {list(ACTIVATIONS)}, got {name!r}")
        return ACTIVATIONS[name]

    @staticmethod
    def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a @ b

    @staticmethod
    def concat(xs: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate(xs, axis=-1)


STEP_OPS = NumpyOps()


def glorot_uniform(rng: np.random.Generator, shape: tuple[int, int], dtype: str) -> np.ndarray:
    limit = np.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-limit, limit, shape).astype(dtype)


def orthogonal(rng: np.random.Generator, shape: tuple[int, int], dtype: str) -> np.ndarray:
    rows, cols = shape
    a = rng.normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    return (q if rows >= cols else q.T).astype(dtype)


def initial_weights(cell: SpecCell, rng: np.random.Generator, dim: int) -> list[np.ndarray]:
    """Keras's initial weights for ``cell`` with ``dim`` input features, in the canonical layout
    and the cell's ``dtype_name``: a Glorot-uniform kernel, an orthogonal recurrent kernel and
    the spec's initial bias (when ``use_bias``)."""
    g = cell.gates * cell.units
    weights = [glorot_uniform(rng, (dim, g), cell.dtype_name), orthogonal(rng, (cell.units, g), cell.dtype_name)]
    if cell.config["use_bias"]:
        weights.append(cell.spec.initial_bias(cell.config, cell.dtype_name))
    return weights


class NumpyCell(SpecCell, DropoutMixin):
    """A cell of any registered type in NumPy; ``spec`` is set per type by :func:`cell_class`.

    Constructed like the Keras cell of the type (``units``, the activations, ``use_bias``, the
    spec's options, ``dropout``, ``recurrent_dropout``), plus ``dtype``, ``device`` (``"cpu"``
    only) and ``seed``.
    """

    backend = "numpy"
    spec: cells.CellSpec

    def __init__(
        self, units: int, *args: Any, dtype: Any = None, device: Any = None, seed: int | None = None, **kwargs: Any
    ) -> None:
        self.bind_config(units, args, kwargs, STEP_OPS)
        if device not in (None, "cpu"):
            raise UnsupportedConfigError(f"numpy backend runs on 'cpu' only, got device={device!r}")
        self.dtype_name = protocol.dtype_name(dtype)
        self.input_dim: int | None = None
        self.weights: list[np.ndarray] = []
        self._rng = np.random.default_rng(seed)

    @property
    def trainable_variables(self) -> list[np.ndarray]:
        return list(self.weights)

    @property
    def kernel(self) -> np.ndarray:
        """``(input_dim, G*units)``."""
        return self.weights[0]

    @property
    def recurrent_kernel(self) -> np.ndarray:
        """``(units, G*units)``."""
        return self.weights[1]

    @property
    def bias(self) -> np.ndarray | None:
        """``(G*units,)`` (GRU: ``(2, 3*units)``), or ``None`` without bias."""
        return self.weights[2] if self.use_bias else None

    def make_weights(self, dim: int) -> None:
        self.weights = initial_weights(self, self._rng, dim)
        self.input_dim = dim

    def get_initial_state(self, batch_size: int) -> list[np.ndarray]:
        return [np.zeros((batch_size, self.units), self.dtype_name) for _ in range(self.spec.n_states)]

    def get_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: Sequence[Any]) -> None:
        dim = self.input_dim if self.input_dim is not None else layouts.input_dim_of(self.cell_kind, weights)
        arrays = layouts.check(self.layout_name, weights, dim, self.units, self.use_bias)
        self.weights = [a.astype(self.dtype_name, copy=True) for a in arrays]
        self.input_dim = dim

    def _new_mask(self, like: np.ndarray, rate: float) -> np.ndarray:
        keep = self._rng.random(like.shape) >= rate
        return (keep / (1.0 - rate)).astype(self.dtype_name)

    def _as_mask(self, m: Any) -> np.ndarray:
        return np.asarray(m, self.dtype_name)

    def step(self, x: np.ndarray, states: list[np.ndarray], training: bool | None) -> tuple[Any, list[Any]]:
        """The spec's step on checked arguments."""
        b_in, b_rec = self.layout.bias_parts(self.weights[2]) if self.use_bias else (None, None)
        w = cells.StepWeights(self.weights[0], self.weights[1], b_in, b_rec)
        x_masks, h_masks = self.get_dropout_mask(x), self.get_recurrent_dropout_mask(states[0])  # drawn as Keras does
        if not training:
            x_masks = h_masks = None
        return cells.run_step(self.spec, STEP_OPS, self.config, w, x, states, x_masks, h_masks)

    def __call__(self, inputs: Any, states: Any, training: bool | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        if self.input_dim is None and isinstance(inputs, np.ndarray) and inputs.ndim == 2:
            self.build(inputs.shape)
        states = protocol.check_step(self, OPS, inputs, states)
        out, new = self.step(inputs, states, training)
        return out.astype(self.dtype_name, copy=False), [s.astype(self.dtype_name, copy=False) for s in new]


class StackedRNNCells(orderings.StackMixin):
    backend = "numpy"

    def __call__(self, inputs: Any, states: Any, training: bool | None = None) -> tuple[Any, list[list[Any]]]:
        return self.step(inputs, states, training)


class RNN(orderings.RNNMixin):
    backend = "numpy"

    def __call__(self, inputs: Any, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        return self.run(inputs, initial_state, training, mask)


class Bidirectional(bidirectional.BidirectionalMixin):
    backend = "numpy"

    def __call__(self, inputs: Any, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        return self.run(inputs, initial_state, training, mask)


class NumpyBackend(registry.Backend, name="numpy"):
    stack_class = StackedRNNCells
    rnn_class = RNN
    bidirectional_class = Bidirectional
    distributions = ("numpy",)
    forward_reference = 0
    cell_bases = (NumpyCell,)

    def is_native(self, x: Any) -> bool:
        return isinstance(x, np.ndarray) and not isinstance(x, np.matrix)  # matrix '*' is a matmul

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

    def reverse_time(self, x: Any) -> Any:
        return np.ascontiguousarray(x[:, ::-1])

    def where(self, cond: Any, a: Any, b: Any | None) -> Any:
        return np.where(cond, a, np.zeros_like(a) if b is None else b)

    def swap_batch_time(self, x: Any) -> Any:
        return np.swapaxes(x, 0, 1)

    def concat(self, xs: list[Any]) -> Any:
        return np.concatenate(xs, axis=-1)


OPS = registry.get(NumpyBackend.name)
SimpleRNNCell, LSTMCell, GRUCell = (OPS.cell_class(cells.get(k)) for k in ("SimpleRNNCell", "LSTMCell", "GRUCell"))


def __getattr__(name: str) -> type:
    """Any registered cell type's class by name (``MGUCell``), as pickle looks it up."""
    ops = globals().get("OPS")
    return cells.class_by_name(__name__, name, None if ops is None else ops.cell_class)
