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

import numpy as np

from rnn_xframework.errors import UnsupportedConfigError
from rnn_xframework.models import graph, torch_layers, torch_rnn
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


EMITTERS: dict[str, tuple[Callable[..., None], Callable[..., None]]] = {**torch_rnn.EMITTERS, **torch_layers.EMITTERS}
"""Layer kind -> ``(init, call)``: what each kind adds to ``__init__`` and to ``forward``."""


def emit(g: Graph, masks: str = "right-padded") -> Code:
    """The module for ``g``: see the module docstring. ``masks``: ``"right-padded"`` runs masked
    recurrent layers through ``nn.LSTM``/``GRU``/``RNN`` with packed sequences (a mask with a gap
    raises at call time); ``"any"`` runs them with the library's layers, step by step."""
    return _Emitter(g, masks).run()


__all__ = ["ACTIVATIONS", "EMITTERS", "Code", "emit", "graph"]
