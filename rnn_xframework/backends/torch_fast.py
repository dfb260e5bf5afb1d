"""The fast torch loop behind ``xf.compile``: layer-major, input projections precomputed.

Each layer first projects its whole input sequence in one matrix product,
``xp = x[batch*time, in] @ W_ih^T + b`` (a large, efficient GEMM), then runs only the
recurrent product per step, ``addmm(xp[t], h, W_hh^T)``, followed by the cell's gates. The
recurrent kernel is transposed to a contiguous ``(units, G*units)`` copy once per call (MKL is
up to 2x faster on it than on a transposed view at small sizes); the copy is part of the
autograd graph, so gradients reach the cells' own parameters.

Every step computes exactly what the per-step cell computes, with the bias sums grouped
differently: results agree within float rounding (docs/performance.md gives the tolerances).
Both ``order="timestep"`` and ``order="layer"`` give the same numbers, so this loop serves both.

The modules are written for ``torch.jit.script`` and ``torch.compile`` alike (typed lists, no
Python-side state); :mod:`rnn_xframework.backends.torchscript` and
:mod:`rnn_xframework.backends.torch_inductor` wrap them. :class:`CompiledRNN` is the wrapper
both return: same call, same checks and outputs as the source ``RNN``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rnn_xframework import loops
from rnn_xframework.errors import UnsupportedConfigError


def _project(seq: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``seq [batch, time, in] @ weight^T (+ bias)`` -> ``[batch, time, G*units]`` in one GEMM.

    Batch-major throughout: the reshape is a view (no copy of the input), and step ``t`` reads
    ``xp[:, t]``, a strided ``[batch, G*units]`` matrix that BLAS takes as it is."""
    b, t = seq.shape[0], seq.shape[1]
    flat = seq.reshape(b * t, seq.shape[2])
    out = torch.mm(flat, weight.t()) if bias is None else torch.addmm(bias, flat, weight.t())
    return out.view(b, t, weight.shape[0])


