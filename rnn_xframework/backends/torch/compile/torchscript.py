"""``xf.compile(rnn, "torchscript")``: the fast loop of :mod:`~rnn_xframework.backends.torch.compile.loops`
in TorchScript.

The only module that touches ``torch.jit``. The scripted loop holds the stack's own
``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell`` modules (any mix), so it shares their
parameters: training or ``set_weights`` on either object shows in the other. Scripting takes
well under a second and works for any batch size and sequence length; it supports autograd.
A SimpleRNN stack trains through :mod:`~rnn_xframework.backends.torch.compile.bptt`, whose two loops are
scripted here (:func:`bptt_kernels`).

:class:`ScriptedRNN` is what ``torch.jit.script`` compiles in place of a library ``RNN`` (through
``RNN.__prepare_scriptable__``, PyTorch's hook for modules that script as another module): the
same call ``rnn(x, initial_state=None)``, outputs, parameters and ``state_dict`` keys, written in
TorchScript only, so a saved scripted model (``torch.jit.save``) loads and runs with
``torch.jit.load`` where this library is not installed.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from rnn_xframework.backends.torch.compile import bptt, loops
from rnn_xframework.backends.torch.compile.compiled import CompiledRNN
from rnn_xframework.errors import UnsupportedConfigError


def script(module: Any) -> Any:
    """``torch.jit.script`` without its torch 2.13 deprecation warning (we rely on it on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=DeprecationWarning)
        return torch.jit.script(module)


@functools.cache
def bptt_kernels() -> bptt.Kernels:
    """The scripted forward and backward loops of :mod:`~rnn_xframework.backends.torch.compile.bptt`,
    made on first use (scripting takes ~0.1 s)."""
    return bptt.Kernels(script(loops.time_major_all), script(bptt.backward_steps))


def compile_rnn(rnn: Any) -> CompiledRNN:
    """A :class:`~rnn_xframework.backends.torch.compile.compiled.CompiledRNN` running the scripted fast
    loop; with autograd on, a SimpleRNN stack trains through :mod:`~rnn_xframework.backends.torch.compile.bptt`."""
    loop = script(loops.fast_loop(rnn, inplace=True))
    return CompiledRNN(
        rnn,
        loop,
        "torchscript",
        train=bptt.simple_stack(rnn, bptt_kernels),
        export=lambda: script(scriptable(rnn)),
    )


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
    states, the ``time_major`` layout, and the uncompiled call's refusals."""

    __constants__ = ["time_major", "has_dropout"]

    def __init__(self, rnn: Any) -> None:
        super().__init__()
        self.cell = loops.fast_loop(rnn, inplace=True)
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
        if mask is not None:
            raise RuntimeError("the scripted RNN takes no mask; call the uncompiled RNN")
        if training is not None and training and self.has_dropout:
            raise RuntimeError("the scripted RNN has no dropout; train with the uncompiled RNN (same weights)")
        x = inputs.transpose(0, 1) if self.time_major else inputs
        if initial_state is None:
            states: States = []
            for i in range(len(self.units)):
                states.append([x.new_zeros(x.shape[0], self.units[i]) for _ in range(self.n_states[i])])
        else:
            states = initial_state
        y, final = self.cell(x, states)
        if self.time_major and y.dim() == 3:
            y = y.transpose(0, 1)
        return y, final


# Two classes: TorchScript fixes what ``forward`` returns per class.
class ScriptedRNN(_Scripted):
    """A library ``RNN`` (``return_state=False``) in TorchScript: ``y = rnn(x, initial_state=None)``."""

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
    return (ScriptedRNNWithState if rnn.return_state else ScriptedRNN)(rnn)
