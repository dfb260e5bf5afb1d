"""The non-recurrent layers of the torch emitter (:mod:`~rnn_xframework.models.torch_code`): each
kind's ``(init, call)`` pair, what it adds to the module's ``__init__`` and to its ``forward``.

``Dense`` (and ``TimeDistributed(Dense)``), ``Embedding``, the dropouts, ``Activation``, the shape
and merge layers, ``Masking``, the 1-D poolings, ``BatchNormalization``, ``LayerNormalization``
and ``Conv1D``: PyTorch's own module where one is exact, else a line of ``torch`` calls. The
recurrent layers are :mod:`~rnn_xframework.models.torch_rnn`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rnn_xframework.errors import UnsupportedConfigError
from rnn_xframework.models.graph import Layer, Node


def _f(x: Any) -> str:
    """A Python literal as it reads best (``1e-05`` stays exact: repr round-trips floats)."""
    return repr(float(x)) if isinstance(x, float) else repr(x)


def _nothing(e: Any, layer: Layer) -> None:
    e.code.native[layer.name] = True


# --- Dense, Embedding, Dropout, Activation ---------------------------------------------------------
def _dense_init(e: Any, layer: Layer) -> None:
    w = layer.inner["layer"].weights if layer.kind == "TimeDistributed" else layer.weights
    config = layer.inner["layer"].config if layer.kind == "TimeDistributed" else layer.config
    state = {"weight": w["kernel"].T}
    if config["use_bias"]:
        state["bias"] = w["bias"]
    bias = "" if config["use_bias"] else ", bias=False"
    e.module(layer, f"nn.Linear({w['kernel'].shape[0]}, {config['units']}{bias}{e.dt})", state)


def _dense_call(e: Any, layer: Layer, node: Node) -> None:
    config = layer.inner["layer"].config if layer.kind == "TimeDistributed" else layer.config
    e.add(f"{node.outputs[0]} = {e.act(config['activation'], f'self.{layer.name}({node.inputs[0]})', layer)}")
    e.pass_mask(node)


def _embedding_init(e: Any, layer: Layer) -> None:
    c, w = layer.config, layer.weights["embeddings"]
    e.module(layer, f"nn.Embedding({c['input_dim']}, {c['output_dim']}{e.dt})", {"weight": w})


def _embedding_call(e: Any, layer: Layer, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    ids = x if "int" in e.dtypes.get(x, "int") else f"{x}.long()"
    e.add(f"{y} = self.{layer.name}({ids})")
    e.dtypes[y] = "float"
    e.mask[y] = None
    if layer.config["mask_zero"]:
        e.add(f"{y}_mask = {x} != 0")
        e.mask[y] = f"{y}_mask"


def _dropout_init(e: Any, layer: Layer) -> None:
    cls = "nn.Dropout1d" if layer.kind == "SpatialDropout1D" else "nn.Dropout"
    e.module(layer, f"{cls}({_f(layer.config['rate'])})", {})


def _dropout_call(e: Any, layer: Layer, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if layer.kind == "SpatialDropout1D":  # whole channels: nn.Dropout1d takes [batch, channels, time]
        e.add(f"{y} = self.{layer.name}({x}.transpose(1, 2)).transpose(1, 2)")
    else:
        e.add(f"{y} = self.{layer.name}({x})")
    e.pass_mask(node)


def _activation_call(e: Any, layer: Layer, node: Node) -> None:
    e.add(f"{node.outputs[0]} = {e.act(layer.config['activation'], node.inputs[0], layer)}")
    e.pass_mask(node)


# --- shape layers ------------------------------------------------------------------------------------
def _shape_call(e: Any, layer: Layer, node: Node) -> None:
    x, y, c = node.inputs[0], node.outputs[0], layer.config
    expr = {
        "Flatten": lambda: f"{x}.flatten(1)",
        "Reshape": lambda: f"{x}.reshape({x}.shape[0], {', '.join(str(d) for d in c.get('target_shape', []))})",
        "Permute": lambda: f"{x}.permute(0, {', '.join(str(d) for d in c.get('dims', []))})",
        "RepeatVector": lambda: f"{x}.unsqueeze(1).repeat(1, {c.get('n')}, 1)",
        "GlobalMaxPooling1D": lambda: f"{x}.amax(dim=1, keepdim={c.get('keepdims')})",
    }[layer.kind]()
    e.add(f"{y} = {expr}")
    e.mask[y] = None


def _merge_call(e: Any, layer: Layer, node: Node) -> None:
    xs, y = node.inputs, node.outputs[0]
    if layer.kind == "Concatenate":
        e.add(f"{y} = torch.cat([{', '.join(xs)}], dim={layer.config['axis']})")
    else:
        op = " * " if layer.kind == "Multiply" else " + "
        expr = op.join(xs)
        e.add(f"{y} = ({expr}) / {len(xs)}" if layer.kind == "Average" else f"{y} = {expr}")
    masks = [e.mask.get(x) for x in xs]
    e.mask[y] = None
    if layer.kind == "Concatenate" and any(masks):
        e.code.helpers.add("concat_mask")
        listed = ", ".join(m or "None" for m in masks)
        e.add(f"{y}_mask = concat_mask([{', '.join(xs)}], [{listed}], {layer.config['axis']})")
        e.mask[y] = f"{y}_mask"
    elif layer.kind != "Concatenate" and masks and all(masks):
        e.add(f"{y}_mask = {' | '.join(m for m in masks if m)}")
        e.mask[y] = f"{y}_mask"


def _masking_call(e: Any, layer: Layer, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    e.add(f"{y}_mask = ({x} != {_f(layer.config['mask_value'])}).any(dim=-1)")
    e.add(f"{y} = {x}.masked_fill(~{y}_mask.unsqueeze(-1), 0.0)")
    e.mask[y] = f"{y}_mask"


def _mean_call(e: Any, layer: Layer, node: Node) -> None:
    x, y, keep = node.inputs[0], node.outputs[0], layer.config["keepdims"]
    m = e.first_mask(node) if node.mask else None
    if m is None:
        e.add(f"{y} = {x}.mean(dim=1, keepdim={keep})")
    else:
        e.code.helpers.add("masked_mean")
        e.add(f"{y} = masked_mean({x}, {m}, {keep})")
    e.mask[y] = None


# --- normalization ---------------------------------------------------------------------------------------
def _affine(e: Any, layer: Layer, n: int) -> dict[str, np.ndarray]:
    """gamma/beta as weight/bias; the one Keras lacks (scale=False or center=False) frozen at 1 / 0."""
    c, w, dtype = layer.config, layer.weights, e.g.dtype()
    state = {
        "weight": w["gamma"] if c["scale"] else np.ones(n, dtype),
        "bias": w["beta"] if c["center"] else np.zeros(n, dtype),
    }
    for flag, param in (("scale", "weight"), ("center", "bias")):
        if not c[flag]:
            e.freeze(layer, param)
    return state


def _batch_norm_init(e: Any, layer: Layer) -> None:
    c, w = layer.config, layer.weights
    n = w["moving_mean"].shape[0]
    ctor = f"nn.BatchNorm1d({n}, eps={_f(c['epsilon'])}, momentum={_f(1 - c['momentum'])}{e.dt})"
    state = {"running_mean": w["moving_mean"], "running_var": w["moving_variance"]}
    e.module(layer, ctor, {})
    e.code.state.update({f"{layer.name}.{k}": v for k, v in {**_affine(e, layer, n), **state}.items()})
    e.code.state[f"{layer.name}.num_batches_tracked"] = np.array(0, np.int64)


def _batch_norm_call(e: Any, layer: Layer, node: Node) -> None:
    x, y, c, n = node.inputs[0], node.outputs[0], layer.config, layer.name
    m = (e.first_mask(node) if node.mask else None) or "None"
    training = "self.training" if layer.trainable else "False"
    e.code.helpers.add("batch_norm")
    e.add(
        f"{y} = batch_norm({x}, {m}, self.{n}.weight, self.{n}.bias, self.{n}.running_mean, "
        f"self.{n}.running_var, {_f(c['momentum'])}, {_f(c['epsilon'])}, {training})"
    )
    e.pass_mask(node)


def _layer_norm_init(e: Any, layer: Layer) -> None:
    c = layer.config
    if not layer.weights:
        raise UnsupportedConfigError(f"to_torch: {layer.keras_name} has neither scale nor center; not ported yet")
    n = next(iter(layer.weights.values())).shape[0]
    e.module(layer, f"nn.LayerNorm({n}, eps={_f(c['epsilon'])}{e.dt})", {})
    e.code.state.update({f"{layer.name}.{k}": v for k, v in _affine(e, layer, n).items()})


def _module_call(e: Any, layer: Layer, node: Node) -> None:
    e.add(f"{node.outputs[0]} = self.{layer.name}({node.inputs[0]})")
    e.pass_mask(node)


# --- Conv1D, MaxPooling1D ----------------------------------------------------------------------------
def _conv_init(e: Any, layer: Layer) -> None:
    c, w = layer.config, layer.weights
    k, cin_g, out = w["kernel"].shape
    ctor = (
        f"nn.Conv1d({cin_g * c['groups']}, {out}, {k}, stride={c['strides']}, dilation={c['dilation_rate']}, "
        f"groups={c['groups']}{'' if c['use_bias'] else ', bias=False'}{e.dt})"
    )
    state = {"weight": w["kernel"].transpose(2, 1, 0)}
    if c["use_bias"]:
        state["bias"] = w["bias"]
    e.module(layer, ctor, state)


def _pool_init(e: Any, layer: Layer) -> None:
    c = layer.config
    e.module(layer, f"nn.MaxPool1d({c['pool_size']}, stride={c['strides']})", {})


def _channels_call(e: Any, layer: Layer, node: Node) -> None:
    x, y, c = node.inputs[0], node.outputs[0], layer.config
    inner = f"{x}.transpose(1, 2)"
    k = c.get("kernel_size", c.get("pool_size"))
    d = c.get("dilation_rate", 1)
    if c["padding"] == "causal":
        e.code.uses_functional = True
        inner = f"F.pad({inner}, [{d * (k - 1)}, 0])"
    elif c["padding"] == "same":
        e.code.helpers.add("pad_same")
        value = "0.0" if layer.kind == "Conv1D" else "float('-inf')"
        inner = f"pad_same({inner}, {k}, {c['strides']}, {d}, {value})"
    out = f"self.{layer.name}({inner}).transpose(1, 2)"
    e.add(f"{y} = {e.act(c['activation'], out, layer) if layer.kind == 'Conv1D' else out}")
    e.mask[y] = None


EMITTERS: dict[str, tuple[Callable[..., None], Callable[..., None]]] = {
    "Dense": (_dense_init, _dense_call),
    "TimeDistributed": (_dense_init, _dense_call),
    "Embedding": (_embedding_init, _embedding_call),
    "Dropout": (_dropout_init, _dropout_call),
    "SpatialDropout1D": (_dropout_init, _dropout_call),
    "Activation": (_nothing, _activation_call),
    "Flatten": (_nothing, _shape_call),
    "Reshape": (_nothing, _shape_call),
    "Permute": (_nothing, _shape_call),
    "RepeatVector": (_nothing, _shape_call),
    "GlobalMaxPooling1D": (_nothing, _shape_call),
    "GlobalAveragePooling1D": (_nothing, _mean_call),
    "Concatenate": (_nothing, _merge_call),
    "Add": (_nothing, _merge_call),
    "Multiply": (_nothing, _merge_call),
    "Average": (_nothing, _merge_call),
    "Masking": (_nothing, _masking_call),
    "BatchNormalization": (_batch_norm_init, _batch_norm_call),
    "LayerNormalization": (_layer_norm_init, _module_call),
    "Conv1D": (_conv_init, _channels_call),
    "MaxPooling1D": (_pool_init, _channels_call),
}


"""The non-recurrent kinds of the emitter table (:data:`rnn_xframework.models.torch_code.EMITTERS`)."""
