"""The TensorFlow primitives the Keras cells use: tensors and configs in (NumPy arrays converted,
anything else refused with a typed error; a serialized dtype policy read back as a dtype name),
the device scope, and the spec step's :class:`~rnn_xframework.cells.StepOps`.

Imported by :mod:`rnn_xframework.backends.tensorflow` after it has checked that Keras runs on
TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from rnn_xframework import protocol, registry
from rnn_xframework.errors import FrameworkMismatchError


def dtype_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """``from_config`` side of the ``dtype`` entry: Keras writes a serialized ``DTypePolicy``;
    the library's cells take a dtype name (and refuse mixed policies)."""
    config = dict(config)
    dtype = config.pop("dtype", None)
    if isinstance(dtype, dict):
        dtype = keras.dtype_policies.deserialize(dtype).name
    elif isinstance(dtype, keras.DTypePolicy):
        dtype = dtype.name
    config["dtype"] = dtype
    return config


def to_tensor(x: Any) -> Any:
    return tf.convert_to_tensor(x) if isinstance(x, np.ndarray) and not isinstance(x, np.matrix) else x


def checked(x: Any, what: str) -> Any:
    """``x`` as a TensorFlow tensor (NumPy arrays converted, as Keras layers accept them); anything
    else (a torch tensor, a list) raises :class:`FrameworkMismatchError` here, before Keras's own
    ``__call__`` could convert it silently or fail with a raw error."""
    x = to_tensor(x)
    if isinstance(x, (list, tuple)):
        raise FrameworkMismatchError(
            f"{what}: expected a tensorflow tensor, got a Python {type(x).__name__}; convert it with "
            "np.asarray(x, 'float32') or tf.constant(x)"
        )
    ops = registry.get("tensorflow")
    if not ops.is_native(x):
        protocol.check_tensor(ops, x, what, (), "")  # raises the typed error naming what was given
    return x


def checked_states(states: Any, what: str) -> Any:
    """A (nested) list of states with every tensor checked by :func:`checked`."""
    if isinstance(states, (list, tuple)):
        return [checked_states(s, f"{what}[{i}]") for i, s in enumerate(states)]
    return states if states is None else checked(states, what)


def device_scope(device: Any) -> Any:
    """``tf.device(device)``, or a scope that does nothing when ``device`` is ``None``."""
    return tf.device(device) if device is not None else _NullScope()


class _NullScope:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class TFOps:
    """:class:`~rnn_xframework.cells.StepOps` in TensorFlow (Keras's activations)."""

    def split(self, x: Any, n: int) -> list[Any]:
        return tf.split(x, n, axis=-1)

    def activation(self, name: Any) -> Any:
        return name if callable(name) else keras.activations.get(name)

    def matmul(self, a: Any, b: Any) -> Any:
        return tf.matmul(a, b)

    def concat(self, xs: Sequence[Any]) -> Any:
        return tf.concat(list(xs), axis=-1)


STEP_OPS = TFOps()