class SimpleRNNLayer(nn.Module):
    """``h_t = act(xp_t + h_{t-1} W_hh^T)`` with ``xp = x W_ih^T + b_ih + b_hh``; ``act`` tanh or relu.

    ``forward(seq [batch, time, in], state [h]) -> (out [batch, time, units], [h_T])``. With
    ``inplace`` (TorchScript) and autograd off, each step overwrites its slice of the projection,
    which becomes the output; ``torch.compile`` gets the out-of-place form, which it can fuse
    (functionalizing the in-place form would copy the buffer every step).
    """

    __constants__ = ["relu", "inplace"]

    def __init__(self, cell: nn.RNNCell, relu: bool, inplace: bool) -> None:
        super().__init__()
        self.cell = cell
        self.relu = relu
        self.inplace = inplace

    def forward(self, seq: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        c = self.cell
        bias_ih, bias_hh = c.bias_ih, c.bias_hh
        bias = None if bias_ih is None or bias_hh is None else bias_ih + bias_hh
        xp = _project(seq, c.weight_ih, bias)
        u = c.weight_hh.t().contiguous()
        h = state[0]
        if self.inplace and not torch.is_grad_enabled():
            for t in range(xp.shape[1]):
                z = xp[:, t].addmm_(h, u)
                h = z.relu_() if self.relu else z.tanh_()
            return xp, [h]
        outs: list[Tensor] = []  # autograd: in-place writes to one buffer would break the saved steps
        for xt in xp.unbind(1):  # one UnbindBackward (a stack), not a full-size zero buffer per step
            z = torch.addmm(xt, h, u)
            h = torch.relu(z) if self.relu else torch.tanh(z)
            outs.append(h)
        return torch.stack(outs, 1), [h]


class LSTMLayer(nn.Module):
    """PyTorch's LSTM step (gates ``i, f, g, o``) on ``xp_t + h W_hh^T``; states ``[h, c]``."""

    def __init__(self, cell: nn.LSTMCell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, seq: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        c = self.cell
        bias_ih, bias_hh = c.bias_ih, c.bias_hh
        bias = None if bias_ih is None or bias_hh is None else bias_ih + bias_hh
        xp = _project(seq, c.weight_ih, bias)
        u = c.weight_hh.t().contiguous()
        h, cs = state[0], state[1]
        outs: list[Tensor] = []
        for xt in xp.unbind(1):
            i, f, g, o = torch.addmm(xt, h, u).chunk(4, 1)
            cs = torch.sigmoid(f) * cs + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(cs)
            outs.append(h)
        return torch.stack(outs, 1), [h, cs]


class GRULayer(nn.Module):
    """PyTorch's GRU step (gates ``r, z, n``; the reset gate after the recurrent product)."""

    def __init__(self, cell: nn.GRUCell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, seq: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        c = self.cell
        xp = _project(seq, c.weight_ih, c.bias_ih)
        u = c.weight_hh.t().contiguous()
        bias_hh = c.bias_hh
        h = state[0]
        outs: list[Tensor] = []
        for xt in xp.unbind(1):
            hu = torch.mm(h, u) if bias_hh is None else torch.addmm(bias_hh, h, u)
            xr, xz, xn = xt.chunk(3, 1)
            hr, hz, hn = hu.chunk(3, 1)
            r = torch.sigmoid(xr + hr)
            z = torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h = (1 - z) * n + z * h
            outs.append(h)
        return torch.stack(outs, 1), [h]


def layer_for(cell: Any, inplace: bool) -> nn.Module:
    """The fast layer around a built torch cell of this library (shares its parameters)."""
    kind = cell.cell_kind
    if kind == "SimpleRNNCell":
        return SimpleRNNLayer(cell.cell, cell.activation == "relu", inplace)
    if kind == "LSTMCell":
        return LSTMLayer(cell.cell)
    if kind == "GRUCell":
        return GRULayer(cell.cell)
    raise UnsupportedConfigError(f"compile: no fast torch layer for {kind}")


class FastLoop(nn.Module):
    """``(x [batch, time, in], states [[...] per layer]) -> (y, states)``, layer by layer.

    ``y`` is ``[batch, time, units]`` with ``return_sequences``, else ``[batch, units]``; with
    ``go_backwards`` the sequence is processed in reverse and ``y`` is in processing order.
    """

    __constants__ = ["return_sequences", "go_backwards"]

    def __init__(self, layers: list[nn.Module], return_sequences: bool, go_backwards: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.return_sequences = return_sequences
        self.go_backwards = go_backwards

    def forward(self, x: Tensor, states: list[list[Tensor]]) -> tuple[Tensor, list[list[Tensor]]]:
        seq = x.flip(1) if self.go_backwards else x
        new_states: list[list[Tensor]] = []
        i = 0
        for layer in self.layers:
            seq, state = layer(seq, states[i])
            new_states.append(state)
            i += 1
        y = seq if self.return_sequences else seq[:, -1]
        return y, new_states


def fast_loop(rnn: Any, inplace: bool) -> FastLoop:
    """A :class:`FastLoop` over a built torch ``RNN``'s cells (sharing their parameters);
    ``inplace``: SimpleRNN layers write their steps in place when autograd is off."""
    if any(c.input_dim is None for c in rnn.cells):
        raise UnsupportedConfigError(
            "compile: the RNN is not built yet; call rnn.build((None, None, features)) or call it once first"
        )
    return FastLoop([layer_for(c, inplace) for c in rnn.cells], rnn.return_sequences, rnn.go_backwards)


Loop = Callable[[Tensor, list[list[Tensor]]], tuple[Tensor, list[list[Tensor]]]]


class CompiledRNN(nn.Module):
    """An RNN whose time loop runs in ``loop`` (scripted or compiled); called and answering
    exactly like the source: ``y = fast(x, initial_state=None, training=None)``.

    Parameters live in ``source`` only, so training or ``set_weights`` on either object shows in
    the other. Dropout in training and ``mask`` are refused (:class:`UnsupportedConfigError`):
    the fast loop has neither, and it never silently takes the slow path.
    """

    backend = "torch"

    def __init__(self, rnn: Any, loop: Loop, method: str) -> None:
        super().__init__()
        self.source = rnn
        self.method = method
        object.__setattr__(self, "loop", loop)  # not a submodule: parameters counted once

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
        states = loops.check_compiled_call(source, self.method, inputs, initial_state, training, mask)
        if states is None:
            states = source.cell.get_initial_state(inputs.shape[0])
        y, states = self.loop(inputs, states)
        return (y, states) if source.return_state else y


def auto_method(rnn: Any) -> str:
    """``xf.compile(rnn, "auto")`` on torch: ``"torchscript"``.

    Measured on a 2-core AVX-512 CPU (docs/performance.md): the scripted fast loop is the
    fastest torch path at every measured size, forward (its inference steps run in place), and
    compiles in well under a second for any shape, where inductor takes tens of seconds per
    shape. With backward inductor can be faster at small sizes; pick it by name there. On CUDA
    no measurement exists yet; the same choice applies.
    """
    return "torchscript"
