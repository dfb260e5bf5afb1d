"""``xf.compile(rnn, "torchscript")``: the fast loop of :mod:`~rnn_xframework.backends.torch.compile.script_loops`
in TorchScript.

The only module that touches ``torch.jit``. The scripted loop holds the stack's own
``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell`` modules (any mix), so it shares their
parameters: training or ``set_weights`` on either object shows in the other. Scripting takes
well under a second and works for any batch size and sequence length; it supports autograd.
A SimpleRNN stack trains through :mod:`~rnn_xframework.backends.torch.compile.bptt`, whose two loops are
scripted here (:func:`bptt_kernels`).

:class:`ScriptedRNN` is what ``torch.jit.script`` compiles in place of a library ``RNN`` (through
``RNN.__prepare_scriptable__``, PyTorch's hook for modules that script as another module): the
same call ``rnn(x, initial_state=None, training=None, mask=None)``, outputs, parameters and
``state_dict`` keys, written in TorchScript only, so a saved scripted model (``torch.jit.save``)
loads and runs with ``torch.jit.load`` where this library is not installed. Its loop and layers
(:mod:`~rnn_xframework.backends.torch.compile.script_masked`) hold both the fast loop and the
masked loop over the RNN's cells: a call with ``mask=`` runs the masked one.
"""

from __future__ import annotations

import functools
import threading
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from rnn_xframework.backends.torch.compile import bptt, masked_loops, script_loops, script_masked
from rnn_xframework.backends.torch.compile.compiled_module import CompiledRNN, OnFirstCall
from rnn_xframework.errors import UnsupportedConfigError

SCRIPT_LOCK = threading.RLock()
"""Serializes this library's ``torch.jit.script`` calls: TorchScript's class compilation is not
thread-safe (8 threads compiling in a fresh process failed with ``Can't redefine method: forward
on class ...``, issue 18), and ``warnings.catch_warnings`` is process-global. Re-entrant: a
module's ``__prepare_scriptable__`` may script again."""


def script(module: Any) -> Any:
    """``torch.jit.script`` without its torch 2.13 deprecation warning (we rely on it on purpose),
    one call at a time (:data:`SCRIPT_LOCK`)."""
    with SCRIPT_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=DeprecationWarning)
        return torch.jit.script(module)


@functools.cache
def bptt_kernels() -> bptt.Kernels:
    """The scripted forward and backward loops of :mod:`~rnn_xframework.backends.torch.compile.bptt`,
    made on first use (scripting takes ~0.1 s)."""
    return bptt.Kernels(script(script_loops.time_major_all), script(bptt.backward_steps))


def compile_rnn(rnn: Any) -> CompiledRNN:
    """A :class:`~rnn_xframework.backends.torch.compile.compiled_module.CompiledRNN` running the scripted fast
    loop; with autograd on, a SimpleRNN stack trains through :mod:`~rnn_xframework.backends.torch.compile.bptt`."""
    loop = script(script_loops.fast_loop(rnn, inplace=True))
    return CompiledRNN(
        rnn,
        loop,
        "torchscript",
        train=bptt.simple_stack(rnn, bptt_kernels),
        export=lambda: script(scriptable(rnn)),
        masked=masked(rnn),
    )


def masked(rnn: Any) -> OnFirstCall:
    """The scripted masked loop of ``rnn`` (:mod:`~rnn_xframework.backends.torch.compile.masked_loops`),
    scripted on its first call: what ``mask=`` and dropout in training run."""
    return OnFirstCall(lambda: script(masked_loops.masked_loop(rnn, trim=True)))


States = list[list[Tensor]]
"""The states of a stack: one list per layer (``[h]``, ``[h, c]``), as everywhere in the library."""
OptStates = States | None  # an alias TorchScript resolves when it compiles (as PyG's OptTensor)

DELEGATED = frozenset(
    {"get_weights", "set_weights", "get_initial_state", "cells", "order", "return_sequences", "return_state"}
    | {"go_backwards", "backend", "run", "build"}
)


