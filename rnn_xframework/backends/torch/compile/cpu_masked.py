"""Masked calls of ``xf.compile(rnn, "cpu")``: a right-padded batch in the C loop, padding skipped.

A mask whose rows are real up to a length and padding after it (``mask[b, t] == (t < length[b])``:
what a ``PackedSequence`` expresses, and what Keras's ``Embedding(mask_zero=True)`` gives for
right-padded tokens) runs in the C loop of :mod:`~rnn_xframework.backends.torch.compile.cpu` with
the batch sorted longest first: at step ``t`` only the rows still real are computed (the
recurrent product shrinks as rows end, as in PyTorch's packed LSTM), and the others take an
identity step (``cpu_cells.c``'s ``hold_rows``: the state held, no arithmetic). Where autograd does
not record, the real steps are also packed (``PackedSequence``'s layout, :meth:`CpuMaskedLoop._packed_layers`):
each layer's projection covers only them, not the padding. A call of at most
:data:`UNSORTED_MAX_BATCH` rows that autograd does not record keeps its rows' order instead: every
row computed, an ended row given its held state back (``hold_past``). A mask that is all real runs
the unmasked loop (oneDNN's LSTM included). The mask is read on the host, in one C pass (:func:`read_mask`).

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
from torch.autograd.function import once_differentiable

from rnn_xframework.backends.torch.compile import cpu_build, cpu_scratch
from rnn_xframework.backends.torch.compile import cpu_recurrences as rec


def read_mask(keep: Tensor) -> tuple[np.ndarray | None, int]:
    """``(lengths, padded)`` of ``keep [batch, time]`` (bool, on the CPU): if every row is real up to
    its length and padding after it, the lengths (``int32 [batch]``) and how many rows are shorter
    than ``time``; else ``(None, -1)``. One pass in C (``cpu_cells.c``'s ``xf_right_padded``)."""
    k = keep.contiguous()
    lengths = torch.empty(k.shape[0], dtype=torch.int32)
    padded = cpu_build.kernel("right_padded")(k.shape[0], k.shape[1], k.data_ptr(), lengths.data_ptr())
    return (lengths.numpy(), padded) if padded >= 0 else (None, -1)


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
        lengths, padded = None, -1
        dropping = any(xm) or any(hm)
        if self.runs_lengths and not dropping and x.device.type == "cpu" and x.shape[0] > 0 and x.shape[1] > 0:
            lengths, padded = read_mask(keep)
        if lengths is None:
            return self.fallback(x, states, keep, xm, hm)
        if padded == 0:  # every step real: the unmasked loop (oneDNN's LSTM included)
            return self.loop(x, states)
        return self.right_padded(x, states, keep, lengths)

    def right_padded(
        self, x: Tensor, states: list[list[Tensor]], keep: Tensor, lengths: np.ndarray
    ) -> tuple[Tensor, list[list[Tensor]]]:
        """A right-padded call (``lengths``: :func:`read_mask` of ``keep``, not all
        ``time``) in the C loop, in processing order whatever ``go_backwards`` says (the fused
        ``Bidirectional`` of :mod:`~rnn_xframework.backends.torch.compile.cpu_bidirectional`
        hands its backward direction each row reversed within its length)."""
        with cpu_scratch.session():
            return self._right_padded(x, states, keep, lengths)

    def _right_padded(
        self, x: Tensor, states: list[list[Tensor]], keep: Tensor, lengths: np.ndarray
    ) -> tuple[Tensor, list[list[Tensor]]]:
        steps = x.shape[1]
        recording = torch.is_grad_enabled()
        order = None
        if not sorts_rows(x.shape[0]):  # the rows in their own order
            seq, new_states = self._layers(x, states, lengths=_int32(lengths))
        else:
            sort = np.arange(len(lengths))
            if bool((lengths[:-1] < lengths[1:]).any()):
                sort = np.argsort(-lengths, kind="stable")
                order = torch.from_numpy(sort)
                states = [[s.index_select(0, order) for s in layer] for layer in states]
            active = active_counts(lengths[sort], steps)
            if recording:  # the C loop never reads a padding step's projection forward; backward, the
                # weights' gradients would multiply it by zeros: padding inputs become zeros
                x = RowsZeroed.apply(x, None if order is None else sort, lengths[sort])
                seq, new_states = self._layers(x, states, active=active)
            else:
                seq, new_states = self._packed_layers(x, states, sort, lengths[sort], active, order is not None)
        # zeros from step cut[b] on: every padding step with zero_output_for_mask, else an empty row's
        # (its held output is its initial state; Keras's is zeros)
        cut = None
        if self.zero_output:
            cut = lengths
        elif lengths.min() == 0:
            cut = np.where(lengths == 0, 0, steps)
        inverse = None if order is None else np.argsort(sort, kind="stable")
        if inverse is not None:
            new_states = [[s.index_select(0, torch.from_numpy(inverse)) for s in layer] for layer in new_states]
        if recording and self.loop.return_sequences and (cut is not None or inverse is not None):
            # the caller's row order and the zeros in one copy (and one in the backward)
            return RowsZeroed.apply(seq, inverse, np.full(len(lengths), steps) if cut is None else cut), new_states
        y = seq if self.loop.return_sequences else seq[:, -1]
        if inverse is not None:
            y = y.index_select(0, torch.from_numpy(inverse))
        if cut is None:
            return y, new_states
        if recording:
            real = torch.from_numpy(np.arange(steps)[None, :] < cut[:, None])
            real = real.unsqueeze(2) if self.loop.return_sequences else real[:, -1:]
            return torch.where(real, y, torch.zeros((), dtype=y.dtype)), new_states
        if self.loop.return_sequences:
            if order is None:  # the last layer's h is a view of y's last step: its own copy first
                new_states[-1] = [new_states[-1][0].clone(), *new_states[-1][1:]]
            return rec.zero_past(y, _int32(cut)), new_states
        y = y.clone() if order is None else y  # seq[:, -1] is the last layer's h
        return rec.zero_past(y.unsqueeze(1), _int32(np.where(cut < steps, 0, 1))).squeeze(1), new_states

    def _packed_layers(
        self,
        x: Tensor,
        states: list[list[Tensor]],
        sort: np.ndarray,
        lengths: np.ndarray,
        active: Tensor,
        copied: bool,
    ) -> tuple[Tensor, list[list[Tensor]]]:
        """The layers on the real steps only, packed (:class:`~rnn_xframework.backends.torch.compile.
        cpu_recurrences.Packed`: ``PackedSequence``'s layout): one gather takes the real rows of ``x``
        (``[batch, time, in]``, rows in their own order) in the sorted order (``sort``; ``lengths``
        and ``active`` sorted) and time-major, every layer projects only those rows, the layers
        below the last hand each other packed outputs; the last writes ``[T, B, H]``, its ended
        rows held (into a scratch buffer where ``copied``: the caller returns copies, unsorted).
        Forward only (a call autograd does not record); the buffers live only in this call
        (:mod:`~rnn_xframework.backends.torch.compile.cpu_scratch`)."""
        batch, steps = x.shape[0], x.shape[1]
        counts = active.numpy()
        real = np.arange(batch)[None, :] < counts[:, None]  # [T, B], time-major
        gather = torch.from_numpy((sort[None, :] * steps + np.arange(steps)[:, None])[real])
        starts = np.cumsum(counts) - counts
        real_rows = int((lengths > 0).sum())
        ends = torch.from_numpy(starts[lengths[:real_rows] - 1] + np.arange(real_rows))
        flat = x.reshape(batch * steps, x.shape[2])
        seq = torch.index_select(flat, 0, gather, out=cpu_scratch.buffer("gathered", (len(gather), x.shape[2]), x))
        new_states = []
        for i, (layer, state) in enumerate(zip(self.loop.cells, states, strict=True)):
            mid = i < len(states) - 1  # the last layer's y: a scratch buffer where it is copied (unsorted)
            rows = rec.Packed(steps, batch, active, mid, ends, f"packed{i % 2}" if mid else "y" if copied else None)
            seq, state = layer.packed(seq, state, rows)
            new_states.append(state)
        return seq, new_states

    def _layers(self, seq: Tensor, states: list[list[Tensor]], **rows: Tensor) -> tuple[Tensor, list[list[Tensor]]]:
        """The layers in turn with ``rows`` (``active=`` or ``lengths=``); with ``lengths``, two LSTM layers in
        a row run pipelined where they may
        (:meth:`~rnn_xframework.backends.torch.compile.cpu.CpuLSTMLayer.pairs_with`)."""
        new_states: list[list[Tensor]] = []
        layers, i = self.loop.cells, 0
        while i < len(layers):
            layer, state = layers[i], states[i]
            upper = layers[i + 1] if i + 1 < len(layers) else None
            pairs = getattr(layer, "pairs_with", None)
            if (
                "lengths" in rows
                and upper is not None
                and pairs is not None
                and pairs(upper, seq, state, states[i + 1])
            ):
                seq, state, upper_state = layer.pipelined(upper, seq, state, states[i + 1], lengths=rows["lengths"])
                new_states += [state, upper_state]
                i += 2
                continue
            seq, state = layer(seq, state, **rows)
            new_states.append(state)
            i += 1
        return seq, new_states


def _rows(seq: Tensor, index: np.ndarray | None) -> Tensor:
    """``seq [batch, time, n]`` (batch-first or a time-major contiguous tensor seen batch-first; other
    strides copied first) with row ``b`` taken from row ``index[b]`` (``None``: its own), as a new time-major
    contiguous ``[time, batch, n]``: one ``index_select`` of whole rows."""
    batch, steps, n = seq.shape
    rows = np.arange(batch) if index is None else index
    if not seq.is_contiguous() and seq.transpose(0, 1).is_contiguous():
        flat, at = seq.transpose(0, 1).reshape(steps * batch, n), np.arange(steps)[:, None] * batch + rows[None, :]
    else:
        flat, at = seq.reshape(batch * steps, n), rows[None, :] * steps + np.arange(steps)[:, None]
    return flat.index_select(0, torch.from_numpy(at.reshape(-1))).view(steps, batch, n)


class RowsZeroed(torch.autograd.Function):
    """``out[b, t] = seq[index[b], t]`` for ``t < cut[b]``, else zeros: ``seq [batch, time, n]`` (any strides),
    ``index`` a permutation of the rows (``None``: none), ``cut`` ``[batch]`` in ``out``'s order. ``out`` is a
    time-major contiguous tensor seen batch-first (what the ``"cpu"`` layers read without a copy and return).
    The backward is the same map back (``index``'s inverse, the gradient at the zeroed steps zero). One copy
    each way, where an ``index_select`` and a ``torch.where`` cost two (and two in the backward)."""

    @staticmethod
    def forward(ctx: Any, seq: Tensor, index: np.ndarray | None, cut: np.ndarray) -> Tensor:
        inverse = None if index is None else np.argsort(index, kind="stable")
        ctx.inverse, ctx.cut = inverse, cut if index is None else cut[inverse]
        out = _rows(seq, index).transpose(0, 1)
        return rec.zero_past(out, _int32(cut))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return rec.zero_past(_rows(grad, ctx.inverse).transpose(0, 1), _int32(ctx.cut)), None, None


def sorts_rows(batch: int) -> bool:
    """Whether a right-padded call of ``batch`` rows runs them sorted longest first (:data:`UNSORTED_MAX_BATCH`)."""
    return batch > UNSORTED_MAX_BATCH or torch.is_grad_enabled()


def _int32(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32))


UNSORTED_MAX_BATCH = 8
"""Up to this batch, a right-padded call that autograd does not record runs its rows in their own
order (:data:`~rnn_xframework.backends.torch.compile.cpu_recurrences.Lengths`: every row computed, an
ended row given its held state back): sorting (index copies of the input, the states and the output)
costs more there than the rows a sorted loop skips (``cpu_mm.h`` multiplies 4 rows at a time). Any
call autograd does not record zeroes its padding outputs in place (``zero_past``), where ``torch.where``
took 18 us at W1. W1 (batch 4), two layers, in one process, the masked call's cost over the unmasked
one: SimpleRNN 85 -> 26 us, LSTM 88 -> 40 us (both changes and the mask read in C)."""
