"""TensorFlow backend: cells are Keras 3 layers (``SimpleRNNCell``, ``LSTMCell``, ``GRUCell`` subclass
Keras's own; the class of each cell type is made from its spec, :mod:`rnn_xframework.cells`).

They work in eager mode, inside ``tf.function`` and inside Keras models. Our layers never
autocast: an input of another dtype than the layer's is an error, not a silent cast. NumPy
arrays are accepted as inputs, as Keras layers accept them.

Keras 3 chooses its backend once per process (``KERAS_BACKEND``); this module refuses to load
when Keras runs on anything but TensorFlow, rather than changing a global setting.

Every class here is a registered Keras serializable (``"rnn_xframework>LSTMCell"``, ...) with
``get_config``/``from_config``, so ``model.save("m.keras")`` and ``keras.saving.load_model``
round-trip a model holding these layers, without ``custom_objects``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from rnn_xframework import bidirectional, cells, orderings, protocol, registry
from rnn_xframework.errors import BackendUnavailableError


def _keras_backend_problem() -> str | None:
    """Why Keras cannot serve this backend, or ``None``. Keras is asked which backend it actually
    loaded: it decides from ``$KERAS_BACKEND`` *and* ``~/.keras/keras.json`` (``$KERAS_HOME``)."""
    try:
        import keras
    except ImportError as e:  # e.g. keras.json names a backend whose framework is not installed
        return f"the 'tensorflow' backend needs Keras on TensorFlow, but importing Keras failed: {e}"
    name = keras.config.backend()
    if name == "tensorflow":
        return None
    return (
        f"the 'tensorflow' backend needs Keras running on TensorFlow, but Keras runs on {name!r} in this "
        f"process (KERAS_BACKEND={os.environ.get('KERAS_BACKEND')!r}, or keras.json in "
        f"{os.environ.get('KERAS_HOME', '~/.keras')}); Keras picks its backend once per process: start a new "
        "process with KERAS_BACKEND=tensorflow, or use backend='torch'"
    )


_problem = _keras_backend_problem()
if _problem:
    raise BackendUnavailableError(_problem)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from rnn_xframework.backends.tensorflow.keras_cells import KerasCell, SpecLayer, serializable  # noqa: E402
from rnn_xframework.backends.tensorflow.ops import (  # noqa: E402
    checked,
    checked_states,
    device_scope,
)


@serializable
class StackedRNNCells(orderings.StackMixin, keras.layers.Layer):
    """One step through every cell; state ``[[h0], [h1], ...]``, never unwrapped."""

    backend = "tensorflow"
    base_kwargs = {"autocast": False}

    def get_config(self) -> dict[str, Any]:
        config = keras.layers.Layer.get_config(self)
        return {**config, "cells": [keras.saving.serialize_keras_object(c) for c in self.cells]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        config = dict(config)
        cells = [keras.saving.deserialize_keras_object(c) for c in config.pop("cells")]
        return cls(cells, **config)

    def __call__(self, inputs: Any, states: Any, training: bool | None = None, **kwargs: Any) -> Any:
        inputs = checked(inputs, "stack inputs")
        return super().__call__(inputs, checked_states(states, "stack states"), training=training, **kwargs)

    def call(self, inputs: Any, states: Any, training: bool | None = None) -> Any:
        return self.step(inputs, states, training)


@serializable
class RNN(orderings.RNNMixin, keras.layers.Layer):
    """Loop over ``[batch, time, features]`` in Python (unrolled when traced by ``tf.function``)."""

    backend = "tensorflow"
    base_kwargs = {"autocast": False}

    def __init__(self, cell: Any, **kwargs: Any) -> None:
        super().__init__(cell, **kwargs)
        self.supports_masking = True  # the library's RNN reads ``mask=`` as Keras's does

    def get_config(self) -> dict[str, Any]:
        config = keras.layers.Layer.get_config(self)
        return {
            **config,
            "cell": keras.saving.serialize_keras_object(self.cell),
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "order": self.order,
            "time_major": self.time_major,
            "zero_output_for_mask": self.zero_output_for_mask,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        config = dict(config)
        cell = keras.saving.deserialize_keras_object(config.pop("cell"))
        return cls(cell, **config)

    def fresh_copy(self, *, go_backwards: bool, prefix: str = "") -> Any:
        """As Keras's ``Bidirectional`` copies its layer: from the config (``prefix`` + name), so
        initializers, regularizers and constraints come along; new weights."""
        config = {**self.get_config(), "go_backwards": bool(go_backwards)}
        config["name"] = prefix + self.name.removeprefix(prefix)
        new = type(self).from_config(config)
        if self.cell.input_dim is not None:
            new.build((None, None, self.cell.input_dim))
        return new

    def __call__(self, inputs: Any, initial_state: Any = None, training: bool | None = None, **kwargs: Any) -> Any:
        inputs = checked(inputs, "RNN inputs")
        initial_state = checked_states(initial_state, "RNN initial_state")
        return super().__call__(inputs, initial_state, training=training, **kwargs)

    def call(self, inputs: Any, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        return self.run(inputs, initial_state, training, mask)


@serializable
class Bidirectional(bidirectional.BidirectionalMixin, keras.layers.Layer):
    """``Bidirectional`` as a Keras layer (``"rnn_xframework>Bidirectional"``): ``forward_layer``
    and ``backward_layer`` are its tracked sublayers; saved and loaded in ``.keras`` files."""

    backend = "tensorflow"
    base_kwargs = {"autocast": False}

    def __init__(self, forward_layer: Any, backward_layer: Any, merge_mode: Any = "concat", **kwargs: Any) -> None:
        super().__init__(forward_layer, backward_layer, merge_mode=merge_mode, **kwargs)
        self.supports_masking = True

    def get_config(self) -> dict[str, Any]:
        config = keras.layers.Layer.get_config(self)
        return {
            **config,
            "forward_layer": keras.saving.serialize_keras_object(self.forward_layer),
            "backward_layer": keras.saving.serialize_keras_object(self.backward_layer),
            "merge_mode": self.merge_mode,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        config = dict(config)
        forward_layer = keras.saving.deserialize_keras_object(config.pop("forward_layer"))
        backward_layer = keras.saving.deserialize_keras_object(config.pop("backward_layer"))
        return cls(forward_layer, backward_layer, **config)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        """Keras's: the input mask for sequences (twice with ``merge_mode=None``), none for states."""
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        out = mask if self.return_sequences else None
        if self.merge_mode is None:
            out = [out, out]
        if self.return_state:
            return [out, [None] * len(self.cells)]
        return out

    def __call__(self, inputs: Any, initial_state: Any = None, training: bool | None = None, **kwargs: Any) -> Any:
        inputs = checked(inputs, "Bidirectional inputs")
        initial_state = checked_states(initial_state, "Bidirectional initial_state")
        return super().__call__(inputs, initial_state, training=training, **kwargs)

    def call(self, inputs: Any, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        return self.run(inputs, initial_state, training, mask)


class TensorFlowBackend(registry.Backend, name="tensorflow"):
    stack_class = StackedRNNCells
    rnn_class = RNN
    bidirectional_class = Bidirectional
    compiled_class = "rnn_xframework.backends.tensorflow.compile.function:CompiledRNN"
    fused_bidirectional = "rnn_xframework.backends.tensorflow.compile.graph_bidirectional:FusedBidirectional"
    compile_methods = {
        "tf.function": "rnn_xframework.backends.tensorflow.compile.function:compile_function",
        "xla": "rnn_xframework.backends.tensorflow.compile.function:compile_xla",
    }
    slow_to_compile = frozenset({"xla"})
    masked_methods = frozenset({"tf.function", "xla"})
    distributions = ("tensorflow", "tensorflow-cpu", "keras")
    forward_reference = 1
    gradient_reference = 0
    trainer = "rnn_xframework.parity.train_tensorflow"

    def cell_class(self, spec: cells.CellSpec) -> type:
        """``KerasCell`` over Keras's own class for the spec, or over :class:`SpecLayer`."""
        base = SpecLayer if spec.keras_class is None else getattr(keras.layers, spec.keras_class)
        cls = spec.class_over((KerasCell, base), __name__)
        return serializable(cls)  # "rnn_xframework>LSTMCell", ...; a re-registered spec replaces its class

    xla_max_units = 128
    """``"auto"`` picks XLA up to this many units per layer, ``tf.function`` above."""

    def auto_method(self, rnn: Any) -> str:
        """``xf.compile(rnn, "auto")`` on TensorFlow: ``"xla"`` for small layers, else ``"tf.function"``.

        Measured on a 2-core AVX-512 CPU, two SimpleRNN layers (docs/performance.md): at 64 units
        (W1) XLA's while loop is about 1.8x faster than the unrolled graph; at 256 and 512 units
        (W2, W3) the unrolled ``tf.function`` graph is 15-30% faster than XLA: TensorFlow runs its
        matrix products through oneDNN and overlaps layer ``l`` at step ``t + 1`` with layer
        ``l + 1`` at step ``t`` on the two cores, which XLA's sequential loop does not.
        """
        return "xla" if max(c.units for c in rnn.cells) <= self.xla_max_units else "tf.function"

    def is_native(self, x: Any) -> bool:
        return isinstance(x, (tf.Tensor, tf.Variable, keras.KerasTensor))

    def shape(self, x: Any) -> tuple[int | None, ...]:
        return tuple(x.shape)

    def dtype_name(self, x: Any) -> str:
        return (
            protocol.dtype_name(x.dtype)
            if x.dtype in ("float32", "float64", tf.float32, tf.float64)
            else tf.as_dtype(x.dtype).name
        )

    def to_numpy(self, x: Any) -> np.ndarray:
        return keras.ops.convert_to_numpy(x)

    def batch_size(self, x: Any) -> Any:
        static = x.shape[0]
        return static if static is not None else tf.shape(x)[0]

    def from_numpy(self, a: Any, device: Any = None) -> Any:
        with device_scope(device):
            return tf.identity(tf.convert_to_tensor(np.array(a)))

    def unstack(self, x: Any) -> list[Any]:
        return tf.unstack(x, axis=1)

    def stack(self, xs: list[Any]) -> Any:
        return tf.stack(xs, axis=1)

    def reverse_time(self, x: Any) -> Any:
        return tf.reverse(x, [1])

    def where(self, cond: Any, a: Any, b: Any | None) -> Any:
        return tf.where(cond, a, tf.zeros_like(a) if b is None else b)

    def swap_batch_time(self, x: Any) -> Any:
        return tf.transpose(x, [1, 0, 2])

    def concat(self, xs: list[Any]) -> Any:
        return tf.concat(xs, axis=-1)


OPS = registry.get(TensorFlowBackend.name)
SimpleRNNCell, LSTMCell, GRUCell = (OPS.cell_class(cells.get(k)) for k in ("SimpleRNNCell", "LSTMCell", "GRUCell"))


def __getattr__(name: str) -> type:
    """Any registered cell type's class by name (``MGUCell``), as pickle looks it up."""
    ops = globals().get("OPS")
    return cells.class_by_name(__name__, name, None if ops is None else ops.cell_class)
