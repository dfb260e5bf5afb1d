"""One framework-neutral description of a whole model: its layers, their weights, the graph.

A reader (``keras_reader``: a Keras model in; a later ``torch.fx`` reader) makes a
:class:`Graph`; an emitter (``torch_module``: a live ``torch.nn.Module``; ``torch_source``:
``model.py``; a later Keras emitter) reads it. Nothing here imports a framework: settings are
plain Python values named as Keras names them, weights NumPy arrays in the canonical (Keras)
layouts (a ``Dense`` kernel ``(in, units)``; a recurrent cell ``[kernel, recurrent_kernel,
bias]`` as in :mod:`rnn_xframework.layouts`).

=============  ====================================================================
``Graph``      ``inputs`` (:class:`Input`), ``layers`` (name -> :class:`Layer`, one
               entry per layer object: a layer used twice is one entry, two nodes),
               ``nodes`` (:class:`Node`, in an order where every input exists
               already), ``outputs`` (tensor names, in the model's order)
``Layer``      ``kind`` (the Keras class name, one of :data:`KINDS`), ``config``,
               ``weights`` (name -> array), ``trainable``, ``inner`` (a wrapper's
               layers: ``TimeDistributed``'s layer, ``Bidirectional``'s two
               directions)
``Node``       one call of a layer: ``inputs`` (tensor names; a merge layer takes
               several), ``initial_state`` (tensor names, for recurrent layers),
               ``outputs`` (tensor names: ``[y]``, ``[y, h, c]`` with
               ``return_state``), ``mask`` (whether the call receives its input's
               mask, by Keras's rule), ``output_masks`` (which outputs carry a mask)
=============  ====================================================================

Masks are not tensors of the graph: each tensor may carry one, made and passed on by the layers
as :data:`MASKS` says (Keras's rules); a reader records where Keras saw one, an emitter computes
them and checks they appear where the reader saw them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnn_xframework.errors import UnsupportedConfigError

RECURRENT = ("SimpleRNN", "LSTM", "GRU", "RNN")
MASKS: dict[str, str] = {
    # kind -> what it does with masks: "make" (computes a new one from its input), "pass" (the
    # input's mask goes on unchanged), "merge" (several inputs' masks combined, Keras's rule per
    # kind), "consume" (uses it; its output carries none unless return_sequences), "drop" (Keras
    # ignores it: the layer does not support masking).
    "InputLayer": "pass",
    "Embedding": "make",
    "Masking": "make",
    "Dense": "pass",
    "Dropout": "pass",
    "SpatialDropout1D": "pass",
    "Activation": "pass",
    "TimeDistributed": "pass",
    "LayerNormalization": "pass",
    "BatchNormalization": "pass",
    "Concatenate": "merge",
    "Add": "merge",
    "Multiply": "merge",
    "Average": "merge",
    "SimpleRNN": "consume",
    "LSTM": "consume",
    "GRU": "consume",
    "RNN": "consume",
    "Bidirectional": "consume",
    "GlobalAveragePooling1D": "consume",
    "GlobalMaxPooling1D": "drop",
    "Flatten": "drop",
    "Reshape": "drop",
    "Permute": "drop",
    "RepeatVector": "drop",
    "Conv1D": "drop",
    "MaxPooling1D": "drop",
}
KINDS = tuple(MASKS)
"""The vocabulary: the Keras layer classes a description may hold."""


@dataclass
class Input:
    """One model input: ``name``, ``shape`` without the batch axis (``None`` for a free size),
    ``dtype`` (``"float32"``, ``"int32"``, ...)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


@dataclass
class Layer:
    """One layer object. ``name`` is unique in the graph and a Python identifier (the attribute
    name an emitter gives it); ``keras_name`` the name it had where it was read."""

    name: str
    kind: str
    config: dict[str, Any]
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    trainable: bool = True
    inner: dict[str, Layer] = field(default_factory=dict)
    keras_name: str = ""
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UnsupportedConfigError(
                f"model description: layer {self.name!r} has kind {self.kind!r}, outside the vocabulary {KINDS}"
            )


@dataclass
class Node:
    """One call of ``layer``: see the module docstring."""

    layer: str
    inputs: list[str]
    outputs: list[str]
    initial_state: list[str] = field(default_factory=list)
    mask: bool = False
    output_masks: list[bool] = field(default_factory=list)


@dataclass
class Graph:
    """A whole model: see the module docstring. ``name`` is the model's (a class name for
    emitters that write code)."""

    name: str
    inputs: list[Input]
    layers: dict[str, Layer]
    nodes: list[Node]
    outputs: list[str]

    def check(self) -> Graph:
        """Every tensor is made before it is used, every node names a layer; returns ``self``."""
        made = {i.name for i in self.inputs}
        for node in self.nodes:
            if node.layer not in self.layers:
                raise UnsupportedConfigError(f"model description: a node calls the unknown layer {node.layer!r}")
            missing = [t for t in (*node.inputs, *node.initial_state) if t not in made]
            if missing:
                raise UnsupportedConfigError(f"model description: {node.layer} uses {missing} before they exist")
            made.update(node.outputs)
        missing = [t for t in self.outputs if t not in made]
        if missing:
            raise UnsupportedConfigError(f"model description: outputs {missing} are never computed")
        return self

    def uses(self, layer: str) -> list[Node]:
        """The nodes calling ``layer`` (two or more for a shared layer)."""
        return [n for n in self.nodes if n.layer == layer]

    def dtype(self) -> str:
        """The float dtype every layer computes in (``"float32"`` or ``"float64"``)."""
        by_dtype: dict[str, list[str]] = {}
        for layer in self._all_layers():
            by_dtype.setdefault(layer.dtype, []).append(layer.keras_name or layer.name)
        if len(by_dtype) > 1:
            listed = "; ".join(f"{d}: {', '.join(names[:4])}" for d, names in sorted(by_dtype.items()))
            raise UnsupportedConfigError(
                f"to_torch: the model's layers compute in several dtypes ({listed}); Keras casts between them, "
                "a port computes in one: give every layer the same dtype= (or keras.config.set_floatx)"
            )
        return next(iter(by_dtype), "float32")

    def _all_layers(self) -> list[Layer]:
        out, todo = [], list(self.layers.values())
        while todo:
            layer = todo.pop()
            out.append(layer)
            todo += layer.inner.values()
        return out

    def parameter_count(self) -> int:
        """Trainable weights (elements), as Keras counts them."""
        return sum(
            int(np.prod(w.shape))
            for layer in self._all_layers()
            if layer.trainable
            for name, w in layer.weights.items()
            if not name.startswith("moving_")
        )
