"""The torch side of ``xf.compile``: :class:`CompiledRNN`, the ``torch.nn.Module`` that the
``"torchscript"`` and ``"inductor"`` methods return around their loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rnn_xframework import compiled, dropout
from rnn_xframework.backends.torch.compile import masked_loops
from rnn_xframework.errors import NotBuiltError, UnsupportedConfigError

Loop = Callable[[Tensor, list[list[Tensor]]], tuple[Tensor, list[list[Tensor]]]]
MaskedLoop = Callable[..., tuple[Tensor, list[list[Tensor]]]]


class CompiledRNN(compiled.CompiledRNN, nn.Module):
    """An RNN whose time loop runs in ``loop`` (scripted or compiled); called and answering
    exactly like the source: ``y = fast(x, initial_state=None, training=None)``.

    Parameters live in ``source`` only, so training or ``set_weights`` on either object shows in
    the other. ``masked``, where given, runs calls with ``mask=`` and training calls with dropout
    (``masked(x, states, mask, xm, hm)``, :mod:`~rnn_xframework.backends.torch.compile.masked_loops`);
    without it both are refused (:class:`UnsupportedConfigError`): the object never silently takes
    the slow path. ``train``, where given, replaces ``loop`` while autograd is on (same call and results; see
    :mod:`~rnn_xframework.backends.torch.compile.bptt`). ``export``, where given, makes the ScriptModule
    that ``torch.jit.save(fast, f)`` writes (:meth:`save`).
    """

    backend = "torch"

    def __init__(
        self,
        rnn: Any,
        loop: Loop,
        method: str,
        train: Loop | None = None,
        export: Callable[[], Any] | None = None,
        masked: MaskedLoop | None = None,
    ) -> None:
        nn.Module.__init__(self)
        self._init_compiled(rnn, method)
        object.__setattr__(self, "loop", loop)  # not submodules: parameters counted once
        object.__setattr__(self, "train_loop", train)
        object.__setattr__(self, "export", export)
        object.__setattr__(self, "masked_loop", masked)
        self.train(rnn.training)  # the source's mode (module.train() / .eval()) carries over

    @property
    def takes_mask(self) -> bool:  # type: ignore[override]
        return self.__dict__.get("masked_loop") is not None

    takes_dropout = takes_mask  # the masked loop also applies the dropout masks

    def _masked(self, x: Tensor, states: list[list[Tensor]], mask: Any, dropping: bool) -> Any:
        """The masked loop (:mod:`~rnn_xframework.backends.torch.compile.masked_loops`): with
        ``mask`` (else every step real), and in training with dropout, the cells' dropout masks
        for this call, drawn as the uncompiled RNN draws them and reset after it."""
        source = self.source
        keep = masked_loops.as_mask(mask, x) if mask is not None else x.new_ones(x.shape[:2], dtype=torch.bool)
        xm: list[list[Tensor]] = [[] for _ in source.cells]
        hm: list[list[Tensor]] = [[] for _ in source.cells]
        if dropping:
            try:
                with dropout.call_scope():
                    xm, hm = masked_loops.dropout_masks(source, x, states)
            finally:
                for cell in source.cells:
                    cell.reset_dropout_mask()
                    cell.reset_recurrent_dropout_mask()
        return self.masked_loop(x, states, keep, xm, hm)

    def _init_pending(self, rnn: Any, method: str, make: Callable[[Any], Any]) -> None:
        nn.Module.__init__(self)
        super()._init_pending(rnn, method, make)

    def _exported(self) -> Any:
        if not self.built:
            raise NotBuiltError(
                f"torch.jit.save: this {self.method!r}-compiled RNN was compiled unbuilt and has not been called "
                "yet; call it once (or compile a built RNN) first"
            )
        if self.export is None:
            raise UnsupportedConfigError(
                f"torch.jit.save: a {self.method!r}-compiled RNN cannot be saved as TorchScript; "
                "use xf.compile(rnn, 'torchscript')"
            )
        return self.export()

    def save(self, f: Any, _extra_files: Any = None) -> None:
        """``torch.jit.save(fast, path)``: the whole RNN as a TorchScript file that
        ``torch.jit.load`` runs without this library (same call and outputs)."""
        self._exported().save(f, _extra_files=_extra_files or {})

    def save_to_buffer(self, _extra_files: Any = None) -> bytes:
        """``torch.jit.save(fast, file_object)``: as :meth:`save`, into bytes."""
        return self._exported().save_to_buffer(_extra_files=_extra_files or {})

    def forward(self, inputs: Tensor, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        self._ready(inputs)
        source = self.source
        training = self.training if training is None else training  # PyTorch's rule: the module's mode
        states = self.check_call(inputs, initial_state, training, mask)
        if source.time_major:  # the loops run batch-first: a transposed view in, one out
            inputs = inputs.transpose(0, 1)
        if states is None:
            states = source.cell.get_initial_state(inputs.shape[0])
        dropping = bool(training) and compiled.has_dropout(source)
        if mask is not None or dropping:
            y, states = self._masked(inputs, states, mask, dropping)
        else:
            run = self.train_loop if self.train_loop is not None and torch.is_grad_enabled() else self.loop
            y, states = run(inputs, states)
        if torch.is_grad_enabled():
            y, states = defined_gradients(y, states)
        if source.time_major and source.return_sequences:
            y = y.transpose(0, 1)
        return (y, states) if source.return_state else y


class OnFirstCall:
    """A loop made by ``make()`` on its first call (thread-safe): the masked loop of a compiled
    RNN costs its scripting / compile time only to objects that are called with a mask."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make
        self.loop: Any = None
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> Any:
        if self.loop is None:
            with self._lock:
                if self.loop is None:
                    self.loop = self.make()
        return self.loop(*args)


class _DefinedGradients(torch.autograd.Function):
    """Identity whose backward hands zeros, never an undefined gradient, to the loop for outputs
    the loss does not use. TorchScript's differentiable graphs mishandle undefined output
    gradients once the profiling executor has optimized them (torch 2.13): a backward through
    an LSTM's final ``c`` alone failed from the second call on with a shape error."""

    @staticmethod
    def forward(ctx: Any, *tensors: Tensor) -> tuple[Tensor, ...]:
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor, ...]:
        return grads  # materialize_grads (the default) turned undefined ones into zeros


def defined_gradients(y: Tensor, states: list[list[Tensor]]) -> tuple[Tensor, list[list[Tensor]]]:
    flat = [s for layer in states for s in layer]
    if not (y.requires_grad or any(s.requires_grad for s in flat)):
        return y, states
    y, *rest = _DefinedGradients.apply(y, *flat)
    it = iter(rest)
    return y, [[next(it) for _ in layer] for layer in states]
