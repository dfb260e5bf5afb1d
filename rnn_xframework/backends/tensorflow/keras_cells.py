"""The TensorFlow backend's cells: :class:`KerasCell`, mixed over Keras's own cell class of a
type (``keras.layers.LSTMCell``, ...), or over :class:`SpecLayer` for a type Keras lacks (the
spec's step as a Keras layer). Imported by :mod:`rnn_xframework.backends.tensorflow` after its
check that Keras runs on TensorFlow; every class is a registered Keras serializable
(:data:`serializable`, ``"rnn_xframework>..."``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from rnn_xframework import cells, layouts, protocol, registry
from rnn_xframework.backends.tensorflow.ops import STEP_OPS, device_scope, dtype_from_config, resolve_device, to_tensor
from rnn_xframework.cells.base import SpecNamed
from rnn_xframework.dropout import cached, check_masks
from rnn_xframework.errors import UnsupportedConfigError

serializable = keras.saving.register_keras_serializable(package="rnn_xframework")
"""Registers a class as ``"rnn_xframework>ClassName"``: ``keras.saving.load_model`` finds it
without ``custom_objects``."""


def _ops() -> registry.Backend:
    """The TensorFlow backend (its class is defined after this module is imported)."""
    return registry.get("tensorflow")


class KerasCell(SpecNamed):
    """The library's side of a TensorFlow cell, mixed in before the Keras cell class of the spec:
    the library's checks, list states, device scope, canonical weights (Keras's own layout) and
    explicit dropout masks. Constructed like the Keras cell, plus ``dtype`` and ``device``;
    other keyword arguments go to Keras (initializers, ``name``, ...).
    """

    backend = "tensorflow"
    spec: cells.CellSpec

    def __init__(self, units: int, *args: Any, dtype: Any = None, device: Any = None, **kwargs: Any) -> None:
        config = self.spec.bind(units, args, kwargs)  # checks the dropout rates (Keras clamps to [0, 1])
        kwargs.setdefault("autocast", False)
        super().__init__(dtype=protocol.dtype_name(dtype), **config, **kwargs)  # type: ignore[call-arg]
        self.device = resolve_device(device)
        self.state_sizes = [self.units] * self.spec.n_states

    @property
    def input_dim(self) -> int | None:
        return int(self.kernel.shape[0]) if self._made else None

    @property
    def _made(self) -> bool:
        """Whether the weights exist: set at the end of :meth:`build`, under the build lock (Keras's
        own ``built`` turns true at the start of its cells' ``build``, before the weights exist)."""
        return getattr(self, "_weights_made", False)

    @property
    def dtype_name(self) -> str:
        return protocol.dtype_name(self.compute_dtype)

    @property
    def n_dropout_masks(self) -> int:
        """Masks per kind: Keras's ``dropout_mask_count`` (one per gate), else 1."""
        return getattr(self, "dropout_mask_count", None) or 1

    def portable_config(self) -> dict[str, Any]:
        """The spec's config keys; activations by their Keras names."""
        config = {key: getattr(self, key) for key in self.spec.config_keys}
        for key in self.spec.activations:
            config[key] = keras.activations.serialize(keras.activations.get(config[key]))
        return config

    def get_config(self) -> dict[str, Any]:
        """Keras's cell config plus ``device`` (a string, or ``None``)."""
        config = super().get_config()  # type: ignore[misc]
        config.pop("autocast", None)  # always False here; set by __init__
        return {**config, "device": None if self.device is None else str(self.device)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        return cls(**dtype_from_config(config))

    def build(self, input_shape: Sequence[int | None]) -> None:
        with protocol.BUILD_LOCK:  # a lazy build from several threads at once runs once
            if self._made:  # built meanwhile by another thread (Keras's wrapper still runs around us)
                return
            with device_scope(self.device):
                super().build(input_shape)  # type: ignore[misc]
            self._weights_made = True

    def get_weights(self) -> list[np.ndarray]:
        """Canonical layout, which is Keras's: ``[kernel, recurrent_kernel, bias]``."""
        if not self._made:
            return []
        return [keras.ops.convert_to_numpy(v) for v in (self.kernel, self.recurrent_kernel, self.bias) if v is not None]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Checks count and every shape before assigning anything."""
        dim = self.input_dim if self._made else layouts.input_dim_of(self.cell_kind, weights)
        arrays = layouts.check(self.layout_name, weights, dim, self.units, self.use_bias)
        values = [a.astype(self.dtype_name) for a in arrays]  # all converted before any write
        if not self._made:
            self.build((None, dim))
        variables = [v for v in (self.kernel, self.recurrent_kernel, self.bias) if v is not None]
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)

    # Keras's DropoutRNNCell caches on the cell; inside an RNN call the masks belong to the call
    # (rnn_xframework.dropout.call_scope), so threads never share or reset each other's masks.
    def get_dropout_mask(self, step_input: Any) -> Any:
        if self.dropout <= 0:
            return None
        return cached(self, "inputs", lambda: self._create_dropout_mask(step_input, self.dropout))

    def get_recurrent_dropout_mask(self, step_input: Any) -> Any:
        if self.recurrent_dropout <= 0:
            return None
        return cached(self, "recurrent", lambda: self._create_dropout_mask(step_input, self.recurrent_dropout))

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
                tf.convert_to_tensor(np.asarray(m, self.dtype_name)) if not _ops().is_native(m) else m for m in masks
            ]
            return tensors if getattr(self, "dropout_mask_count", None) else tensors[0]

        if inputs is not None:
            self._dropout_mask = native(inputs)
        if recurrent is not None:
            self._recurrent_dropout_mask = native(recurrent)

    def __call__(self, inputs: Any, states: Any, training: bool | None = None, **kwargs: Any) -> Any:
        inputs = to_tensor(inputs)
        if isinstance(states, (list, tuple)):
            states = [to_tensor(s) for s in states]
        states = protocol.check_step(self, _ops(), inputs, to_tensor(states))
        if inputs.shape[0] == 0:  # no rows: Keras's LSTMCell fails on them (TF's BiasAdd); nothing to compute
            empty = tf.zeros((0, self.units), self.dtype_name)
            return empty, [empty for _ in states]
        with device_scope(self.device):
            out, new = super().__call__(inputs, states, training=training, **kwargs)  # type: ignore[misc]
        return out, list(new) if isinstance(new, (list, tuple)) else [new]


class SpecLayer(keras.layers.Layer):
    """A Keras layer computing any cell spec (for types without a Keras class): ``kernel``,
    ``recurrent_kernel`` and ``bias`` as Keras weights (glorot-uniform, orthogonal, the spec's
    initial bias), the spec's step in :meth:`call`. Keras dropout is not implemented here: a
    rate above zero is refused."""

    spec: cells.CellSpec

    def __init__(self, **kwargs: Any) -> None:
        config = {key: kwargs.pop(key) for key in self.spec.config_keys}
        if config["dropout"] or config["recurrent_dropout"]:
            raise UnsupportedConfigError(
                f"backend 'tensorflow': {self.spec.name} has no Keras class, and the generic Keras layer has no "
                "dropout; use backend='torch' or 'numpy' for dropout"
            )
        super().__init__(**kwargs)
        self.spec_config = config
        for key, value in config.items():
            setattr(self, key, value)
        for key in self.spec.activations:
            setattr(self, key, keras.activations.get(config[key]))
        self.state_size = self.units if self.spec.n_states == 1 else [self.units] * self.spec.n_states
        self.output_size = self.units

    def build(self, input_shape: Sequence[int | None]) -> None:
        g = self.spec.n_gates * self.units
        self.kernel = self.add_weight(shape=(input_shape[-1], g), initializer="glorot_uniform", name="kernel")
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, g), initializer="orthogonal", name="recurrent_kernel"
        )
        self.bias = None
        if self.use_bias:
            bias = self.spec.initial_bias(self.spec_config, protocol.dtype_name(self.dtype))
            init = keras.initializers.Constant(bias)
            self.bias = self.add_weight(shape=bias.shape, initializer=init, name="bias")

    def call(self, inputs: Any, states: Any, training: bool | None = None) -> Any:
        b_in, b_rec = (None, None) if self.bias is None else self.spec.layout(self.spec_config).bias_parts(self.bias)
        w = cells.StepWeights(self.kernel, self.recurrent_kernel, b_in, b_rec)
        return cells.run_step(self.spec, STEP_OPS, self.spec_config, w, inputs, list(states))

    def get_initial_state(self, batch_size: Any = None) -> list[Any]:
        """Zeros, one ``[batch_size, units]`` tensor per state (Keras's cells have this; the
        library's RNN calls it when no initial state is given)."""
        return [keras.ops.zeros((batch_size, self.units), dtype=self.compute_dtype) for _ in self.spec.states]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.spec_config}
