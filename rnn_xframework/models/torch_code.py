"""The one torch emitter: a :class:`~rnn_xframework.models.graph.Graph` -> :class:`Code`, the
``__init__`` and ``forward`` of a ``torch.nn.Module`` written out as Python lines, and its
``state_dict`` (NumPy arrays, PyTorch's layouts).

Both outputs read this: :mod:`~rnn_xframework.models.torch_module` compiles the lines into a live
module, :mod:`~rnn_xframework.models.torch_source` writes them to ``model.py``; so the live module
and the file cannot compute different things. A layer becomes PyTorch's own module where one is
exact (``nn.Linear``, ``nn.Embedding``, ``nn.LSTM``/``GRU``/``RNN`` with ``batch_first=True``
and ``bias_hh`` frozen at zero where Keras has one bias, ``nn.BatchNorm1d``, ``nn.LayerNorm``,
``nn.Conv1d``, ``nn.Dropout``), and the library's torch ``layers.RNN`` where a Keras setting has
no PyTorch form (Keras dropout, ``go_backwards``, a mask that may have gaps with
``masks="any"``); the per-kind table is :data:`EMITTERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnn_xframework.errors import UnsupportedConfigError
from rnn_xframework.models import graph, torch_rnn
from rnn_xframework.models.graph import Graph, Layer, Node

ACTIVATIONS = {
    "linear": "{}",
    "relu": "torch.relu({})",
    "sigmoid": "torch.sigmoid({})",
    "tanh": "torch.tanh({})",
    "softmax": "torch.softmax({}, dim=-1)",
    "log_softmax": "torch.log_softmax({}, dim=-1)",
    "elu": "F.elu({})",
    "selu": "F.selu({})",
    "gelu": "F.gelu({})",
    "silu": "F.silu({})",
    "swish": "F.silu({})",
    "exponential": "torch.exp({})",
    "relu6": "F.relu6({})",
    "leaky_relu": "F.leaky_relu({}, 0.20000000298023224)",  # TensorFlow's slope is float32(0.2)
    "hard_sigmoid": "F.relu6({} + 3.0) / 6.0",  # Keras's formula (F.hardsigmoid's float64 gradient differs by 3e-10)
    "softsign": "F.softsign({})",
    "mish": "F.mish({})",
}
"""Keras activation -> the same function in PyTorch (Keras 3's ``leaky_relu`` slope is 0.2, which
TensorFlow holds as a float32). In float64, ``gelu`` differs from TensorFlow's by up to 5e-9
(TensorFlow's ``erf``), every other one by rounding only."""
MASK_POLICIES = ("right-padded", "any")


@dataclass
class Code:
    """A module written out: ``init`` and ``forward`` body lines, the helpers of
    :mod:`torch_ops` they call, whether they need the library (``layers``), the ``state_dict``,
    and for each layer whether it became PyTorch's own module (``native``)."""

    name: str
    inputs: list[str]
    init: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    helpers: set[str] = field(default_factory=set)
    uses_library: bool = False
    uses_functional: bool = False
    state: dict[str, np.ndarray] = field(default_factory=dict)
    native: dict[str, bool] = field(default_factory=dict)
    stateful: list[str] = field(default_factory=list)
    masks: str = "right-padded"

    def functions(self) -> dict[str, str]:
        """``{"init": ..., "forward": ..., ["reset_states": ...]}``: each a ``def`` at column 0; the
        init function holds ``__init__``'s lines after ``super().__init__()``. Long lines are
        broken as ruff format would, to fit once indented in the class."""

        def fn(head: str, lines: list[str]) -> str:
            out = [head]
            for line in lines or ["pass"]:
                lead = "    " + line[: len(line) - len(line.lstrip())]
                out += wrap(line.lstrip(), lead, LINE - 4)
            return "\n".join(out) + "\n"

        args = ", ".join(f"{i}: torch.Tensor" for i in self.inputs)
        ret = "torch.Tensor" if len(self.outputs) == 1 else "list[torch.Tensor]"
        out = {
            "init": fn("def init(self) -> None:", self.init),
            "forward": fn(f"def forward(self, {args}) -> {ret}:", [*self.forward, f"return {self._returned()}"]),
        }
        if self.stateful:
            out["reset_states"] = fn(
                "def reset_states(self) -> None:", [f"self.{n}_state = None" for n in self.stateful]
            )
        return out

    def methods(self) -> str:
        """The class body: ``__init__`` (``super().__init__()`` then the init lines), ``forward``,
        ``reset_states`` for stateful layers; indented one level."""
        fns = self.functions()
        init = (
            fns.pop("init")
            .replace("def init(self)", "def __init__(self)")
            .replace(":\n    ", ":\n    super().__init__()\n    ", 1)
        )
        return "\n".join(_indent(f) for f in (init, *fns.values()))

    def _returned(self) -> str:
        return self.outputs[0] if len(self.outputs) == 1 else "[" + ", ".join(self.outputs) + "]"


LINE = 120


def _split_args(inner: str) -> list[str]:
    """``inner`` split at its top-level commas (brackets and quotes respected)."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(inner):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:i].strip())
            start = i + 1
    parts.append(inner[start:].strip())
    return [p for p in parts if p]


def wrap(line: str, indent: str, limit: int = LINE) -> list[str]:
    """``indent + line`` within ``limit`` characters, as ruff format would break a long call:
    the outermost bracket that closes at the end of the line opened, one argument per line (a
    bracket with one argument, a comprehension, stays on its line)."""
    comma = line.endswith(",")
    core = line[:-1] if comma else line
    if len(indent) + len(line) <= limit or not core or core[-1] not in ")]":
        return [indent + line]
    depth, opened = 0, None
    for i, ch in enumerate(core):  # the bracket matching the last one
        if ch in "([{":
            if depth == 0:
                opened = i
            depth += 1
        elif ch in ")]}":
            depth -= 1
    args = _split_args(core[opened + 1 : -1]) if opened is not None and depth == 0 else []
    if len(args) < 2:
        return [indent + line]
    out = [indent + core[: opened + 1]]
    for arg in args:
        out += wrap(arg + ",", indent + "    ", limit)
    return [*out, indent + core[-1] + ("," if comma else "")]


def _indent(text: str) -> str:
    return "".join(f"    {line}" if line.strip() else line for line in text.splitlines(keepends=True))


def _f(x: Any) -> str:
    """A Python literal as it reads best (``1e-05`` stays exact: repr round-trips floats)."""
    return repr(float(x)) if isinstance(x, float) else repr(x)


class _Emitter:
    def __init__(self, g: Graph, masks: str) -> None:
        if masks not in MASK_POLICIES:
            raise ValueError(f"to_torch: masks must be one of {MASK_POLICIES}, got {masks!r}")
        self.g, self.masks = g, masks
        self.dt = ", dtype=torch.float64" if g.dtype() == "float64" else ""
        self.code = Code(g.name, [i.name for i in g.inputs], outputs=list(g.outputs), masks=masks)
        self.mask: dict[str, str | None] = {i.name: None for i in g.inputs}
        self.dtypes = {i.name: i.dtype for i in g.inputs}

    def run(self) -> Code:
        for layer in self.g.layers.values():
            EMITTERS[layer.kind][0](self, layer)
        for node in self.g.nodes:
            layer = self.g.layers[node.layer]
            EMITTERS[layer.kind][1](self, layer, node)
            got = [self.mask.get(t) is not None for t in node.outputs]
            if got != node.output_masks:
                raise UnsupportedConfigError(
                    f"to_torch: {layer.keras_name} ({layer.kind}) gives masks {got}, the description says "
                    f"{node.output_masks}"
                )
        return self.code

    # --- shared pieces ---------------------------------------------------------------------------
    def add(self, line: str) -> None:
        self.code.forward.append(line)

    def module(self, layer: Layer, ctor: str, state: dict[str, np.ndarray], native: bool = True) -> None:
        self.code.init.append(f"self.{layer.name} = {ctor}")
        self.code.state.update({f"{layer.name}.{k}": np.ascontiguousarray(v) for k, v in state.items()})
        self.code.native[layer.name] = native
        if not layer.trainable:
            self.code.init.append(f"self.{layer.name}.requires_grad_(False)")

    def freeze(self, layer: Layer, param: str) -> None:
        self.code.init.append(f"self.{layer.name}.{param}.requires_grad_(False)")

    def act(self, name: str, expr: str, layer: Layer) -> str:
        if name not in ACTIVATIONS:
            raise UnsupportedConfigError(
                f"to_torch: {layer.keras_name} has activation {name!r}; ported activations: {sorted(ACTIVATIONS)}"
            )
        if ACTIVATIONS[name].startswith("F."):
            self.code.uses_functional = True
        return ACTIVATIONS[name].format(expr)

    def first_mask(self, node: Node) -> str | None:
        return self.mask.get(node.inputs[0]) if node.inputs else None

    def pass_mask(self, node: Node) -> None:
        self.mask[node.outputs[0]] = self.first_mask(node)


def _nothing(e: _Emitter, layer: Layer) -> None:
    e.code.native[layer.name] = True


# --- Dense, Embedding, Dropout, Activation ---------------------------------------------------------
def _dense_init(e: _Emitter, layer: Layer) -> None:
    w = layer.inner["layer"].weights if layer.kind == "TimeDistributed" else layer.weights
    config = layer.inner["layer"].config if layer.kind == "TimeDistributed" else layer.config
    state = {"weight": w["kernel"].T}
    if config["use_bias"]:
        state["bias"] = w["bias"]
    bias = "" if config["use_bias"] else ", bias=False"
    e.module(layer, f"nn.Linear({w['kernel'].shape[0]}, {config['units']}{bias}{e.dt})", state)


def _dense_call(e: _Emitter, layer: Layer, node: Node) -> None:
    config = layer.inner["layer"].config if layer.kind == "TimeDistributed" else layer.config
    e.add(f"{node.outputs[0]} = {e.act(config['activation'], f'self.{layer.name}({node.inputs[0]})', layer)}")
    e.pass_mask(node)


def _embedding_init(e: _Emitter, layer: Layer) -> None:
    c, w = layer.config, layer.weights["embeddings"]
    e.module(layer, f"nn.Embedding({c['input_dim']}, {c['output_dim']}{e.dt})", {"weight": w})


def _embedding_call(e: _Emitter, layer: Layer, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    ids = x if "int" in e.dtypes.get(x, "int") else f"{x}.long()"
    e.add(f"{y} = self.{layer.name}({ids})")
    e.dtypes[y] = "float"
    e.mask[y] = None
    if layer.config["mask_zero"]:
        e.add(f"{y}_mask = {x} != 0")
        e.mask[y] = f"{y}_mask"


def _dropout_init(e: _Emitter, layer: Layer) -> None:
    cls = "nn.Dropout1d" if layer.kind == "SpatialDropout1D" else "nn.Dropout"
    e.module(layer, f"{cls}({_f(layer.config['rate'])})", {})


def _dropout_call(e: _Emitter, layer: Layer, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if layer.kind == "SpatialDropout1D":  # whole channels: nn.Dropout1d takes [batch, channels, time]
        e.add(f"{y} = self.{layer.name}({x}.transpose(1, 2)).transpose(1, 2)")
    else:
        e.add(f"{y} = self.{layer.name}({x})")
    e.pass_mask(node)


def _activation_call(e: _Emitter, layer: Layer, node: Node) -> None:
    e.add(f"{node.outputs[0]} = {e.act(layer.config['activation'], node.inputs[0], layer)}")
    e.pass_mask(node)


# --- shape layers ------------------------------------------------------------------------------------
def _shape_call(e: _Emitter, layer: Layer, node: Node) -> None:
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


def _merge_call(e: _Emitter, layer: Layer, node: Node) -> None:
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


def _masking_call(e: _Emitter, layer: Layer, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    e.add(f"{y}_mask = ({x} != {_f(layer.config['mask_value'])}).any(dim=-1)")
    e.add(f"{y} = {x}.masked_fill(~{y}_mask.unsqueeze(-1), 0.0)")
    e.mask[y] = f"{y}_mask"


def _mean_call(e: _Emitter, layer: Layer, node: Node) -> None:
    x, y, keep = node.inputs[0], node.outputs[0], layer.config["keepdims"]
    m = e.first_mask(node) if node.mask else None
    if m is None:
        e.add(f"{y} = {x}.mean(dim=1, keepdim={keep})")
    else:
        e.code.helpers.add("masked_mean")
        e.add(f"{y} = masked_mean({x}, {m}, {keep})")
    e.mask[y] = None


# --- normalization ---------------------------------------------------------------------------------------
def _affine(e: _Emitter, layer: Layer, n: int) -> dict[str, np.ndarray]:
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


def _batch_norm_init(e: _Emitter, layer: Layer) -> None:
    c, w = layer.config, layer.weights
    n = w["moving_mean"].shape[0]
    ctor = f"nn.BatchNorm1d({n}, eps={_f(c['epsilon'])}, momentum={_f(1 - c['momentum'])}{e.dt})"
    state = {"running_mean": w["moving_mean"], "running_var": w["moving_variance"]}
    e.module(layer, ctor, {})
    e.code.state.update({f"{layer.name}.{k}": v for k, v in {**_affine(e, layer, n), **state}.items()})
    e.code.state[f"{layer.name}.num_batches_tracked"] = np.array(0, np.int64)


def _batch_norm_call(e: _Emitter, layer: Layer, node: Node) -> None:
    x, y, c, n = node.inputs[0], node.outputs[0], layer.config, layer.name
    m = (e.first_mask(node) if node.mask else None) or "None"
    training = "self.training" if layer.trainable else "False"
    e.code.helpers.add("batch_norm")
    e.add(
        f"{y} = batch_norm({x}, {m}, self.{n}.weight, self.{n}.bias, self.{n}.running_mean, "
        f"self.{n}.running_var, {_f(c['momentum'])}, {_f(c['epsilon'])}, {training})"
    )
    e.pass_mask(node)


def _layer_norm_init(e: _Emitter, layer: Layer) -> None:
    c = layer.config
    if not layer.weights:
        raise UnsupportedConfigError(f"to_torch: {layer.keras_name} has neither scale nor center; not ported yet")
    n = next(iter(layer.weights.values())).shape[0]
    e.module(layer, f"nn.LayerNorm({n}, eps={_f(c['epsilon'])}{e.dt})", {})
    e.code.state.update({f"{layer.name}.{k}": v for k, v in _affine(e, layer, n).items()})


def _module_call(e: _Emitter, layer: Layer, node: Node) -> None:
    e.add(f"{node.outputs[0]} = self.{layer.name}({node.inputs[0]})")
    e.pass_mask(node)


# --- Conv1D, MaxPooling1D ----------------------------------------------------------------------------
def _conv_init(e: _Emitter, layer: Layer) -> None:
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


def _pool_init(e: _Emitter, layer: Layer) -> None:
    c = layer.config
    e.module(layer, f"nn.MaxPool1d({c['pool_size']}, stride={c['strides']})", {})


def _channels_call(e: _Emitter, layer: Layer, node: Node) -> None:
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
    **torch_rnn.EMITTERS,
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


def emit(g: Graph, masks: str = "right-padded") -> Code:
    """The module for ``g``: see the module docstring. ``masks``: ``"right-padded"`` runs masked
    recurrent layers through ``nn.LSTM``/``GRU``/``RNN`` with packed sequences (a mask with a gap
    raises at call time); ``"any"`` runs them with the library's layers, step by step."""
    return _Emitter(g, masks).run()


__all__ = ["ACTIVATIONS", "EMITTERS", "Code", "emit", "graph"]
