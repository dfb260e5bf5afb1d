"""A Keras model (``Sequential``, functional ``Model``, nested models, or a ``.keras`` file) or a
single Keras layer -> the framework-neutral :class:`~rnn_xframework.models.graph.Graph`.

Settings are read per layer class (:mod:`.keras_layers`); a layer outside the vocabulary, an operation
that is not a layer (``keras.ops.add`` in a functional model), a ``Lambda`` or a custom layer
raises :class:`UnsupportedConfigError` naming the layer and its class, before anything is
returned. Nested models are inlined (their layers named ``outer_inner``); a layer object used
twice is one :class:`Layer` with two nodes. Masks follow Keras's own rule for which call
receives one (a call whose only tensor argument carries a mask, and whose ``call`` takes
``mask``); where Keras recorded masks on the model's tensors, the reader checks its rule against
them.
"""

from __future__ import annotations

import keyword
import os
import re
from typing import Any

import keras
from keras.src.layers.layer import CallSpec

from rnn_xframework.backends import keras_port
from rnn_xframework.errors import FrameworkMismatchError, UnsupportedConfigError
from rnn_xframework.models import graph, keras_layers
from rnn_xframework.models.graph import Graph, Input, Layer, Node

RESERVED = {"forward", "training", "load", "state_dict", "parameters", "modules", "buffers", "to", "cuda", "cpu"}


def identifier(name: str, taken: set[str]) -> str:
    """``name`` as a Python identifier not in ``taken`` (nor a keyword, nor an ``nn.Module`` method)."""
    base = re.sub(r"\W", "_", name) or "layer"
    if base[0].isdigit():
        base = f"layer_{base}"
    if keyword.iskeyword(base) or base in RESERVED:
        base += "_"
    out, i = base, 1
    while out in taken:
        i += 1
        out = f"{base}_{i}"
    return out


