"""The NumPy reference: forward only, written to be read, the oracle of every test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnn_xframework import backends, layouts, loops, protocol
from rnn_xframework.backends import Backend
from rnn_xframework.dropout import DropoutMixin, check_rate
from rnn_xframework.errors import UnsupportedConfigError

ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: sigmoid(x),
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


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def activation_fn(name: str | None) -> Any:
    if name not in ACTIVATIONS:
        raise UnsupportedConfigError(f"numpy backend: activation must be one of {list(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


class _NumpyCell(protocol.PortableConfig, DropoutMixin):
    """What the three NumPy cells share: sizes, Keras initialization, weights, dropout masks.

    Subclasses set ``cell_kind``, ``gates``, ``n_states`` and write :meth:`step`.
    """

    backend = "numpy"
    cell_kind: str
    gates = 1
    n_states = 1

    def __init__(
        self,
        units: int,
        activation: str | None = "tanh",
        use_bias: bool = True,
        *,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        dtype: Any = None,
        device: Any = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(units, int) or units <= 0:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        activation_fn(activation)
        if device not in (None, "cpu"):
            raise UnsupportedConfigError(f"numpy backend runs on 'cpu' only, got device={device!r}")
        self.units = units
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.dropout = check_rate("dropout", dropout)
        self.recurrent_dropout = check_rate("recurrent_dropout", recurrent_dropout)
        self.dtype_name = protocol.dtype_name(dtype)
        self.state_sizes = [units] * self.n_states
        self.input_dim: int | None = None
        self.weights: list[np.ndarray] = []
        self._rng = np.random.default_rng(seed)

    @property
    def state_size(self) -> Any:
        return self.units if self.n_states == 1 else list(self.state_sizes)

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

    def build(self, input_shape: Sequence[int | None]) -> None:
        dim = int(input_shape[-1])  # type: ignore[arg-type]
        g = self.gates * self.units
        self.weights = [
            glorot_uniform(self._rng, (dim, g), self.dtype_name),
            orthogonal(self._rng, (self.units, g), self.dtype_name),
        ]
        if self.use_bias:
            self.weights.append(layouts.initial_bias(self))
        self.input_dim = dim

    def get_initial_state(self, batch_size: int) -> list[np.ndarray]:
        return [np.zeros((batch_size, self.units), self.dtype_name) for _ in range(self.n_states)]

    def get_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: Sequence[Any]) -> None:
        dim = self.input_dim if self.input_dim is not None else layouts.input_dim_of(self.cell_kind, weights)
        arrays = layouts.check(layouts.name_of(self), weights, dim, self.units, self.use_bias)
        self.weights = [a.astype(self.dtype_name, copy=True) for a in arrays]
        self.input_dim = dim

    def _new_mask(self, like: np.ndarray, rate: float) -> np.ndarray:
        keep = self._rng.random(like.shape) >= rate
        return (keep / (1.0 - rate)).astype(self.dtype_name)

    def _as_mask(self, m: Any) -> np.ndarray:
        return np.asarray(m, self.dtype_name)

    def blocks(self, i: int) -> list[np.ndarray]:
        """Weight ``i`` split into its ``gates`` blocks along the last axis."""
        return np.split(self.weights[i], self.gates, axis=-1)

    def gate_inputs(self, x: np.ndarray, h: np.ndarray, training: bool | None) -> tuple[list, list]:
        """Per-gate ``x @ kernel_g`` and ``h @ recurrent_kernel_g``, dropout masks applied."""
        xs = self.masked(x, self.get_dropout_mask(x), training)
        hs = self.masked(h, self.get_recurrent_dropout_mask(h), training)
        k, r = self.blocks(0), self.blocks(1)
        return [a @ w for a, w in zip(xs, k, strict=True)], [a @ w for a, w in zip(hs, r, strict=True)]

    def step(self, x: np.ndarray, states: list[np.ndarray], training: bool | None) -> tuple[Any, list[Any]]:
        raise NotImplementedError

    def __call__(self, inputs: Any, states: Any, training: bool | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        if self.input_dim is None and isinstance(inputs, np.ndarray) and inputs.ndim == 2:
            self.build(inputs.shape)
        states = protocol.check_step(self, OPS, inputs, states)
        out, new = self.step(inputs, states, training)
        return out.astype(self.dtype_name, copy=False), [s.astype(self.dtype_name, copy=False) for s in new]


class SimpleRNNCell(_NumpyCell):
    """``h = activation(x @ kernel + bias + h_prev @ recurrent_kernel)`` in NumPy.

    Weights are initialized like Keras's (glorot-uniform kernel, orthogonal recurrent kernel,
    zero bias) from ``seed``.
    """

    cell_kind = "SimpleRNNCell"

    def step(self, x: np.ndarray, states: list[np.ndarray], training: bool | None) -> tuple[Any, list[Any]]:
        (zx,), (zh,) = self.gate_inputs(x, states[0], training)
        z = zx + zh + (self.weights[2] if self.use_bias else 0)
        out = ACTIVATIONS[self.activation](z)
        return out, [out]


class LSTMCell(_NumpyCell):
    """Keras's LSTM step; gates ``i, f, c, o`` in that order along the last weight axis::

        i = rec_act(x K_i + h U_i + b_i)     f = rec_act(x K_f + h U_f + b_f)
        c' = f * c + i * act(x K_c + h U_c + b_c)
        o = rec_act(x K_o + h U_o + b_o)     h' = o * act(c')

    States ``[h, c]``; ``unit_forget_bias`` sets ``b_f`` to ones at build (Keras's default).
    """

    cell_kind = "LSTMCell"
    config_keys = (*protocol.GATED_KEYS, "unit_forget_bias")
    gates = 4
    n_states = 2

    def __init__(
        self,
        units: int,
        activation: str | None = "tanh",
        recurrent_activation: str | None = "sigmoid",
        use_bias: bool = True,
        *,
        unit_forget_bias: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(units, activation, use_bias, **kwargs)
        activation_fn(recurrent_activation)
        self.recurrent_activation = recurrent_activation
        self.unit_forget_bias = bool(unit_forget_bias)

    def step(self, x: np.ndarray, states: list[np.ndarray], training: bool | None) -> tuple[Any, list[Any]]:
        h, c = states
        zx, zh = self.gate_inputs(x, h, training)
        b = self.blocks(2) if self.use_bias else [0] * 4
        z = [a + r + bb for a, r, bb in zip(zx, zh, b, strict=True)]
        act, rec = ACTIVATIONS[self.activation], ACTIVATIONS[self.recurrent_activation]
        c = rec(z[1]) * c + rec(z[0]) * act(z[2])
        h = rec(z[3]) * act(c)
        return h, [h, c]


class GRUCell(_NumpyCell):
    """Keras's GRU step; gates ``z, r, h`` in that order along the last weight axis.

    With ``reset_after=True`` (Keras's default, PyTorch's only form) the bias is
    ``(2, 3*units)``, an input row ``b`` and a recurrent row ``b'``::

        z = rec_act(x K_z + b_z + h U_z + b'_z)     r = rec_act(x K_r + b_r + h U_r + b'_r)
        hh = act(x K_h + b_h + r * (h U_h + b'_h))  h' = z * h + (1 - z) * hh

    With ``reset_after=False`` the bias is ``(3*units,)`` and ``hh = act(x K_h + b_h + (r * h) U_h)``.
    """

    cell_kind = "GRUCell"
    config_keys = (*protocol.GATED_KEYS, "reset_after")
    gates = 3

    def __init__(
        self,
        units: int,
        activation: str | None = "tanh",
        recurrent_activation: str | None = "sigmoid",
        use_bias: bool = True,
        *,
        reset_after: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(units, activation, use_bias, **kwargs)
        activation_fn(recurrent_activation)
        self.recurrent_activation = recurrent_activation
        self.reset_after = bool(reset_after)
        self.layout_name = "GRUCell" if self.reset_after else "GRUCell(reset_after=False)"

    def step(self, x: np.ndarray, states: list[np.ndarray], training: bool | None) -> tuple[Any, list[Any]]:
        (h,) = states
        xs = self.masked(x, self.get_dropout_mask(x), training)
        hs = self.masked(h, self.get_recurrent_dropout_mask(h), training)
        k, u = self.blocks(0), self.blocks(1)
        zero = np.zeros(3 * self.units, self.dtype_name)
        bias = self.weights[2] if self.use_bias else zero
        b_in, b_rec = (bias[0], bias[1]) if self.reset_after and self.use_bias else (bias, zero)
        b_in, b_rec = np.split(b_in, 3), np.split(b_rec, 3)
        act, rec = ACTIVATIONS[self.activation], ACTIVATIONS[self.recurrent_activation]
        z = rec(xs[0] @ k[0] + b_in[0] + hs[0] @ u[0] + b_rec[0])
        r = rec(xs[1] @ k[1] + b_in[1] + hs[1] @ u[1] + b_rec[1])
        if self.reset_after:
            hh = act(xs[2] @ k[2] + b_in[2] + r * (hs[2] @ u[2] + b_rec[2]))
        else:
            hh = act(xs[2] @ k[2] + b_in[2] + (r * hs[2]) @ u[2])
        h = z * h + (1 - z) * hh
        return h, [h]


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
        self,
        cell: Any,
        *,
        return_sequences: bool,
        return_state: bool,
        go_backwards: bool,
        order: str,
        time_major: bool = False,
    ) -> None:
        self.cell = cell
        self.time_major = time_major
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.order = order
        self._ops = OPS

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.cell.build_cells(input_shape)

    def __call__(self, inputs: Any, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        return self.run(inputs, initial_state, training, mask)


class NumpyBackend(Backend, name="numpy"):
    cells = {"SimpleRNNCell": SimpleRNNCell, "LSTMCell": LSTMCell, "GRUCell": GRUCell}
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

    def swap_batch_time(self, x: Any) -> Any:
        return np.swapaxes(x, 0, 1)

    # --- gradients and training: none (the forward reference only) ---------------------------
    def loss_and_grads(self, model: Any, x: Any, states: Any, loss_weights: Any, device: Any = None) -> Any:
        raise UnsupportedConfigError(NO_GRADIENTS)

    def train_step(
        self, model: Any, x: Any, states: Any, loss_weights: Any, optimizer: Any, device: Any = None
    ) -> float:
        raise UnsupportedConfigError(NO_GRADIENTS)


NO_GRADIENTS = "numpy has no gradients (the forward reference only)"
OPS = backends.get("numpy")
