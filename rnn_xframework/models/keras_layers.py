"""Each Keras layer class of the whole-model vocabulary -> a :class:`~rnn_xframework.models.graph.Layer`:
its settings, weights and inner layers, read per class (:data:`READERS`).

:func:`read_layer` reads one layer object (its dtype policy checked); :func:`kind_of` refuses a
class outside the vocabulary (a custom layer, a ``Lambda``, a Keras layer not yet ported) with
:class:`UnsupportedConfigError`, naming the layer and its class (:func:`refuse`). The recurrent
layers' cells are checked by the Keras port (:func:`rnn_xframework.backends.keras_port.describe_cells`).
How the layers connect (the model's graph, masks, nested models) is
:mod:`rnn_xframework.models.keras_reader`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from rnn_xframework import layouts, protocol
from rnn_xframework.backends import keras_port
from rnn_xframework.errors import UnsupportedConfigError
from rnn_xframework.models.graph import Layer


def refuse(layer: Any, why: str) -> UnsupportedConfigError:
    return UnsupportedConfigError(
        f"to_torch: layer {layer.name!r} ({type(layer).__module__}.{type(layer).__name__}) {why}"
    )


def _activation(layer: Any, fn: Any) -> str:
    name = keras.activations.serialize(fn)
    if not isinstance(name, str):
        raise refuse(layer, f"has the custom activation {fn!r}; only Keras's built-in activations port")
    return name


def _weights(layer: Any) -> dict[str, np.ndarray]:
    """The layer's own weights by their Keras names (``kernel``, ``moving_mean``, ...)."""
    return {v.name: np.array(v.numpy()) for v in layer.weights}


def _dense(layer: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Layer]]:
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise refuse(layer, "is a LoRA or quantized Dense; merge or dequantize it first")
    config = {"units": layer.units, "activation": _activation(layer, layer.activation), "use_bias": layer.use_bias}
    return config, _weights(layer), {}


def _embedding(layer: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Layer]]:
    if getattr(layer, "quantization_mode", None):
        raise refuse(layer, "is quantized; dequantize it first")
    config = {"input_dim": layer.input_dim, "output_dim": layer.output_dim, "mask_zero": bool(layer.mask_zero)}
    return config, {"embeddings": np.array(layer.embeddings.numpy())}, {}


def _dropout(layer: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Layer]]:
    if getattr(layer, "noise_shape", None) is not None and type(layer) is keras.layers.Dropout:
        raise refuse(layer, f"has noise_shape={layer.noise_shape}; PyTorch's dropout draws per element")
    return {"rate": float(layer.rate)}, {}, {}


def _data_format(layer: Any) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise refuse(layer, f"has data_format={layer.data_format!r}; only 'channels_last' (Keras's default) ports")


def _plain(*attrs: str) -> Callable[[Any], tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Layer]]]:
    def read(layer: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Layer]]:
        _data_format(layer)
        config = {}
        for a in attrs:
            value = getattr(layer, a)
            config[a] = list(value) if isinstance(value, tuple) else value
        return config, {}, {}

    return read


def _activation_layer(layer: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Layer]]:
    return {"activation": _activation(layer, layer.activation)}, {}, {}


def _normalization(layer: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Layer]]:
    axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
    rank = len(layer.input.shape) if _has_input(layer) else None
    last = [-1] if rank is None else [-1, rank - 1]
    if axis not in last and axis != [rank - 1 if rank else -1] and axis != [-1]:
        raise refuse(layer, f"normalizes axis={layer.axis}; only the last axis (Keras's default) ports")
    config = {"epsilon": float(layer.epsilon), "center": bool(layer.center), "scale": bool(layer.scale)}
    if isinstance(layer, keras.layers.BatchNormalization):
        if layer.renorm:
            raise refuse(layer, "has renorm=True, which PyTorch's BatchNorm lacks")
        config["momentum"] = float(layer.momentum)
    elif getattr(layer, "rms_scaling", False):
        raise refuse(layer, "has rms_scaling=True; use nn.RMSNorm by hand")
    return config, _weights(layer), {}


def _conv1d(layer: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Layer]]:
    _data_format(layer)
    config = {
        "filters": layer.filters,
        "kernel_size": int(layer.kernel_size[0]),
        "strides": int(layer.strides[0]),
        "padding": layer.padding,
        "dilation_rate": int(layer.dilation_rate[0]),
        "groups": int(layer.groups),
        "activation": _activation(layer, layer.activation),
        "use_bias": layer.use_bias,
    }
    return config, _weights(layer), {}