class _Reader:
    def __init__(self, name: str) -> None:
        self.name = name
        self.layers: dict[str, Layer] = {}
        self.by_id: dict[int, str] = {}  # id(Keras layer) -> Layer name: a shared layer is read once
        self.nodes: list[Node] = []
        self.tensors: dict[int, str] = {}  # id(KerasTensor) -> tensor name
        self.masked: dict[str, bool] = {}
        self.names: set[str] = set()

    def _tensor(self, kt: Any, prefix: str) -> str:
        name = identifier(prefix, self.names)
        self.names.add(name)
        self.tensors[id(kt)] = name
        return name

    def layer(self, keras_layer: Any, scope: str) -> str:
        if id(keras_layer) not in self.by_id:
            name = identifier(scope + keras_layer.name, set(self.layers) | RESERVED)
            self.layers[name] = keras_layers.read_layer(keras_layer, name)
            self.by_id[id(keras_layer)] = name
        return self.by_id[id(keras_layer)]

    def model(self, model: Any, scope: str, top: bool) -> None:
        """Every node of ``model`` in an order where its inputs exist; nested models inlined."""
        fn = _functional(model)
        used = _used_by_layers(fn)
        for depth in sorted(fn._nodes_by_depth, reverse=True):
            for node in fn._nodes_by_depth[depth]:
                op = node.operation
                if node.is_input or op is None:
                    continue
                if not isinstance(op, keras.layers.Layer):
                    if any(id(t) in used for t in node.outputs):
                        raise UnsupportedConfigError(
                            f"to_torch: the operation {op.name!r} ({type(op).__module__}.{type(op).__name__}) is "
                            "not a layer; a whole-model port takes layers only (wrap the computation in a "
                            "vocabulary layer, or port the model without it)"
                        )
                    continue  # a mask computation Keras recorded (not_equal, logical_or): masks are re-derived
                self.call(node, scope, top)

    def call(self, node: Any, scope: str, top: bool) -> None:
        op, args, kwargs = node.operation, node.arguments.args, dict(node.arguments.kwargs)
        recorded_mask = kwargs.pop("mask", None)
        if isinstance(op, keras.Model):
            self.nested(op, node, args, scope, recorded_mask)
            return
        name = self.layer(op, scope)
        inputs = _flat(args[0]) if args else []
        initial_state = _flat(kwargs.pop("initial_state", []))
        extra = [k for k, v in kwargs.items() if _flat(v)] + [
            f"argument {i}" for i, a in enumerate(args[1:]) if _flat(a)
        ]
        if extra:
            raise keras_layers.refuse(op, f"is called with tensors in {extra}; only inputs and initial_state= port")
        for t in (*inputs, *initial_state):
            if id(t) not in self.tensors:
                raise keras_layers.refuse(op, "takes a tensor from outside the model")
        in_names = [self.tensors[id(t)] for t in inputs]
        spec = CallSpec(op._call_signature, op._call_context_args, args, kwargs)
        gets_mask = (
            len(spec.tensor_arguments_dict) == 1
            and "mask" in spec.argument_names
            and any(self.masked[n] for n in in_names)
        )
        if top and (recorded_mask is not None) != gets_mask:
            raise keras_layers.refuse(op, f"receives a mask where the reader expected {'one' if gets_mask else 'none'}")
        layer = self.layers[name]
        outputs = [self._tensor(t, name) for t in node.outputs]
        masks = _output_masks(layer, [self.masked[n] for n in in_names], len(outputs))
        if top:
            seen = [getattr(t, "_keras_mask", None) is not None for t in node.outputs]
            if seen != masks:
                raise keras_layers.refuse(op, f"gives outputs with masks {seen} where the reader expected {masks}")
        self.masked.update(zip(outputs, masks, strict=True))
        self.nodes.append(Node(name, in_names, outputs, [self.tensors[id(t)] for t in initial_state], gets_mask, masks))

    def nested(self, model: Any, node: Any, args: Any, scope: str, recorded_mask: Any) -> None:
        fn = _functional(model)
        outer = [self.tensors[id(t)] for t in _flat(args[0])]
        if len(outer) != len(fn.inputs):
            raise keras_layers.refuse(model, f"takes {len(fn.inputs)} inputs, called with {len(outer)}")
        for inner, name in zip(fn.inputs, outer, strict=True):
            self.tensors[id(inner)] = name
        self.model(model, f"{scope}{model.name}_", top=False)
        for inner, kt in zip(fn.outputs, node.outputs, strict=True):
            self.tensors[id(kt)] = self.tensors[id(inner)]


def _output_masks(layer: Layer, masked_in: list[bool], n_out: int) -> list[bool]:
    """Which outputs carry a mask, by Keras's rules (:data:`graph.MASKS`)."""
    rule, first = graph.MASKS[layer.kind], bool(masked_in and masked_in[0])
    if rule == "make":
        out = layer.kind == "Masking" or bool(layer.config.get("mask_zero"))
    elif rule == "pass":
        out = first
    elif rule == "merge":
        out = any(masked_in) if layer.kind == "Concatenate" else all(masked_in)
    elif rule == "consume" and layer.kind != "GlobalAveragePooling1D":
        out = first and bool(layer.config["return_sequences"])
    else:
        out = False
    return [out] + [False] * (n_out - 1)


def _flat(x: Any) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return [t for item in x for t in _flat(item)]
    return [x] if isinstance(x, keras.KerasTensor) else []


def _functional(model: Any) -> Any:
    if isinstance(model, keras.Sequential):
        fn = getattr(model, "_functional", None)
        if fn is None:
            raise UnsupportedConfigError(
                f"to_torch: Sequential model {model.name!r} has no known input shape; start it with "
                "keras.Input(shape) (or call model.build(input_shape)) so its graph exists"
            )
        return fn
    if not hasattr(model, "_nodes_by_depth"):
        raise UnsupportedConfigError(
            f"to_torch: model {model.name!r} ({type(model).__name__}) is a subclassed keras.Model: its call() is "
            "Python code, not a graph; port each layer (xf.to_torch(layer)) and write forward() by hand"
        )
    return model


