"""The torch backend's cell: :class:`TorchCell`, a ``torch.nn.Module`` for every registered cell
type (its type's ``torch.nn`` cell from :data:`~rnn_xframework.backends.torch.kinds.KINDS` and
that cell's ATen step, or the spec's step on :class:`~rnn_xframework.backends.torch.params.SpecParameters`),
and the device checks every torch object makes (:func:`resolve_device`, :func:`refuse_meta`).
The backend's package docstring (:mod:`rnn_xframework.backends.torch`) describes the
parameters, their Keras initialization and dropout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import is_lazy

from rnn_xframework import cells, layouts, protocol, registry
from rnn_xframework.backends.torch import kinds
from rnn_xframework.backends.torch.params import (
    SpecParameters,
    finish_lazy,
    lazy_kinds,
    make_lazy,
    materialize,
    relazy,
)
from rnn_xframework.backends.torch.step import STEP_OPS
from rnn_xframework.cells.base import SpecCell
from rnn_xframework.dropout import DropoutMixin
from rnn_xframework.errors import NotBuiltError, UnsupportedConfigError


def _ops() -> registry.Backend:
    """The torch backend (its class is defined after this module is imported)."""
    return registry.get("torch")


DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _finish_loaded(module: TorchCell, _incompatible: Any) -> None:
    """``load_state_dict`` post-hook: a lazy cell is built by the loaded weights (a module-level
    function, not a lambda, so the cell pickles)."""
    finish_lazy(module.cell)


class TorchCell(SpecCell, DropoutMixin, nn.Module):
    """A cell of any registered type as a ``torch.nn.Module``; ``spec`` is set per type.

    Constructed like the Keras cell of the type, plus ``dtype``, ``device``, ``seed`` (dropout
    masks) and ``train_recurrent_bias``. Where the spec has a PyTorch cell (:attr:`native`), the
    cell wraps it and calls its ATen kernel; Keras's per-gate dropout masks, and types without a
    PyTorch cell, run the spec's step.

    Attributes (after build):
        cell: the native cell (or :class:`SpecParameters`); ``cell.weight_ih``
            ``(G*units, input_dim)``, ``cell.weight_hh`` ``(G*units, units)``, ``cell.bias_ih`` /
            ``cell.bias_hh`` ``(G*units,)``, gate blocks in PyTorch's order.
    """

    backend = "torch"
    spec: cells.CellSpec

    def __init__(
        self,
        units: int,
        *args: Any,
        dtype: Any = None,
        device: Any = None,
        seed: int | None = None,
        train_recurrent_bias: bool = False,
        **kwargs: Any,
    ) -> None:
        nn.Module.__init__(self)
        self.bind_config(units, args, kwargs, STEP_OPS)
        self.seed = seed
        self.train_recurrent_bias = bool(train_recurrent_bias)
        self._dtype = DTYPES[protocol.dtype_name(dtype)]
        self._device = resolve_device(device)
        self._generator: torch.Generator | None = None
        # A layout torch.nn's cell cannot hold (GRU reset_after=False) keeps its own parameters
        # under PyTorch's names and runs the spec's step (the compiled loops have its math too).
        native = self.kind is not None and self.layout.torch_problem is None
        self.native = self.kind.cell if native else None
        self.cell = make_lazy(self.make_native(0, device="meta"), self._device, self._dtype)
        if self.use_bias and self.layout.bias_rows == 1:  # one Keras bias: bias_hh stays at zero
            self.cell.bias_hh.requires_grad = self.train_recurrent_bias
        self.register_load_state_dict_post_hook(_finish_loaded)

    def __getstate__(self) -> dict[str, Any]:
        """pickle / ``copy.deepcopy`` / ``torch.save``: the module's state, plus the device and
        dtype of parameters not built yet (PyTorch's own pickling drops them)."""
        state = dict(self.__dict__)
        state["_lazy_kinds"] = lazy_kinds(self.cell)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        lazy = state.pop("_lazy_kinds", {})
        nn.Module.__setstate__(self, state)
        relazy(self.cell, lazy)

    def backend_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "train_recurrent_bias": self.train_recurrent_bias, "device": self._device}

    @property
    def kind(self) -> kinds.TorchKind | None:
        """PyTorch's classes and kernel for this cell type (:data:`kinds.KINDS`), or ``None``."""
        return kinds.get(self.spec.name)

    # --- Keras-style attributes --------------------------------------------------------------
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
        order = self.layout.torch_order
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
        if self.layout.bias_rows == 2:
            return torch.stack([self._canonical(c.bias_ih), self._canonical(c.bias_hh)])
        return self._canonical(c.bias_ih + c.bias_hh)

    def make_native(self, dim: int, device: Any = None) -> nn.Module:
        kw: dict[str, Any] = {"bias": self.use_bias, "device": device or self._device, "dtype": self._dtype}
        if self.native is None:
            return SpecParameters(dim, self.units, self.gates, **kw)
        return self.native(dim, self.units, **kw, **self.kind.kwargs(self.config))

    def check_config(self, config: dict[str, Any]) -> None:
        """What PyTorch's native cell of the type cannot express is refused (:func:`kinds.check`);
        a layout it cannot hold runs on this cell's own parameters (``own=True``)."""
        kinds.check(self.spec.name, config, own=True)

    def make_weights(self, dim: int) -> None:
        """Fill the parameters for ``dim`` features (in place: an optimizer made before keeps
        them) and initialize them like Keras's."""
        g = self.gates * self.units
        cell = self.cell
        materialize(cell, {"weight_ih": (g, dim), "weight_hh": (g, self.units), "bias_ih": (g,), "bias_hh": (g,)})
        layout = self.layout
        with torch.no_grad():
            nn.init.xavier_uniform_(cell.weight_ih)
            nn.init.orthogonal_(cell.weight_hh)
            if self.use_bias:
                g = self.gates * self.units
                zeros = [np.zeros((1, g)), np.zeros((1, g))]
                bias = layout.to_torch([*zeros, self.spec.initial_bias(self.config, self.dtype_name)], own=True)
                cell.bias_ih.copy_(torch.from_numpy(bias["bias_ih"]))
                cell.bias_hh.copy_(torch.from_numpy(bias["bias_hh"]))

    def get_initial_state(self, batch_size: int) -> list[torch.Tensor]:
        """One ``zeros(batch_size, units)`` per state, on the cell's device and dtype."""
        w = self.cell.weight_ih  # read once: each module attribute costs a lookup (a W1 stack: 23 -> 12 us)
        return [torch.zeros(batch_size, self.units, dtype=w.dtype, device=w.device) for _ in range(self.spec.n_states)]

    def get_weights(self) -> list[np.ndarray]:
        """Canonical (Keras) layout: ``[kernel (in, G*units), recurrent_kernel, bias]``."""
        if self.input_dim is None:
            return []
        refuse_meta(self.cell.weight_ih, "get_weights")
        params = {n: p.detach().cpu().numpy() for n, p in self.cell.named_parameters()}
        return self.layout.from_torch(params, own=True)

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Set from the canonical layout (see :mod:`rnn_xframework.layouts`); checked first."""
        dim = self.input_dim if self.input_dim is not None else layouts.input_dim_of(self.cell_kind, weights)
        arrays = layouts.check(self.layout_name, weights, dim, self.units, self.use_bias)
        # every tensor made before anything is built or written: all or nothing
        values = {
            n: torch.from_numpy(np.ascontiguousarray(v)) for n, v in self.layout.to_torch(arrays, own=True).items()
        }
        self.build((None, dim))
        params = dict(self.cell.named_parameters())
        with torch.no_grad():
            for name, value in values.items():
                params[name].copy_(value)

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

    def per_gate_masks(self, training: bool | None) -> bool:
        """Whether this step needs the per-gate path (Keras's ``implementation=1``)."""
        return bool(training) and self.gates > 1 and self.recurrent_dropout > 0

    # --- the step ----------------------------------------------------------------------------
    def spec_step(self, x: torch.Tensor, states: list[torch.Tensor], x_masks: Any, h_masks: Any) -> Any:
        """The spec's step on the canonical views of the parameters (differentiable)."""
        b_in = b_rec = None
        if self.use_bias:
            c, layout = self.cell, self.layout
            if layout.bias_rows == 2:
                b_in, b_rec = self._canonical(c.bias_ih), self._canonical(c.bias_hh)
            else:
                b_in = self._canonical(c.bias_ih + c.bias_hh)
        w = cells.StepWeights(self.kernel, self.recurrent_kernel, b_in, b_rec)
        return cells.run_step(self.spec, STEP_OPS, self.config, w, x, states, x_masks, h_masks)

    def step(self, x: torch.Tensor, states: list[torch.Tensor], training: bool | None) -> tuple[Any, list[Any]]:
        """One step on checked arguments, with Keras's dropout masks when ``training``."""
        x_masks = self.get_dropout_mask(x)
        if self.native is None or self.per_gate_masks(training):
            h_masks = self.get_recurrent_dropout_mask(states[0])
            return self.spec_step(x, states, x_masks if training else None, h_masks if training else None)
        if training and x_masks:
            x = x * x_masks[0]
        if self.gates == 1:  # one recurrent mask, on h, before the native kernel
            h_masks = self.get_recurrent_dropout_mask(states[0])
            if training and h_masks:
                states = [states[0] * h_masks[0], *states[1:]]
        return self.kind.step(self.cell, x, states)

    def _fits(self, c: Any, inputs: Any, states: Any) -> bool:
        """The common case, checked in a few comparisons: a list of native tensors of the cell's
        dtype and sizes. Anything else takes the full check, which raises the typed error."""
        if type(states) is not list or len(states) != len(self.state_sizes) or type(inputs) is not torch.Tensor:
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
        """``inputs`` ``[batch, input_dim]``, ``states`` a list of ``[batch, units]``; ``training``
        ``None`` follows ``self.training`` (``module.train()`` / ``.eval()``)."""
        if training is None:
            training = self.training
        c = self._modules["cell"]
        if not self.__dict__.get("_build_done", False):
            # Once per cell: wait for a build another thread may be running (its parameters exist
            # before they are initialized), or build here; never compute on half-built weights.
            with protocol.BUILD_LOCK:
                c = self._modules["cell"]
                if isinstance(c, LazyModuleMixin) and isinstance(inputs, torch.Tensor) and inputs.dim() == 2:
                    self.build(tuple(inputs.shape))
                    c = self._modules["cell"]
                if not isinstance(c, LazyModuleMixin):
                    self.__dict__["_build_done"] = True
        if isinstance(c, LazyModuleMixin):
            if isinstance(inputs, torch.Tensor) and inputs.dim() == 2:
                self.build(tuple(inputs.shape))
        elif c.weight_ih.is_meta:
            refuse_meta(c.weight_ih, "a call")
        elif (
            self.native is not None
            and not (training and (self.dropout or self.recurrent_dropout))
            and self._fits(c, inputs, states)
        ):
            return self.kind.step(c, inputs, states)  # the eager fast path: nearly free over nn.*Cell
        states = protocol.check_step(self, _ops(), inputs, states)
        return self.step(inputs, states, training)


def available_devices() -> list[str]:
    """The devices a torch object can be made on here, in PyTorch's spelling."""
    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else ["cpu"]
    return [*found, "meta"]


def resolve_device(device: Any) -> torch.device | None:
    """``device`` as a ``torch.device``, checked where PyTorch would fail later with a raw error
    (``AssertionError: Torch not compiled with CUDA enabled``, a bad string, an index past the
    device count). ``"meta"`` is accepted as PyTorch accepts it (parameters without values, for
    deferred initialization): ``module.to_empty(device="cpu")``, then ``set_weights`` or
    ``xf.load_weights``; until then a call or ``get_weights`` raises.

    Raises:
        UnsupportedConfigError: naming the device, the devices available here and the fix.
    """
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise UnsupportedConfigError(
            f"device={device!r} is not a device PyTorch can use here ({e}); available: {available_devices()}"
        ) from None
    if dev.type in ("cpu", "meta"):
        return dev
    module = getattr(torch, dev.type, None)
    is_available = getattr(module, "is_available", None)
    if not callable(is_available) or not is_available():
        if dev.type == "cuda" and torch.version.cuda is None:
            why = "this PyTorch is a CPU-only build (torch.version.cuda is None); install a CUDA build of PyTorch"
        else:
            why = f"torch.{dev.type}.is_available() is False (no such device, or no driver)"
        raise UnsupportedConfigError(
            f"device={device!r} is not available here: {why}; available: {available_devices()} "
            "(device='cpu' runs anywhere)"
        )
    count = getattr(module, "device_count", None)
    if dev.index is not None and callable(count) and dev.index >= count():
        raise UnsupportedConfigError(
            f"device={device!r}: this machine has {count()} {dev.type} device(s); available: {available_devices()}"
        )
    return dev


def refuse_meta(param: torch.Tensor, what: str) -> None:
    """:class:`NotBuiltError` for ``what`` on parameters of the ``meta`` device (no values)."""
    if param.is_meta:
        raise NotBuiltError(
            f"{what} needs weights with values, but this object's parameters are on the 'meta' device "
            "(made with device='meta'): call module.to_empty(device='cpu') (or 'cuda'), then set_weights(...) "
            "or xf.load_weights(...)"
        )
