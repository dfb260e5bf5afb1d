"""Masked calls of ``xf.compile(rnn, "cpu")``: a right-padded batch in the C loop, padding skipped.

A mask whose rows are real up to a length and padding after it (``mask[b, t] == (t < length[b])``:
what a ``PackedSequence`` expresses, and what Keras's ``Embedding(mask_zero=True)`` gives for
right-padded tokens) runs in the C loop of :mod:`~rnn_xframework.backends.torch.compile.cpu` with
the batch sorted longest first: at step ``t`` only the rows still real are computed (the
recurrent product shrinks as rows end, as in PyTorch's packed LSTM), and the others take an
identity step (``cpu_cells.c``'s ``hold_rows``: the state held, no arithmetic). A mask that is
all real runs the unmasked loop (oneDNN's LSTM included). The mask is read on the host, in NumPy.

Keras's semantics hold, as in the scripted masked loop
(:mod:`~rnn_xframework.backends.torch.compile.masked_loops`): the final states are those of each
row's last real step (the initial state for an empty row), the output at a padding step is the
row's last real output (zeros for an empty row), or zeros with ``zero_output_for_mask``, and
where autograd records, padding inputs are replaced by zeros before the projection (without it, the
C loop never reads a padding step's projection), so NaN or inf in padding reaches no result and
no gradient. Every other masked call -- a mask with gaps or left padding,
``go_backwards``, dropout in training, a stack with a layer the kernel does not run, an empty
batch or sequence, a device other than the CPU -- runs ``fallback``, the scripted masked loop
(same results within float rounding).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


def right_padded_lengths(keep: Tensor) -> np.ndarray | None:
    """The lengths (``int64 [batch]``) of ``keep [batch, time]`` (bool, on the CPU) if every row is
    real up to its length and padding after it, else ``None``. NumPy: a few microseconds."""
    k = keep.numpy()
    lengths = k.sum(1)
    return lengths if np.array_equal(k, np.arange(k.shape[1])[None, :] < lengths[:, None]) else None


def active_counts(lengths: np.ndarray, steps: int) -> Tensor:
    """``int32 [steps]``: how many rows of a batch sorted longest first (``lengths``) are real at each step."""
    counts = (lengths[None, :] > np.arange(steps)[:, None]).sum(1).astype(np.int32)
    return torch.from_numpy(np.ascontiguousarray(counts))


class CpuMaskedLoop:
    """``(x [batch, time, in], states, keep [batch, time] bool, xm, hm) -> (y, states)``: the masked
    loop of a ``"cpu"``-compiled RNN (the call of
    :class:`~rnn_xframework.backends.torch.compile.compiled_module.CompiledRNN`'s ``masked_loop``).

    ``loop`` is the compiled object's :class:`~rnn_xframework.backends.torch.compile.cpu.CpuLoop`
    (its layers run the right-padded calls where every one of them takes ``active``);
    ``fallback`` runs the others."""

    def __init__(self, loop: nn.Module, fallback: Any, zero_output: bool) -> None:
        self.loop = loop
        self.fallback = fallback
        self.zero_output = zero_output
        self.kernel_layers = all(getattr(c, "takes_active", False) for c in loop.cells)  # right_padded runs
        self.runs_lengths = not loop.go_backwards and self.kernel_layers

    def __call__(
        self, x: Tensor, states: list[list[Tensor]], keep: Tensor, xm: list[list[Tensor]], hm: list[list[Tensor]]
    ) -> tuple[Tensor, list[list[Tensor]]]:
        lengths = None
        dropping = any(xm) or any(hm)
        if self.runs_lengths and not dropping and x.device.type == "cpu" and x.shape[0] > 0 and x.shape[1] > 0:
            lengths = right_padded_lengths(keep)
        if lengths is None:
            return self.fallback(x, states, keep, xm, hm)
        if bool((lengths == x.shape[1]).all()):  # every step real: the unmasked loop (oneDNN's LSTM included)
            return self.loop(x, states)
        return self.right_padded(x, states, keep, lengths)

    def right_padded(
        self, x: Tensor, states: list[list[Tensor]], keep: Tensor, lengths: np.ndarray
    ) -> tuple[Tensor, list[list[Tensor]]]:
        """A right-padded call (``lengths``: :func:`right_padded_lengths` of ``keep``, not all
        ``time``) in the C loop, in processing order whatever ``go_backwards`` says (the fused
        ``Bidirectional`` of :mod:`~rnn_xframework.backends.torch.compile.cpu_bidirectional`
        hands its backward direction each row reversed within its length)."""
        steps = x.shape[1]
        order = None
        if bool((lengths[:-1] < lengths[1:]).any()):
            sort = np.argsort(-lengths, kind="stable")
            lengths, order = lengths[sort], torch.from_numpy(sort)
            x, keep = x.index_select(0, order), keep.index_select(0, order)  # a third of x[order]'s time at W1
            states = [[s.index_select(0, order) for s in layer] for layer in states]
        active = active_counts(lengths, steps)
        # the C loop never reads a padding step's projection forward; backward, the weights'
        # gradients would multiply it by zeros: padding inputs become zeros where autograd records
        seq = torch.where(keep.unsqueeze(2), x, torch.zeros((), dtype=x.dtype)) if torch.is_grad_enabled() else x
        new_states = []
        for layer, state in zip(self.loop.cells, states, strict=True):
            seq, state = layer(seq, state, active)
            new_states.append(state)
        y, keep = (seq, keep.unsqueeze(2)) if self.loop.return_sequences else (seq[:, -1], keep[:, -1:])
        if self.zero_output:
            y = torch.where(keep, y, torch.zeros((), dtype=y.dtype))
        elif lengths[-1] == 0:  # an empty row's held output is its initial state; Keras's is zeros
            real = torch.from_numpy(lengths > 0).view(-1, *[1] * (y.dim() - 1))
            y = torch.where(real, y, torch.zeros((), dtype=y.dtype))
        if order is not None:
            inverse = torch.from_numpy(np.argsort(sort, kind="stable"))
            y = y.index_select(0, inverse)
            new_states = [[s.index_select(0, inverse) for s in layer] for layer in new_states]
        return y, new_states