def _pool1d(layer: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Layer]]:
    _data_format(layer)
    config = {"pool_size": int(layer.pool_size[0]), "strides": int(layer.strides[0]), "padding": layer.padding}
    return config, {}, {}


def _recurrent(layer: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Layer]]:
    if not layer.built:
        raise refuse(layer, "is not built; call the model once (or build it) first")
    cells = list(layer.cell.cells) if isinstance(layer.cell, keras.layers.StackedRNNCells) else [layer.cell]
    if layer.cell.dtype_policy.name != layer.dtype_policy.name:
        raise refuse(
            layer,
            f"runs its cells in a {type(layer.cell).__name__} of dtype {layer.cell.dtype_policy.name!r} (the layer's "
            f"is {layer.dtype_policy.name!r}); Keras casts between them: give the StackedRNNCells the same dtype=",
        )
    ports = keras_port.describe_cells(cells, "torch", False, layer)  # every cell setting checked there
    config: dict[str, Any] = {
        "cells": [{"kind": p.kind, "config": {k: v for k, v in p.config.items() if k != "dtype"}} for p in ports],
        "return_sequences": bool(layer.return_sequences),
        "return_state": bool(layer.return_state),
        "go_backwards": bool(layer.go_backwards),
        "stateful": bool(layer.stateful),
        "zero_output_for_mask": bool(layer.zero_output_for_mask),
    }
    weights = {}
    for i, p in enumerate(ports):
        names = layouts.get(p.kind).names(p.config["use_bias"])
        weights.update({f"{i}.{n}": np.array(w) for n, w in zip(names, p.weights or [], strict=True)})
    return config, weights, {}


def _bidirectional(layer: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Layer]]:
    inner = {
        "forward": read_layer(layer.forward_layer, "forward"),
        "backward": read_layer(layer.backward_layer, "backward"),
    }
    config = {
        "merge_mode": layer.merge_mode,
        "return_sequences": bool(layer.return_sequences),
        "return_state": bool(layer.return_state),
    }
    return config, {}, inner


def _time_distributed(layer: Any) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Layer]]:
    if not isinstance(layer.layer, keras.layers.Dense):
        raise refuse(layer, f"wraps a {type(layer.layer).__name__}; only TimeDistributed(Dense) ports")
    return {}, {}, {"layer": read_layer(layer.layer, "layer")}


READERS: dict[str, Callable[[Any], tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Layer]]]] = {
    "Dense": _dense,
    "Embedding": _embedding,
    "Dropout": _dropout,
    "SpatialDropout1D": _dropout,
    "Activation": _activation_layer,
    "Flatten": _plain(),
    "Reshape": _plain("target_shape"),
    "Permute": _plain("dims"),
    "RepeatVector": _plain("n"),
    "TimeDistributed": _time_distributed,
    "Concatenate": _plain("axis"),
    "Add": _plain(),
    "Multiply": _plain(),
    "Average": _plain(),
    "Masking": _plain("mask_value"),
    "GlobalAveragePooling1D": _plain("keepdims"),
    "GlobalMaxPooling1D": _plain("keepdims"),
    "BatchNormalization": _normalization,
    "LayerNormalization": _normalization,
    "Conv1D": _conv1d,
    "MaxPooling1D": _pool1d,
    "SimpleRNN": _recurrent,
    "LSTM": _recurrent,
    "GRU": _recurrent,
    "RNN": _recurrent,
    "Bidirectional": _bidirectional,
}


def _has_input(layer: Any) -> bool:
    try:
        layer.input  # noqa: B018 (raises for a layer never called on a symbolic tensor)
    except (AttributeError, ValueError):
        return False
    return True


def kind_of(layer: Any) -> str:
    cls = type(layer)
    kind = cls.__name__
    if kind not in READERS or getattr(keras.layers, kind, None) is not cls:
        raise refuse(
            layer,
            "is outside the vocabulary a whole-model port knows (a custom layer, a Lambda, or a Keras layer "
            f"not yet ported); the vocabulary: {', '.join(READERS)}",
        )
    return kind


def read_layer(layer: Any, name: str) -> Layer:
    kind = kind_of(layer)
    policy = layer.dtype_policy
    if policy.compute_dtype != policy.variable_dtype or policy.compute_dtype not in protocol.DTYPES:
        if kind not in ("Embedding",) or policy.variable_dtype not in protocol.DTYPES:
            raise refuse(layer, f"has the dtype policy {policy.name!r}; only float32 or float64 port")
    config, weights, inner = READERS[kind](layer)
    dtype = policy.compute_dtype if policy.compute_dtype in protocol.DTYPES else policy.variable_dtype
    return Layer(name, kind, config, weights, bool(layer.trainable), inner, keras_name=layer.name, dtype=dtype)
