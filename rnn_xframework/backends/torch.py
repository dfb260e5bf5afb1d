"""PyTorch backend: cells are ``torch.nn.Module``\\ s wrapping ``torch.nn.RNNCell`` / ``LSTMCell`` /
``GRUCell``.

Every object here is a real module, so ``.to(device)``, ``.parameters()``, ``state_dict()``
and optimizers work as usual. Until the input size is known, a cell's native ``nn.*Cell`` is a
PyTorch lazy module (:class:`torch.nn.modules.lazy.LazyModuleMixin`, as ``nn.LazyLinear``): its
parameters are :class:`torch.nn.UninitializedParameter`\\ s that an optimizer made before the
first call already holds, that ``.to()`` moves, and that ``load_state_dict`` or
``build(input_shape)`` or the first call fill in place (``input_size=`` at construction builds at
once). They are initialized like Keras's (glorot-uniform kernel, orthogonal recurrent kernel,
zero bias; LSTM's forget-gate bias at one, ``unit_forget_bias``).

``nn.RNNCell`` and ``nn.LSTMCell`` have two biases; Keras has one. By default ``bias_hh`` stays at
zero and is frozen (``requires_grad=False``), so the cell trains exactly like the Keras cell with
the same weights; ``train_recurrent_bias=True`` trains it as PyTorch does (canonical ``bias`` is
then the sum). ``nn.GRUCell``'s two biases are Keras's two bias rows (``reset_after=True``): both
are set and both train.

Dropout follows Keras (see :mod:`rnn_xframework.dropout`), not ``torch.nn.Dropout``: one mask per
sequence, and only with ``training=True``. ``training=None`` means inference, as in Keras, whatever
``module.train()`` / ``module.eval()`` say.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import is_lazy

from rnn_xframework import backends, layouts, loops, protocol, transfer
from rnn_xframework.dropout import DropoutMixin, check_rate
from rnn_xframework.errors import InputShapeError, UnsupportedConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _require(what: str, value: Any, allowed: tuple[Any, ...], module: str) -> None:
    if value not in allowed:
        raise UnsupportedConfigError(
            f"torch.nn.{module} supports {what} {' or '.join(repr(a) for a in allowed)}, got {value!r}; "
            "use backend='tensorflow' or 'numpy' for other configurations"
        )


_LAZY: dict[type[nn.Module], type[nn.Module]] = {}


def lazy_native(native: type[nn.Module]) -> type[nn.Module]:
    """``native`` (``nn.RNNCell`` / ``LSTMCell`` / ``GRUCell``) as a PyTorch lazy module: made with
    ``input_size=0`` and every parameter an :class:`~torch.nn.UninitializedParameter`; it
    becomes ``native`` itself once :func:`materialize` has filled it (``cls_to_become``).
    ``load_state_dict`` fills it through :class:`LazyModuleMixin`'s own hook."""
    if native not in _LAZY:

        def __init__(self: Any, hidden_size: int, bias: bool, device: Any, dtype: Any, **kwargs: Any) -> None:
            LazyModuleMixin.__init__(self, 0, hidden_size, bias=bias, device="meta", dtype=dtype, **kwargs)
            for name, p in list(self._parameters.items()):
                if p is not None:
                    self._parameters[name] = nn.UninitializedParameter(device=device, dtype=dtype)

        def reset_parameters(self: Any) -> None:
            if not self.has_uninitialized_params():
                native.reset_parameters(self)

        def initialize_parameters(self: Any, inputs: Any, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("rnn_xframework builds its lazy cells itself; call the library cell")

        _LAZY[native] = type(
            f"Lazy{native.__name__}",
            (LazyModuleMixin, native),
            {
                "cls_to_become": native,
                "__init__": __init__,
                "reset_parameters": reset_parameters,
                "initialize_parameters": initialize_parameters,
                "__module__": __name__,
            },
        )
    return _LAZY[native]


def materialize(cell: nn.Module, input_size: int) -> None:
    """Fill a lazy native cell's parameters (in place, on their device and dtype) for
    ``input_size`` features, and make it the plain ``nn.*Cell`` (hooks removed)."""
    gates = {nn.RNNCell: 1, nn.LSTMCell: 4, nn.GRUCell: 3}[cell.cls_to_become]
    g = gates * cell.hidden_size
    shapes = {"weight_ih": (g, input_size), "weight_hh": (g, cell.hidden_size), "bias_ih": (g,), "bias_hh": (g,)}
    with torch.no_grad():
        for name, p in cell._parameters.items():
            if p is not None and is_lazy(p):
                p.materialize(shapes[name])
    finish_lazy(cell)


def finish_lazy(cell: nn.Module) -> None:
    """A lazy native cell whose parameters are all filled becomes the plain ``nn.*Cell``."""
    if not isinstance(cell, LazyModuleMixin) or cell.has_uninitialized_params():
        return
    cell.input_size = cell.weight_ih.shape[1]
    cell._initialize_hook.remove()
    cell._load_hook.remove()
    del cell._initialize_hook, cell._load_hook
    cell.__class__ = cell.cls_to_become


class _TorchCell(protocol.PortableConfig, DropoutMixin, nn.Module):
    """What the three torch cells share: the native cell (lazy until built), Keras
    initialization, canonical weights, Keras dropout masks. Subclasses set ``cell_kind``,
    ``gates``, ``n_states``, ``native`` (the ``torch.nn`` class) and write :meth:`step`.

    ``input_size`` (PyTorch's name) or ``input_shape`` (Keras's, last entry the features) builds
    the cell at construction; without them it is built by :meth:`build`, the first call, or
    ``load_state_dict``.

    Attributes:
        cell: the native cell; ``cell.weight_ih`` ``(G*units, input_dim)``, ``cell.weight_hh``
            ``(G*units, units)``, ``cell.bias_ih`` / ``cell.bias_hh`` ``(G*units,)``, gate blocks
            in PyTorch's order. Until built, a ``Lazy*Cell`` (see :func:`lazy_native`) whose
            parameters are uninitialized.
    """

    backend = "torch"
    cell_kind: str
    gates = 1
    n_states = 1
    native: type[nn.Module]

    def __init__(
        self,
        units: int,
        activation: str | None = "tanh",
        use_bias: bool = True,
        *,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        dtype: Any = None,
        device: Any = None,
        seed: int | None = None,
        train_recurrent_bias: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        if not isinstance(units, int) or units <= 0:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        self.units = units
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.dropout = check_rate("dropout", dropout)
        self.recurrent_dropout = check_rate("recurrent_dropout", recurrent_dropout)
        self.seed = seed
        self.train_recurrent_bias = bool(train_recurrent_bias)
        self.state_sizes = [units] * self.n_states
        self._dtype = DTYPES[protocol.dtype_name(dtype)]
        self._device = None if device is None else torch.device(device)
        self._generator: torch.Generator | None = None
        self.cell = lazy_native(self.native)(
            units, bias=self.use_bias, device=self._device, dtype=self._dtype, **self.native_kwargs()
        )
        if self.use_bias and layouts.of(self).bias_rows == 1:  # one Keras bias: bias_hh stays at zero
            self.cell.bias_hh.requires_grad = self.train_recurrent_bias
        self.register_load_state_dict_post_hook(lambda module, _: finish_lazy(module.cell))

    # --- Keras-style attributes --------------------------------------------------------------
    @property
    def state_size(self) -> Any:
        return self.units if self.n_states == 1 else list(self.state_sizes)

    @property
    def input_dim(self) -> int | None:
        w = self.cell.weight_ih
        return None if is_lazy(w) else w.shape[1]

    @property
    def dtype_name(self) -> str:
        return protocol.dtype_name(self.cell.weight_ih.dtype)

    @property
    def device(self) -> torch.device:
        return self.cell.weight_ih.device

    @property
    def trainable_variables(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # Keras's weight names, read-only, in the canonical layout and differentiable (views where
    # the layouts agree); write them with set_weights().
    def _canonical(self, w: torch.Tensor) -> torch.Tensor:
        """A ``(G*units, ...)`` PyTorch parameter as canonical ``(..., G*units)``, gates reordered."""
        order = layouts.of(self).torch_order
        if order is not None:
            blocks = w.chunk(self.gates)
            w = torch.cat([blocks[order.index(g)] for g in range(self.gates)])
        return w.T if w.dim() == 2 else w

    @property
    def kernel(self) -> torch.Tensor:
        """``(input_dim, G*units)``: ``cell.weight_ih`` in Keras's layout."""
        return self._canonical(self.cell.weight_ih)

    @property
    def recurrent_kernel(self) -> torch.Tensor:
        """``(units, G*units)``: ``cell.weight_hh`` in Keras's layout."""
        return self._canonical(self.cell.weight_hh)

    @property
    def bias(self) -> torch.Tensor | None:
        """``(G*units,)`` = ``bias_ih + bias_hh``, or GRU's ``(2, 3*units)`` rows; ``None`` without bias."""
        if not self.use_bias:
            return None
        c = self.cell
        if layouts.of(self).bias_rows == 2:
            return torch.stack([self._canonical(c.bias_ih), self._canonical(c.bias_hh)])
        return self._canonical(c.bias_ih + c.bias_hh)

    def native_kwargs(self) -> dict[str, Any]:
        """Arguments of the native ``nn.*Cell`` beyond sizes, bias, device and dtype."""
        return {}

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Fill the parameters for ``input_shape[-1]`` features (in place: an optimizer made
        before keeps them) and initialize them like Keras's."""
        dim = input_shape[-1]
        if self.input_dim is not None:
            if dim != self.input_dim:
                raise InputShapeError(f"{protocol.cell_name(self)} is built for {self.input_dim} features, got {dim}")
            return
        if not isinstance(dim, int) or dim <= 0:
            raise InputShapeError(f"{protocol.cell_name(self)}: expected a positive number of features, got {dim!r}")
        cell = self.cell
        materialize(cell, dim)
        with torch.no_grad():
            nn.init.xavier_uniform_(cell.weight_ih)
            nn.init.orthogonal_(cell.weight_hh)
            if self.use_bias:
                g = self.gates * self.units
                zeros = [np.zeros((1, g)), np.zeros((1, g))]
                bias = layouts.of(self).to_torch([*zeros, layouts.initial_bias(self)])
                cell.bias_ih.copy_(torch.from_numpy(bias["bias_ih"]))
                cell.bias_hh.copy_(torch.from_numpy(bias["bias_hh"]))

    def get_initial_state(self, batch_size: int) -> list[torch.Tensor]:
        """``n_states`` tensors ``zeros(batch_size, units)`` on the cell's device and dtype."""
        return [
            torch.zeros(batch_size, self.units, dtype=DTYPES[self.dtype_name], device=self.device)
            for _ in range(self.n_states)
        ]

    def get_weights(self) -> list[np.ndarray]:
        """Canonical (Keras) layout: ``[kernel (in, G*units), recurrent_kernel, bias]``."""
        if self.input_dim is None:
            return []
        params = {n: p.detach().cpu().numpy() for n, p in self.cell.named_parameters()}
        return layouts.of(self).from_torch(params)

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Set from the canonical layout (see :mod:`rnn_xframework.layouts`); checked first."""
        dim = self.input_dim if self.input_dim is not None else layouts.input_dim_of(self.cell_kind, weights)
        arrays = layouts.check(layouts.name_of(self), weights, dim, self.units, self.use_bias)
        self.build((None, dim))
        values = layouts.of(self).to_torch(arrays)
        params = dict(self.cell.named_parameters())
        with torch.no_grad():
            for name, value in values.items():
                params[name].copy_(torch.from_numpy(np.asarray(value)))

    # --- dropout -----------------------------------------------------------------------------
    def _new_mask(self, like: torch.Tensor, rate: float) -> torch.Tensor:
        if self.seed is not None and (self._generator is None or self._generator.device != like.device):
            self._generator = torch.Generator(device=like.device).manual_seed(self.seed)
        keep = torch.empty_like(like).bernoulli_(1.0 - rate, generator=self._generator)
        return keep / (1.0 - rate)

    def _as_mask(self, m: Any) -> torch.Tensor:
        if not isinstance(m, torch.Tensor):
            m = torch.from_numpy(np.asarray(m))
        return m.to(device=self.device, dtype=DTYPES[self.dtype_name])

    def linear_gates(self, xs: list[torch.Tensor], weight: torch.Tensor, bias: Any) -> list[torch.Tensor]:
        """``[xs[g] @ W_g^T + b_g]`` per canonical gate ``g`` (PyTorch's blocks reordered)."""
        order = layouts.of(self).torch_order or tuple(range(self.gates))
        ws = weight.chunk(self.gates)
        bs = bias.chunk(self.gates) if bias is not None else [None] * self.gates
        return [F.linear(xs[g], ws[order.index(g)], bs[order.index(g)]) for g in range(self.gates)]

    def gate_sums(self, x: torch.Tensor, h: torch.Tensor, training: bool | None) -> tuple[list, list]:
        """Per canonical gate: ``(x*m_g) W_ih_g^T + b_ih_g`` and ``(h*m'_g) W_hh_g^T + b_hh_g``."""
        xs = self.masked(x, self.get_dropout_mask(x), training)
        hs = self.masked(h, self.get_recurrent_dropout_mask(h), training)
        c = self.cell
        return self.linear_gates(xs, c.weight_ih, c.bias_ih), self.linear_gates(hs, c.weight_hh, c.bias_hh)

    def per_gate_masks(self, training: bool | None) -> bool:
        """Whether this step needs the per-gate path (Keras's ``implementation=1``)."""
        return bool(training) and self.gates > 1 and self.recurrent_dropout > 0

    def step(self, x: torch.Tensor, states: list[torch.Tensor], training: bool | None) -> tuple[Any, list[Any]]:
        raise NotImplementedError

    def fused(self, c: Any, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[Any, list[Any]]:
        """The ATen kernel that ``c.forward`` (``c`` the native ``torch.nn.*Cell``) calls, on
        already-checked arguments."""
        raise NotImplementedError

    def _fits(self, c: Any, inputs: Any, states: Any) -> bool:
        """The common case, checked in a few comparisons: a list of native tensors of the cell's
        dtype and sizes. Anything else takes the full check, which raises the typed error."""
        if type(states) is not list or len(states) != self.n_states or type(inputs) is not torch.Tensor:
            return False
        weight = c.weight_ih
        dtype = weight.dtype
        if inputs.dtype != dtype or inputs.dim() != 2 or inputs.shape[1] != weight.shape[1]:
            return False
        shape = (inputs.shape[0], self.units)
        for s in states:
            if type(s) is not torch.Tensor or s.dtype != dtype or s.shape != shape:
                return False
        return True

    def forward(
        self, inputs: torch.Tensor, states: Any, training: bool | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``inputs`` ``[batch, input_dim]``, ``states`` a list of ``[batch, units]``."""
        c = self._modules["cell"]
        if isinstance(c, LazyModuleMixin):
            if isinstance(inputs, torch.Tensor) and inputs.dim() == 2:
                self.build(tuple(inputs.shape))
        elif not (training and (self.dropout or self.recurrent_dropout)) and self._fits(c, inputs, states):
            return self.fused(c, inputs, states)  # the eager fast path: nearly free over nn.*Cell
        states = protocol.check_step(self, OPS, inputs, states)
        return self.step(inputs, states, training)


class SimpleRNNCell(_TorchCell):
    """``h = activation(x W_ih^T + b_ih + h_prev W_hh^T + b_hh)``: ``torch.nn.RNNCell`` inside."""

    cell_kind = "SimpleRNNCell"
    native = nn.RNNCell

    def __init__(self, units: int, activation: str | None = "tanh", use_bias: bool = True, **kwargs: Any) -> None:
        if activation not in ("tanh", "relu"):
            raise UnsupportedConfigError(
                f"torch.nn.RNNCell supports activation 'tanh' or 'relu', got {activation!r}; "
                "use backend='tensorflow' or 'numpy' for other activations"
            )
        super().__init__(units, activation, use_bias, **kwargs)

    def native_kwargs(self) -> dict[str, Any]:
        return {"nonlinearity": self.activation}

    def fused(self, c: Any, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[Any, list[Any]]:
        kernel = torch.rnn_tanh_cell if self.activation == "tanh" else torch.rnn_relu_cell
        h = kernel(x, states[0], c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)
        return h, [h]

    def step(self, x: torch.Tensor, states: list[torch.Tensor], training: bool | None) -> tuple[Any, list[Any]]:
        (h,) = states
        (x,) = self.masked(x, self.get_dropout_mask(x), training)
        (hm,) = self.masked(h, self.get_recurrent_dropout_mask(h), training)
        h = self.cell(x, hm)
        return h, [h]


class LSTMCell(_TorchCell):
    """Keras's LSTM step with ``torch.nn.LSTMCell`` inside; gates ``i, f, g(c), o`` on both sides.

    States ``[h, c]``. Only ``activation="tanh"``, ``recurrent_activation="sigmoid"`` exist in
    PyTorch. With recurrent dropout the step runs gate by gate on the same parameters (each
    gate has its own masks, as in Keras).
    """

    cell_kind = "LSTMCell"
    config_keys = (*protocol.GATED_KEYS, "unit_forget_bias")
    gates = 4
    n_states = 2
    native = nn.LSTMCell

    def __init__(
        self,
        units: int,
        activation: str | None = "tanh",
        recurrent_activation: str | None = "sigmoid",
        use_bias: bool = True,
        *,
        unit_forget_bias: bool = True,
        **kwargs: Any,
    ) -> None:
        _require("activation", activation, ("tanh",), "LSTMCell")
        _require("recurrent_activation", recurrent_activation, ("sigmoid",), "LSTMCell")
        super().__init__(units, activation, use_bias, **kwargs)
        self.recurrent_activation = recurrent_activation
        self.unit_forget_bias = bool(unit_forget_bias)

    def fused(self, c: Any, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[Any, list[Any]]:
        h, cs = torch.lstm_cell(x, states, c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)
        return h, [h, cs]

    def step(self, x: torch.Tensor, states: list[torch.Tensor], training: bool | None) -> tuple[Any, list[Any]]:
        h, c = states
        if not self.per_gate_masks(training):
            (x,) = self.masked(x, self.get_dropout_mask(x), training)[:1]
            h, c = self.cell(x, (h, c))
            return h, [h, c]
        zx, zh = self.gate_sums(x, h, training)
        i, f, g, o = (a + b for a, b in zip(zx, zh, strict=True))
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, [h, c]


class GRUCell(_TorchCell):
    """Keras's GRU step (``reset_after=True``) with ``torch.nn.GRUCell`` inside.

    Keras gates ``z, r, h`` are PyTorch's ``z, r, n`` stored as ``r, z, n``; Keras's bias rows
    (input, recurrent) are ``bias_ih`` and ``bias_hh``, both trained. ``reset_after=False`` has
    no PyTorch form and raises :class:`UnsupportedConfigError`.
    """

    cell_kind = "GRUCell"
    config_keys = (*protocol.GATED_KEYS, "reset_after")
    gates = 3
    native = nn.GRUCell

    def __init__(
        self,
        units: int,
        activation: str | None = "tanh",
        recurrent_activation: str | None = "sigmoid",
        use_bias: bool = True,
        *,
        reset_after: bool = True,
        **kwargs: Any,
    ) -> None:
        _require("activation", activation, ("tanh",), "GRUCell")
        _require("recurrent_activation", recurrent_activation, ("sigmoid",), "GRUCell")
        if not reset_after:
            raise UnsupportedConfigError(layouts.get("GRUCell(reset_after=False)").torch_problem)
        super().__init__(units, activation, use_bias, **kwargs)
        self.recurrent_activation = recurrent_activation
        self.reset_after = True

    def fused(self, c: Any, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[Any, list[Any]]:
        h = torch.gru_cell(x, states[0], c.weight_ih, c.weight_hh, c.bias_ih, c.bias_hh)
        return h, [h]

    def step(self, x: torch.Tensor, states: list[torch.Tensor], training: bool | None) -> tuple[Any, list[Any]]:
        (h,) = states
        if not self.per_gate_masks(training):
            (x,) = self.masked(x, self.get_dropout_mask(x), training)[:1]
            h = self.cell(x, h)
            return h, [h]
        zx, zh = self.gate_sums(x, h, training)
        z = torch.sigmoid(zx[0] + zh[0])
        r = torch.sigmoid(zx[1] + zh[1])
        hh = torch.tanh(zx[2] + r * zh[2])
        h = z * h + (1 - z) * hh
        return h, [h]


class StackedRNNCells(loops.StackMixin, nn.Module):
    backend = "torch"

    def __init__(self, cells: Sequence[nn.Module]) -> None:
        nn.Module.__init__(self)
        self.cells = nn.ModuleList(cells)
        self._ops = OPS

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.build_cells(input_shape)

    def forward(self, inputs: torch.Tensor, states: Any, training: bool | None = None) -> tuple[Any, list[Any]]:
        return self.step(inputs, states, training)


class RNN(loops.RNNMixin, nn.Module):
    backend = "torch"

    def __init__(
        self,
        cell: StackedRNNCells,
        *,
        return_sequences: bool,
        return_state: bool,
        go_backwards: bool,
        order: str,
        time_major: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        self.cell = cell
        self.time_major = time_major
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.order = order
        self._ops = OPS

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.cell.build_cells(input_shape)

    def forward(
        self, inputs: torch.Tensor, initial_state: Any = None, training: bool | None = None, mask: Any = None
    ) -> Any:
        return self.run(inputs, initial_state, training, mask)

    def __prepare_scriptable__(self) -> nn.Module:
        """What ``torch.jit.script`` compiles in this RNN's place, alone or inside a user's
        model: the same call, outputs and parameters in TorchScript
        (:class:`~rnn_xframework.backends.torchscript.ScriptedRNN`)."""
        from rnn_xframework.backends import torchscript

        return torchscript.scriptable(self)


class TorchBackend(backends.Backend, name="torch"):
    cells = {"SimpleRNNCell": SimpleRNNCell, "LSTMCell": LSTMCell, "GRUCell": GRUCell}
    stack_class = StackedRNNCells
    rnn_class = RNN

    def is_native(self, x: Any) -> bool:
        return isinstance(x, torch.Tensor)

    def dtype_name(self, x: Any) -> str:
        return str(x.dtype).rsplit(".", 1)[-1]

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    def from_numpy(self, a: Any, device: Any = None) -> torch.Tensor:
        return torch.from_numpy(np.array(a)).to(device or "cpu")

    def unstack(self, x: Any) -> list[Any]:
        return list(x.unbind(1))

    def stack(self, xs: list[Any]) -> Any:
        return torch.stack(xs, 1)

    def swap_batch_time(self, x: Any) -> Any:
        return x.transpose(0, 1)

    # --- gradients and training (rnn_xframework.parity) --------------------------------------
    def devices(self) -> list[str]:
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]

    @contextmanager
    def strict_numerics(self) -> Iterator[list[str]]:
        """TF32 off for CUDA matmuls and cuDNN (true float32), restored on exit."""
        flags = [
            ("torch.backends.cuda.matmul.allow_tf32", torch.backends.cuda.matmul),
            ("torch.backends.cudnn.allow_tf32", torch.backends.cudnn),
        ]
        old = [owner.allow_tf32 for _, owner in flags]
        for _, owner in flags:
            owner.allow_tf32 = False
        try:
            yield [f"{name}: {was} -> False (restored after)" for (name, _), was in zip(flags, old, strict=True)]
        finally:
            for (_, owner), was in zip(flags, old, strict=True):
                owner.allow_tf32 = was

    def _loss(self, model: Any, x: Any, states: Any, loss_weights: Any, device: Any) -> tuple[Any, Any, Any]:
        xt = self.from_numpy(x, device).requires_grad_()
        st = [[self.from_numpy(s, device).requires_grad_() for s in layer] for layer in states]
        y, final = model(xt, st)
        w_y, w_states = loss_weights
        loss = (y * self.from_numpy(w_y, device)).sum()
        for layer, weights in zip(final, w_states, strict=True):
            for s, w in zip(layer, weights, strict=True):
                loss = loss + (s * self.from_numpy(w, device)).sum()
        return loss, xt, st

    def loss_and_grads(self, model: Any, x: Any, states: Any, loss_weights: Any, device: Any = None) -> Any:
        """``torch.autograd``; weight gradients mapped to the canonical layout by the cell's layout.

        Each trainable torch parameter is one canonical weight rearranged (``weight_ih`` is
        ``kernel.T``, ``bias_ih`` is ``bias``), so the canonical gradient is the same rearrangement
        of the parameter gradients; the frozen ``bias_hh`` counts as zero. Cells built with
        ``train_recurrent_bias=True`` have two trainable biases for one canonical bias and are refused.
        """
        cells = transfer.cells_of(model)
        if any(getattr(c, "train_recurrent_bias", False) for c in cells):
            raise UnsupportedConfigError(
                "canonical gradients need bias_hh frozen (train_recurrent_bias=False): with both biases "
                "trainable, one canonical bias has two torch parameters"
            )
        named = [(i, name, p) for i, c in enumerate(cells) for name, p in c.cell.named_parameters()]
        trainable = [p for _, _, p in named if p.requires_grad]
        loss, xt, st = self._loss(model, x, states, loss_weights, device)
        flat_states = [s for layer in st for s in layer]
        grads = iter(torch.autograd.grad(loss, [xt, *flat_states, *trainable], allow_unused=True))
        grad_x = self.to_numpy(next(grads))
        grad_states = [[self.to_numpy(next(grads)) for _ in layer] for layer in st]
        per_cell: list[dict[str, np.ndarray]] = [{} for _ in cells]
        for i, name, p in named:
            g = next(grads) if p.requires_grad else None
            per_cell[i][name] = self.to_numpy(g) if g is not None else np.zeros(tuple(p.shape), self.dtype_name(p))
        weights = [w for c, g in zip(cells, per_cell, strict=True) for w in layouts.get(c.cell_kind).from_torch(g)]
        return backends.Gradients(float(loss.detach()), grad_x, grad_states, weights)

    def train_step(
        self, model: Any, x: Any, states: Any, loss_weights: Any, optimizer: Any, device: Any = None
    ) -> float:
        """One step of ``torch.optim.SGD`` / ``torch.optim.Adam`` set up as Keras's.

        Keras's Adam adds ``epsilon`` to ``sqrt(v)``, torch's to ``sqrt(v / (1 - beta_2**t))``;
        for the first step they agree exactly with ``eps_torch = epsilon / sqrt(1 - beta_2)``.
        """
        params = [p for p in model.parameters() if p.requires_grad]
        if optimizer.name == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=optimizer.learning_rate, momentum=0.0)
        elif optimizer.name == "adam":
            eps = optimizer.epsilon / math.sqrt(1.0 - optimizer.beta_2)
            betas = (optimizer.beta_1, optimizer.beta_2)
            opt = torch.optim.Adam(params, lr=optimizer.learning_rate, betas=betas, eps=eps)
        else:
            raise UnsupportedConfigError(f"optimizer must be 'sgd' or 'adam', got {optimizer.name!r}")
        opt.zero_grad(set_to_none=True)
        loss, _, _ = self._loss(model, x, states, loss_weights, device)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def frozen_parameters(self, model: Any) -> dict[str, np.ndarray]:
        """``bias_hh`` of each cell (unless ``train_recurrent_bias=True``), by parameter name."""
        return {name: self.to_numpy(p) for name, p in model.named_parameters() if not p.requires_grad}


OPS = backends.get("torch")