class _Scripted(nn.Module):
    """What the two :class:`ScriptedRNN` forms share: the fast loop over the RNN's own native
    cells under the RNN's attribute names (``cell.cells.{i}.cell.weight_ih``, ...), zero initial
    states, the ``time_major`` layout, and the uncompiled call's refusals. A call with ``mask=``
    runs the masked loop of :mod:`~rnn_xframework.backends.torch.compile.masked_loops` over the
    same layers (:mod:`~rnn_xframework.backends.torch.compile.script_masked`: each holds both
    forms); a call without one runs the fast loop, as before masks were taken."""

    __constants__ = ["time_major", "has_dropout", "takes_mask"]

    def __init__(self, rnn: Any) -> None:
        super().__init__()
        self.cell, self.takes_mask = script_masked.scripted_loop(rnn)
        self.time_major = bool(rnn.time_major)
        self.has_dropout = any(c.dropout > 0 or c.recurrent_dropout > 0 for c in rnn.cells)
        self.units = [c.units for c in rnn.cells]  # never empty: TorchScript infers list[int]
        self.n_states = [len(c.state_sizes) for c in rnn.cells]
        # not a submodule, and in a tuple: torch.jit.script's preparation replaces modules it finds
        self.__dict__["_source"] = (rnn,)

    def __getattr__(self, name: str) -> Any:
        # ``torch.jit.script(model)`` leaves this object in ``model`` in the RNN's place (PyTorch's
        # ``__prepare_scriptable__`` replaces submodules in place); the RNN's Python API stays.
        if name in DELEGATED:
            return getattr(self.__dict__["_source"][0], name)
        return super().__getattr__(name)

    def _run(
        self, inputs: Tensor, initial_state: OptStates, training: bool | None, mask: Tensor | None
    ) -> tuple[Tensor, States]:
        train = self.training  # training=None follows module.train() / .eval(), as in eager mode
        if training is not None:
            train = training
        if train and self.has_dropout:
            raise RuntimeError("the scripted RNN has no dropout; train with the uncompiled RNN (same weights)")
        x = inputs.transpose(0, 1) if self.time_major else inputs
        if initial_state is None:
            states: States = []
            for i in range(len(self.units)):
                states.append([x.new_zeros(x.shape[0], self.units[i]) for _ in range(self.n_states[i])])
        else:
            states = initial_state
        if mask is None:
            y, final = self.cell(x, states)
        elif self.takes_mask:  # a constant: the masked branch is compiled only where the loop has it
            no_dropout: States = [[] for _ in self.units]
            y, final = self.cell.masked(x, states, self._keep(mask, x), no_dropout, no_dropout)
        else:
            raise RuntimeError(
                "the scripted RNN takes no mask: a cell type of its stack has no masked loop; call the uncompiled RNN"
            )
        if self.time_major and y.dim() == 3:
            y = y.transpose(0, 1)
        return y, final

    def _keep(self, mask: Tensor, x: Tensor) -> Tensor:
        """``mask`` (``[batch, time]`` of batch-first ``x``; bool, or any dtype: nonzero = a real
        step) as a bool tensor on ``x``'s device, outside autograd."""
        if mask.dim() != 2 or mask.shape[0] != x.shape[0] or mask.shape[1] != x.shape[1]:
            raise RuntimeError(
                f"RNN mask: expected shape [{x.shape[0]}, {x.shape[1]}] (batch, time), got {list(mask.shape)}"
            )
        m = mask.detach().to(x.device)
        return m if m.dtype == torch.bool else m != 0


# Two classes: TorchScript fixes what ``forward`` returns per class.
class ScriptedRNN(_Scripted):
    """A library ``RNN`` (``return_state=False``) in TorchScript: ``y = rnn(x, initial_state=None, mask=None)``."""

    def forward(
        self, inputs: Tensor, initial_state: OptStates = None, training: bool | None = None, mask: Tensor | None = None
    ) -> Tensor:
        return self._run(inputs, initial_state, training, mask)[0]


class ScriptedRNNWithState(_Scripted):
    """A library ``RNN`` with ``return_state=True`` in TorchScript: ``y, states = rnn(x, ...)``,
    ``states`` one list per layer (``[h]``, ``[h, c]`` for LSTM)."""

    def forward(
        self, inputs: Tensor, initial_state: OptStates = None, training: bool | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, States]:
        return self._run(inputs, initial_state, training, mask)


def scriptable(rnn: Any) -> nn.Module:
    """The TorchScript-ready module for a built torch ``RNN`` (sharing its parameters)."""
    if any(c.input_dim is None for c in rnn.cells):
        raise UnsupportedConfigError(
            "torch.jit.script: the RNN is not built yet (its parameters are lazy); give input_size= or call it once "
            "first, as for PyTorch's lazy modules"
        )
    return (ScriptedRNNWithState if rnn.return_state else ScriptedRNN)(rnn).train(rnn.training)