def _used_by_layers(fn: Any) -> set[int]:
    """ids of the tensors that a layer takes or the model returns (not mask-only computations)."""
    used = {id(t) for t in fn.outputs}
    for nodes in fn._nodes_by_depth.values():
        for node in nodes:
            if isinstance(node.operation, keras.layers.Layer):  # its mask= is Keras's own mask machinery
                kwargs = {k: v for k, v in node.arguments.kwargs.items() if k != "mask"}
                used |= {id(t) for t in _flat([list(node.arguments.args), list(kwargs.values())])}
    changed = True
    while changed:  # an op whose output feeds a used op is used too
        changed = False
        for nodes in fn._nodes_by_depth.values():
            for node in nodes:
                op = node.operation
                if op is None or isinstance(op, keras.layers.Layer) or node.is_input:
                    continue
                if any(id(t) in used for t in node.outputs):
                    new = {id(t) for t in node.arguments.keras_tensors} - used
                    if new:
                        used |= new
                        changed = True
    return used


def _dtype(kt: Any) -> str:
    return str(keras.backend.standardize_dtype(kt.dtype))


def read(obj: Any) -> Graph:
    """A Keras model, a ``.keras`` path or one built Keras layer -> :class:`Graph`."""
    if isinstance(obj, (str, os.PathLike)):
        obj = keras_port.load(obj)
    if isinstance(obj, keras.Model):
        return _read_model(obj)
    if isinstance(obj, keras.layers.Layer):
        return _read_single(obj)
    raise FrameworkMismatchError(
        f"to_torch: expected a Keras Model, layer or .keras path, got {type(obj).__module__}.{type(obj).__name__}"
    )


def _read_model(model: Any) -> Graph:
    fn = _functional(model)
    reader = _Reader(model.name)
    inputs = []
    for kt in fn.inputs:
        name = reader._tensor(kt, kt._keras_history.operation.name)
        reader.masked[name] = False
        inputs.append(Input(name, tuple(kt.shape[1:]), _dtype(kt)))
    reader.model(model, "", top=True)
    outputs = [reader.tensors[id(t)] for t in fn.outputs]
    return Graph(_class_name(model.name), inputs, reader.layers, reader.nodes, outputs).check()


def _read_single(layer: Any) -> Graph:
    if not layer.built:
        raise keras_layers.refuse(layer, "is not built; build it (layer.build(input_shape)) or call it once first")
    shapes = getattr(layer, "_build_shapes_dict", None) or {}
    shape = next(iter(shapes.values()), None)
    if shape is None or not isinstance(shape, (tuple, list)) or (shape and isinstance(shape[0], (tuple, list))):
        raise keras_layers.refuse(layer, "has no single known input shape; port it inside a keras.Model instead")
    reader = _Reader(layer.name)
    kind = keras_layers.kind_of(layer)
    dtype = "int32" if kind == "Embedding" else layer.dtype_policy.compute_dtype
    x = Input("inputs", tuple(shape[1:]), dtype)
    name = reader.layer(layer, "")
    out = ["outputs"]
    if kind in graph.RECURRENT and layer.return_state:
        count = sum(_states(c["kind"]) for c in reader.layers[name].config["cells"])
        out += [f"state_{i}" for i in range(count)]
    node = Node(name, [x.name], out, [], False, [False] * len(out))
    return Graph(_class_name(layer.name), [x], reader.layers, [node], out).check()


def _states(kind: str) -> int:
    from rnn_xframework import cells

    return len(cells.get(kind).states)


def _class_name(name: str) -> str:
    parts = re.split(r"\W|_", name)
    out = "".join(p[:1].upper() + p[1:] for p in parts if p) or "Model"
    return out if out[0].isalpha() else f"Model{out}"


def loaded(obj: Any) -> Any:
    """``obj``, or the model a ``.keras`` path holds."""
    return keras_port.load(obj) if isinstance(obj, (str, os.PathLike)) else obj
