"""``xf.compile(rnn, "torchscript")``: the whole time loop of a torch stack in TorchScript.

The only module that touches ``torch.jit``. The scripted loop holds the stack's own
``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell`` modules (any mix), so it shares their
parameters: training or ``set_weights`` on either object shows in the other.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from rnn_xframework import protocol
from rnn_xframework.errors import UnsupportedConfigError


class SimpleRNNStep(nn.Module):
    """Adapter to the uniform step signature ``(x, [h]) -> (out, [h])``."""

    def __init__(self, cell: nn.RNNCell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        h = self.cell(x, state[0])
        return h, [h]


class LSTMStep(nn.Module):
    """Adapter ``(x, [h, c]) -> (h, [h, c])`` around ``nn.LSTMCell``."""

    def __init__(self, cell: nn.LSTMCell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        h, c = self.cell(x, (state[0], state[1]))
        return h, [h, c]


class GRUStep(nn.Module):
    """Adapter ``(x, [h]) -> (h, [h])`` around ``nn.GRUCell``."""

    def __init__(self, cell: nn.GRUCell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        h = self.cell(x, state[0])
        return h, [h]


# cell_kind -> adapter around the cell's native module (``cell.cell``)
STEPS: dict[str, type[nn.Module]] = {"SimpleRNNCell": SimpleRNNStep, "LSTMCell": LSTMStep, "GRUCell": GRUStep}


class ScriptedLoop(nn.Module):
    """``(x [batch, time, in], states [[...] per layer]) -> (y, states)``, both orderings."""

    __constants__ = ["layer_major", "return_sequences", "go_backwards"]

    def __init__(self, steps: list[nn.Module], layer_major: bool, return_sequences: bool, go_backwards: bool) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.layer_major = layer_major
        self.return_sequences = return_sequences
        self.go_backwards = go_backwards

    def forward(self, x: Tensor, states: list[list[Tensor]]) -> tuple[Tensor, list[list[Tensor]]]:
        if self.go_backwards:
            x = x.flip(1)
        inputs = x.unbind(1)
        new_states: list[list[Tensor]] = []
        if self.layer_major:
            for i, step in enumerate(self.steps):
                state = states[i]
                outputs: list[Tensor] = []
                for xt in inputs:
                    out, state = step(xt, state)
                    outputs.append(out)
                inputs = outputs
                new_states.append(state)
            outputs = inputs
        else:
            new_states = [s for s in states]
            outputs = []
            for xt in inputs:
                h = xt
                for i, step in enumerate(self.steps):
                    h, state = step(h, new_states[i])
                    new_states[i] = state
                outputs.append(h)
        y = torch.stack(outputs, 1) if self.return_sequences else outputs[-1]
        return y, new_states


def script(module: nn.Module) -> Any:
    """``torch.jit.script`` without its torch 2.13 deprecation warning (we rely on it on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=DeprecationWarning)
        return torch.jit.script(module)


class CompiledRNN(nn.Module):
    """An RNN whose time loop runs in TorchScript; called and answering exactly like the source."""

    backend = "torch"

    def __init__(self, rnn: Any) -> None:
        super().__init__()
        if any(c.input_dim is None for c in rnn.cells):
            raise UnsupportedConfigError(
                "compile: the RNN is not built yet; call rnn.build((None, None, features)) or call it once first"
            )
        steps = []
        for cell in rnn.cells:
            if cell.cell_kind not in STEPS:
                raise UnsupportedConfigError(f"compile: torchscript has no step for {cell.cell_kind}")
            steps.append(STEPS[cell.cell_kind](cell.cell))
        self.source = rnn
        loop = ScriptedLoop(steps, rnn.order == "layer", rnn.return_sequences, rnn.go_backwards)
        object.__setattr__(self, "loop", script(loop))  # parameters live in self.source only

    def __getattr__(self, name: str) -> Any:
        if name in ("order", "return_sequences", "return_state", "go_backwards", "cells", "cell", "units"):
            return getattr(self._modules["source"], name)
        return super().__getattr__(name)

    def get_initial_state(self, batch_size: int) -> list[list[Tensor]]:
        return self.source.get_initial_state(batch_size)

    def get_weights(self) -> list[Any]:
        return self.source.get_weights()

    def set_weights(self, weights: Any) -> None:
        self.source.set_weights(weights)

    def forward(self, inputs: Tensor, initial_state: Any = None, training: bool | None = None, mask: Any = None) -> Any:
        source = self.source
        if mask is not None:
            raise UnsupportedConfigError("compile: the TorchScript loop takes no mask; call the uncompiled RNN")
        if training and any(c.dropout > 0 or c.recurrent_dropout > 0 for c in source.cells):
            raise UnsupportedConfigError(
                "compile: the TorchScript loop has no dropout; train with the uncompiled RNN (same parameters)"
            )
        ops = source._ops
        stack = source.cell
        protocol.check_tensor(ops, inputs, "RNN inputs", (None, None, stack.input_dim), stack.dtype_name)
        batch = inputs.shape[0]
        if initial_state is None:
            initial_state = stack.get_initial_state(batch)
        states = []
        for cell, state in zip(stack.cells, protocol.as_stack_states(stack, initial_state), strict=True):
            state = protocol.as_state_list(cell, ops, state)
            for i, (s, size) in enumerate(zip(state, cell.state_sizes, strict=True)):
                protocol.check_tensor(
                    ops, s, f"{protocol.cell_name(cell)} states[{i}]", (batch, size), stack.dtype_name
                )
            states.append(state)
        y, states = self.loop(inputs, states)
        return (y, states) if source.return_state else y


def compile_rnn(rnn: Any) -> CompiledRNN:
    return CompiledRNN(rnn)