class _ScriptedBidirectional(nn.Module):
    """What the :class:`ScriptedBidirectional` forms share: both RNNs' scripted loops
    (:class:`ScriptedRNNWithState`, sharing their parameters and ``state_dict`` keys), the time
    flip of the backward sequence and the merge, in TorchScript."""

    __constants__ = ["merge_mode", "return_sequences", "time_major"]

    def __init__(self, bidirectional: Any) -> None:
        super().__init__()
        self.forward_layer = ScriptedRNNWithState(bidirectional.forward_layer)
        self.backward_layer = ScriptedRNNWithState(bidirectional.backward_layer)
        self.merge_mode = "none" if bidirectional.merge_mode is None else bidirectional.merge_mode
        self.return_sequences = bool(bidirectional.return_sequences)
        self.time_major = bool(bidirectional.time_major)
        self.__dict__["_source"] = (bidirectional,)

    def __getattr__(self, name: str) -> Any:
        if name in {"get_weights", "set_weights", "get_initial_state", "cells", "backend", "run", "build"}:
            return getattr(self.__dict__["_source"][0], name)
        return super().__getattr__(name)

    def _run(
        self, inputs: Tensor, initial_state: OptStates, training: bool | None, mask: Tensor | None
    ) -> tuple[list[Tensor], States]:
        forward_state: OptStates = None
        backward_state: OptStates = None
        if initial_state is not None:
            half = len(initial_state) // 2
            forward_state, backward_state = initial_state[:half], initial_state[half:]
        y, forward_final = self.forward_layer(inputs, forward_state, training, mask)
        y_rev, backward_final = self.backward_layer(inputs, backward_state, training, mask)
        if self.return_sequences:
            y_rev = torch.flip(y_rev, [0 if self.time_major else 1])
        if self.merge_mode == "concat":
            out = [torch.cat([y, y_rev], -1)]
        elif self.merge_mode == "sum":
            out = [y + y_rev]
        elif self.merge_mode == "ave":
            out = [(y + y_rev) / 2]
        elif self.merge_mode == "mul":
            out = [y * y_rev]
        else:
            out = [y, y_rev]
        return out, forward_final + backward_final


# One class per return type (TorchScript fixes what ``forward`` returns per class).
class ScriptedBidirectional(_ScriptedBidirectional):
    """A merged ``Bidirectional`` in TorchScript: ``y = bi(x, initial_state=None)``."""

    def forward(
        self, inputs: Tensor, initial_state: OptStates = None, training: bool | None = None, mask: Tensor | None = None
    ) -> Tensor:
        return self._run(inputs, initial_state, training, mask)[0][0]


class ScriptedBidirectionalWithState(_ScriptedBidirectional):
    """``y, states = bi(x, ...)``: states the forward layer's, then the backward layer's."""

    def forward(
        self, inputs: Tensor, initial_state: OptStates = None, training: bool | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, States]:
        out, states = self._run(inputs, initial_state, training, mask)
        return out[0], states


class ScriptedBidirectionalPair(_ScriptedBidirectional):
    """``merge_mode=None``: ``[y, y_rev] = bi(x, ...)``."""

    def forward(
        self, inputs: Tensor, initial_state: OptStates = None, training: bool | None = None, mask: Tensor | None = None
    ) -> list[Tensor]:
        return self._run(inputs, initial_state, training, mask)[0]


class ScriptedBidirectionalPairWithState(_ScriptedBidirectional):
    """``merge_mode=None`` and ``return_state``: ``[y, y_rev], states = bi(x, ...)``."""

    def forward(
        self, inputs: Tensor, initial_state: OptStates = None, training: bool | None = None, mask: Tensor | None = None
    ) -> tuple[list[Tensor], States]:
        return self._run(inputs, initial_state, training, mask)


def scriptable_bidirectional(bidirectional: Any) -> nn.Module:
    """The TorchScript-ready module for a built torch ``Bidirectional`` (sharing its parameters)."""
    if any(c.input_dim is None for c in bidirectional.cells):
        raise UnsupportedConfigError(
            "torch.jit.script: the Bidirectional is not built yet (its parameters are lazy); give input_size= or "
            "call it once first, as for PyTorch's lazy modules"
        )
    pair, state = bidirectional.merge_mode is None, bidirectional.return_state
    cls = {
        (False, False): ScriptedBidirectional,
        (False, True): ScriptedBidirectionalWithState,
        (True, False): ScriptedBidirectionalPair,
        (True, True): ScriptedBidirectionalPairWithState,
    }[(pair, state)]
    return cls(bidirectional).train(bidirectional.training)
