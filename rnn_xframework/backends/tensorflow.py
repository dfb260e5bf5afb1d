"""TensorFlow backend: cells are Keras 3 layers (``SimpleRNNCell``, ``LSTMCell``, ``GRUCell`` subclass
Keras's own).

They work in eager mode, inside ``tf.function`` and inside Keras models. Our layers never
autocast: an input of another dtype than the layer's is an error, not a silent cast. NumPy
arrays are accepted as inputs, as Keras layers accept them.

Keras 3 chooses its backend once per process (``KERAS_BACKEND``); this module refuses to load
when Keras runs on anything but TensorFlow, rather than changing a global setting.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from rnn_xframework import backends, layouts, loops, protocol, transfer
from rnn_xframework.dropout import check_masks, check_rate
from rnn_xframework.errors import BackendUnavailableError, UnsupportedConfigError


def _keras_backend_problem() -> str | None:
    if "keras" in sys.modules:
        name = sys.modules["keras"].backend.backend()
    else:
        name = os.environ.get("KERAS_BACKEND", "tensorflow")
    if name == "tensorflow":
        return None
    return (
        f"the 'tensorflow' backend needs Keras running on TensorFlow, but Keras "
        f"{'was loaded' if 'keras' in sys.modules else 'is configured'} with KERAS_BACKEND={name!r}; "
        "Keras picks its backend once per process: start a new process with KERAS_BACKEND=tensorflow "
        "(or unset it), or use backend='torch'"
    )


_problem = _keras_backend_problem()
if _problem:
    raise BackendUnavailableError(_problem)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


def _to_tensor(x: Any) -> Any:
    return tf.convert_to_tensor(x) if isinstance(x, np.ndarray) else x


def _device_scope(device: Any) -> Any:
    return tf.device(device) if device is not None else _NullScope()


class _NullScope:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _KerasCell:
    """What the three Keras-cell subclasses share: the library's checks, list states, device
    scope, canonical weights (Keras's own layout) and explicit dropout masks.

    Mixed in before the Keras cell class; each subclass calls :meth:`_setup` after Keras's
    ``__init__``.
    """

    backend = "tensorflow"
    cell_kind: str
    n_states = 1

    def _setup(self, device: Any) -> None:
        check_rate("dropout", self.dropout)  # Keras clamps to [0, 1]; 1 would drop everything
        check_rate("recurrent_dropout", self.recurrent_dropout)
        self.device = device
        self.state_sizes = [self.units] * self.n_states

    @property
    def input_dim(self) -> int | None:
        return int(self.kernel.shape[0]) if self.built else None

    @property
    def dtype_name(self) -> str:
        return protocol.dtype_name(self.compute_dtype)

    @property
    def n_dropout_masks(self) -> int:
        """Masks per kind: Keras's ``dropout_mask_count`` (one per gate), else 1."""
        return getattr(self, "dropout_mask_count", None) or 1

    def portable_config(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
        }

    def build(self, input_shape: Sequence[int | None]) -> None:
        with _device_scope(self.device):
            super().build(input_shape)  # type: ignore[misc]

    def get_weights(self) -> list[np.ndarray]:
        """Canonical layout, which is Keras's: ``[kernel, recurrent_kernel, bias]``."""
        if not self.built:
            return []
        return [keras.ops.convert_to_numpy(v) for v in (self.kernel, self.recurrent_kernel, self.bias) if v is not None]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Checks count and every shape before assigning anything."""
        dim = self.input_dim if self.built else layouts.input_dim_of(self.cell_kind, weights)
        arrays = layouts.check(layouts.name_of(self), weights, dim, self.units, self.use_bias)
        if not self.built:
            self.build((None, dim))
        variables = [v for v in (self.kernel, self.recurrent_kernel, self.bias) if v is not None]
        for variable, value in zip(variables, arrays, strict=True):
            variable.assign(value.astype(self.dtype_name))

    def get_dropout_masks(self) -> tuple[list[Any] | None, list[Any] | None]:
        """``(input masks, recurrent masks)`` Keras has cached, each a list or ``None``."""
        masks = (getattr(self, "_dropout_mask", None), getattr(self, "_recurrent_dropout_mask", None))
        return tuple(None if m is None else list(m) if isinstance(m, (list, tuple)) else [m] for m in masks)

    def set_dropout_masks(self, inputs: Sequence[Any] | None = None, recurrent: Sequence[Any] | None = None) -> None:
        """Make Keras use these masks (already scaled) until its next reset; see
        :mod:`rnn_xframework.dropout`."""
        for what, masks, rate in (("inputs", inputs, self.dropout), ("recurrent", recurrent, self.recurrent_dropout)):
            if masks is not None:
                check_masks(self, what, masks, rate)

        def native(masks: Sequence[Any]) -> Any:
            tensors = [
                tf.convert_to_tensor(np.asarray(m, self.dtype_name)) if not OPS.is_native(m) else m for m in masks
            ]
            return tensors if getattr(self, "dropout_mask_count", None) else tensors[0]

        if inputs is not None:
            self._dropout_mask = native(inputs)
        if recurrent is not None:
            self._recurrent_dropout_mask = native(recurrent)

    def __call__(self, inputs: Any, states: Any, training: bool | None = None, **kwargs: Any) -> Any:
        inputs = _to_tensor(inputs)
        if isinstance(states, (list, tuple)):
            states = [_to_tensor(s) for s in states]
        states = protocol.check_step(self, OPS, inputs, _to_tensor(states))
        with _device_scope(self.device):
            out, new = super().__call__(inputs, states, training=training, **kwargs)  # type: ignore[misc]
        return out, list(new) if isinstance(new, (list, tuple)) else [new]


class SimpleRNNCell(_KerasCell, keras.layers.SimpleRNNCell):
    """Keras's ``SimpleRNNCell`` with the library's checks and list-state convention.

    ``h = activation(x @ kernel + bias + h_prev @ recurrent_kernel)``; weights ``kernel``
    ``(input_dim, units)``, ``recurrent_kernel`` ``(units, units)``, ``bias`` ``(units,)``.
    Extra keyword arguments go to Keras (initializers, ``name``, ``dropout``, ...).
    """

    cell_kind = "SimpleRNNCell"

    def __init__(
        self,
        units: int,
        activation: str | None = "tanh",
        use_bias: bool = True,
        *,
        dtype: Any = None,
        device: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(units, activation=activation, use_bias=use_bias, dtype=protocol.dtype_name(dtype), **kwargs)
        self._setup(device)


class _GatedKerasCell(_KerasCell):
    """LSTM and GRU: Keras's gated cells take a ``recurrent_activation`` too."""

    def __init__(
        self,
        units: int,
        activation: str | None = "tanh",
        recurrent_activation: str | None = "sigmoid",
        use_bias: bool = True,
        *,
        dtype: Any = None,
        device: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(  # type: ignore[call-arg]
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            dtype=protocol.dtype_name(dtype),
            **kwargs,
        )
        self._setup(device)

    def portable_config(self) -> dict[str, Any]:
        return {
            **super().portable_config(),
            "recurrent_activation": keras.activations.serialize(self.recurrent_activation),  # type: ignore[attr-defined]
        }


class LSTMCell(_GatedKerasCell, keras.layers.LSTMCell):
    """Keras's ``LSTMCell`` with the library's checks; states ``[h, c]`` (a bare tensor is an
    error). Weights ``kernel`` ``(input_dim, 4*units)``, ``recurrent_kernel``
    ``(units, 4*units)``, ``bias`` ``(4*units,)``, gates ``i, f, c, o``.
    """

    cell_kind = "LSTMCell"
    n_states = 2

    def portable_config(self) -> dict[str, Any]:
        return {**super().portable_config(), "unit_forget_bias": self.unit_forget_bias}


class GRUCell(_GatedKerasCell, keras.layers.GRUCell):
    """Keras's ``GRUCell`` with the library's checks; state ``[h]``. Weights ``kernel``
    ``(input_dim, 3*units)``, ``recurrent_kernel`` ``(units, 3*units)``, ``bias`` ``(2, 3*units)``
    (``reset_after=True``, default) or ``(3*units,)``; gates ``z, r, h``.
    """

    cell_kind = "GRUCell"

    @property
    def layout_name(self) -> str:
        return "GRUCell" if self.reset_after else "GRUCell(reset_after=False)"

    def portable_config(self) -> dict[str, Any]:
        return {**super().portable_config(), "reset_after": self.reset_after}


class StackedRNNCells(loops.StackMixin, keras.layers.Layer):
    """One step through every cell; state ``[[h0], [h1], ...]``, never unwrapped."""

    backend = "tensorflow"

    def __init__(self, cells: Sequence[Any], **kwargs: Any) -> None:
        kwargs.setdefault("autocast", False)
        keras.layers.Layer.__init__(self, **kwargs)
        self.cells = list(cells)
        self._ops = OPS

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.build_cells(input_shape)

    def call(self, inputs: Any, states: Any, training: bool | None = None) -> Any:
        return self.step(inputs, states, training)


class RNN(loops.RNNMixin, keras.layers.Layer):
    """Loop over ``[batch, time, features]`` in Python (unrolled when traced by ``tf.function``)."""

    backend = "tensorflow"

    def __init__(
        self,
        cell: Any,
        *,
        return_sequences: bool,
        return_state: bool,
        go_backwards: bool,
        order: str,
        time_major: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("autocast", False)
        keras.layers.Layer.__init__(self, **kwargs)
        self.cell = cell
        self.time_major = time_major
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.order = order
        self._ops = OPS
        self.supports_masking = True  # the library's RNN reads ``mask=`` as Keras's does

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.cell.build_cells(input_shape)

    def call(self, inputs: Any, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        return self.run(inputs, initial_state, training, mask)


class TensorFlowBackend(backends.Backend, name="tensorflow"):
    cells = {"SimpleRNNCell": SimpleRNNCell, "LSTMCell": LSTMCell, "GRUCell": GRUCell}
    stack_class = StackedRNNCells
    rnn_class = RNN

    def is_native(self, x: Any) -> bool:
        return isinstance(x, (tf.Tensor, tf.Variable, keras.KerasTensor))

    def shape(self, x: Any) -> tuple[int | None, ...]:
        return tuple(x.shape)

    def dtype_name(self, x: Any) -> str:
        return (
            protocol.dtype_name(x.dtype) if x.dtype in ("float32", "float64", tf.float32, tf.float64) else str(x.dtype)
        )

    def to_numpy(self, x: Any) -> np.ndarray:
        return keras.ops.convert_to_numpy(x)

    def batch_size(self, x: Any) -> Any:
        static = x.shape[0]
        return static if static is not None else tf.shape(x)[0]

    def from_numpy(self, a: Any, device: Any = None) -> Any:
        with _device_scope(device):
            return tf.identity(tf.convert_to_tensor(np.array(a)))

    def unstack(self, x: Any) -> list[Any]:
        return tf.unstack(x, axis=1)

    def stack(self, xs: list[Any]) -> Any:
        return tf.stack(xs, axis=1)

    def swap_batch_time(self, x: Any) -> Any:
        return tf.transpose(x, [1, 0, 2])

    # --- gradients and training (rnn_xframework.parity) --------------------------------------
    def _loss_and_tape(self, model: Any, x: Any, states: Any, loss_weights: Any, device: Any) -> tuple[Any, ...]:
        with _device_scope(device):
            xt = tf.convert_to_tensor(x)
            st = [[tf.convert_to_tensor(s) for s in layer] for layer in states]
            w_y, w_states = loss_weights
            with tf.GradientTape() as tape:
                tape.watch([xt, *[s for layer in st for s in layer]])
                y, final = model(xt, st)
                loss = tf.reduce_sum(y * w_y)
                for layer, weights in zip(final, w_states, strict=True):
                    for s, w in zip(layer, weights, strict=True):
                        loss = loss + tf.reduce_sum(s * w)
        return loss, tape, xt, st

    def loss_and_grads(self, model: Any, x: Any, states: Any, loss_weights: Any, device: Any = None) -> Any:
        """``tf.GradientTape``; Keras variables are the canonical weights, in ``get_weights()`` order."""
        variables = _canonical_variables(model)
        loss, tape, xt, st = self._loss_and_tape(model, x, states, loss_weights, device)
        flat_states = [s for layer in st for s in layer]
        grads = iter(tape.gradient(loss, [xt, *flat_states, *variables]))
        grad_x = self.to_numpy(next(grads))
        grad_states = [[self.to_numpy(next(grads)) for _ in layer] for layer in st]
        return backends.Gradients(float(loss), grad_x, grad_states, [self.to_numpy(g) for g in grads])

    def train_step(
        self, model: Any, x: Any, states: Any, loss_weights: Any, optimizer: Any, device: Any = None
    ) -> float:
        """One step of ``keras.optimizers.SGD`` / ``keras.optimizers.Adam`` with these hyper-parameters."""
        if optimizer.name == "sgd":
            opt = keras.optimizers.SGD(learning_rate=optimizer.learning_rate, momentum=0.0)
        elif optimizer.name == "adam":
            opt = keras.optimizers.Adam(
                learning_rate=optimizer.learning_rate,
                beta_1=optimizer.beta_1,
                beta_2=optimizer.beta_2,
                epsilon=optimizer.epsilon,
            )
        else:
            raise UnsupportedConfigError(f"optimizer must be 'sgd' or 'adam', got {optimizer.name!r}")
        variables = _canonical_variables(model)
        loss, tape, _, _ = self._loss_and_tape(model, x, states, loss_weights, device)
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return float(loss)


def _canonical_variables(model: Any) -> list[Any]:
    """Every cell's trainable variables in layer order: the canonical list, as Keras orders it."""
    return [v for cell in transfer.cells_of(model) for v in cell.trainable_weights]


OPS = backends.get("tensorflow")
